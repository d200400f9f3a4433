"""Small asyncio helpers shared by the daemon's loops and the cloud adapter (``retry.py``)."""
