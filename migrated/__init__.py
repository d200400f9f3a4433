"""migrated: move a running Linux server onto another machine or cloud with little downtime."""

__version__ = "0.1.0"
