"""Run the Alembic migrations programmatically (`pdv db upgrade`, and at start-up)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from vault.errors import StorageUnavailable

__all__ = ["current_revision", "head_revision", "is_known", "upgrade"]


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "vault.storage:migrations")
    return cfg


@contextmanager
def _reachable(engine: Engine) -> Iterator[None]:
    try:
        yield
    except SQLAlchemyError as exc:
        # At start-up, for the operator's terminal (never a caller): the URL without its
        # password, and the driver's first line, which says what failed.
        orig = getattr(exc, "orig", None)
        lines = str(orig or "").strip().splitlines()
        detail = lines[0] if lines else type(exc).__name__
        where = engine.url.render_as_string(hide_password=True)
        raise StorageUnavailable(f"database {where}: {detail}") from None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate to `revision`. A database that a newer version migrated is left as it is: its
    migrations only added (expand-then-contract), and the newer version's own Job runs them."""
    cfg = _config()
    with _reachable(engine), engine.begin() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        if current is not None and not is_known(current):
            return
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    with _reachable(engine), engine.execution_options(isolation_level="AUTOCOMMIT").connect() as c:
        return MigrationContext.configure(c).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def is_known(revision: str) -> bool:
    """Whether `revision` is one of this version's migrations; a newer version's is not."""
    try:
        return ScriptDirectory.from_config(_config()).get_revision(revision) is not None
    except CommandError:
        return False
