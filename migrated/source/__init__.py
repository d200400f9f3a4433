"""Source disks: discovery and read-only access."""

from migrated.source.disk import SourceDisk, open_source

__all__ = ["SourceDisk", "open_source"]
