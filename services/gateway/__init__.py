"""The public HTTP/JSON API (Cortex-compatible), in front of the scheduler's Jobs service."""

from services.gateway.server import create_app, serve

__all__ = ["create_app", "serve"]
