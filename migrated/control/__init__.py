"""The daemon's control API: HTTP+JSON over a Unix socket (server.py) and its client (client.py).

Versioned paths under ``/v1/``. Every answer is a JSON object; errors are
``{"error": {"code": <error class>, "message": <what to fix>, "exit_code": n}}``
with a 4xx/5xx status.
"""

API_VERSION = 1
