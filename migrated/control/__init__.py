"""The daemon's control API: HTTP+JSON over a Unix socket (server.py) and its client (client.py).

Versioned paths under ``/v1/``. Every answer is a JSON object; errors are
``{"error": {"code": <error class>, "message": <what to fix>, "exit_code": n}}``
with a 4xx/5xx status: 400 for a body that is not a JSON object of the right types and
ranges, never a 500 for anything a client sends.
"""

API_VERSION = 1

# the largest bandwidth / read limit the socket takes, the console's cap (BandwidthLimitKBps and
# ReadLimitKBps are at most 100 * 1024 * 1024 KB/s): 100 GiB/s, far above any link
MAX_BPS = 100 * 1024**3
