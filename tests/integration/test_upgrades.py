"""Rolling upgrades (issue #13 §2): two versions serve side by side over one schema. The new
version's migration Job migrates first (expand: it only adds), so a pod of the old version that
starts during the rollout, or after a rollback, meets a schema newer than its own: it serves,
with a warning, and its `pdv db upgrade` changes nothing. A schema older than the code is still
refused."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.conftest import pdv_env, spawn_serve
from vault.app import build_app
from vault.config import Settings
from vault.errors import ConfigurationError
from vault.storage import migrate
from vault.storage.sql import make_engine

NEWER = "9999"  # a revision of a version after this one


def _schema_of_a_newer_version(url: str) -> None:
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": NEWER})
    finally:
        engine.dispose()


def test_a_schema_a_newer_version_migrated_is_served_beside_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'pdvault.db'}"
    _schema_of_a_newer_version(url)
    assert not migrate.is_known(NEWER)
    assert migrate.is_known(str(migrate.head_revision()))
    for auto_migrate in (False, True):
        settings = Settings(data_dir=tmp_path / "data", database_url=url, auto_migrate=auto_migrate)
        with caplog.at_level(logging.WARNING, logger="vault.app"):
            build_app(settings).close()
        assert f"the database schema (revision {NEWER}) is newer than this version's" in caplog.text
        caplog.clear()
    engine = make_engine(url)
    try:
        assert migrate.current_revision(engine) == NEWER  # left as the newer version made it
    finally:
        engine.dispose()


def test_pdv_serve_and_db_upgrade_on_a_newer_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pdvault.db'}"
    _schema_of_a_newer_version(url)
    upgraded = subprocess.run(
        [sys.executable, "-m", "pdvault_client.cli", "db", "upgrade"],
        cwd=tmp_path,
        env=pdv_env(PDV_DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout == f"database {url} at revision {NEWER}\n"
    proc, _addr, log = spawn_serve(
        tmp_path, PDV_PROCESSES="1", PDV_DATABASE_URL=url, PDV_AUTO_MIGRATE="false"
    )
    proc.terminate()
    proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()
    assert "is newer than this version's" in log.read_text()


def test_a_schema_older_than_the_code_is_still_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pdvault.db'}"
    engine = make_engine(url)
    try:
        migrate.upgrade(engine, "0004")
    finally:
        engine.dispose()
    settings = Settings(data_dir=tmp_path / "data", database_url=url, auto_migrate=False)
    with pytest.raises(ConfigurationError, match="not current; run: pdv db upgrade"):
        build_app(settings)
