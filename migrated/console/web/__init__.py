"""The operators' web UI of migrate-console (see docs/webui.md): pages under ``/ui``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from migrated.console.service import ConsoleService

from .backend import ServiceBackend
from .routes import mount


def setup_web(app: web.Application, service: ConsoleService, **options: Any) -> None:
    """Mount the UI on the console's app; it calls ``service`` exactly as the signed API does."""
    mount(app, ServiceBackend(service), **options)


__all__ = ["setup_web"]
