"""Source disks: discovery and read-only access."""

from migrated.source.disk import SourceDisk, open_source, open_source_via

__all__ = ["SourceDisk", "open_source", "open_source_via"]
