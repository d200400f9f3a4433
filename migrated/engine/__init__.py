"""The transfer engine: runs one disk sync (plan -> send -> flush -> checkpoint -> verify)."""

from migrated.engine.session import Session, open_session
from migrated.engine.sync import SyncControl, SyncOptions, SyncResult, default_state_dir
from migrated.transport.ssh import SshEndpoint, parse_target

__all__ = ["Session", "SshEndpoint", "SyncControl", "SyncOptions", "SyncResult", "default_state_dir",
           "open_session", "parse_target"]
