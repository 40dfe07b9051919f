"""Logging set-up for the server processes: one place, so every process logs alike."""

from __future__ import annotations

import logging

__all__ = ["configure_logging"]


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    # Alembic announces each migration step at INFO: noise for a user starting a server.
    logging.getLogger("alembic").setLevel(logging.WARNING)
