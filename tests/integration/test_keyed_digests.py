"""Keyed digests of shredded subject ids (issue 12 §3), through real servers built with
build_app: a database and a shred log from before keyed digests are converted once at
start-up, a restored backup of a shredded subject is still shredded again, no unkeyed digest
of a shredded id is left, and a start with another naming secret is refused."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import hvac
import pytest
from sqlalchemy import Engine, delete, select, update

from pdvault_client import Field
from tests.conftest import RunningServer, hcl_policy, running
from tests.integration.test_lifecycle import PAN, restore, snapshot, tokenize
from transit_emulator import TransitEmulator
from vault.app import build_app
from vault.config import Settings
from vault.domain.naming import unkeyed_subject_digest
from vault.errors import ConfigurationError
from vault.storage.sql.naming import MARKER
from vault.storage.tables import service_state, shredded_subjects, subjects


def make_old(engine: Engine, shred_log: Path) -> None:
    """Put the database and the shred log in the form pdvault wrote before keyed digests:
    unkeyed digests, no `service_state` marker, log lines without a scheme."""
    with engine.begin() as conn:
        for subject_id, state in conn.execute(select(subjects.c.subject_id, subjects.c.state)):
            conn.execute(
                update(subjects).where(subjects.c.subject_id == subject_id),
                {"subject_digest": unkeyed_subject_digest(subject_id)},
            )
            assert state in ("active", "retention")
        conn.execute(delete(service_state))
    old_lines = []
    for line in shred_log.read_text().splitlines():
        entry = json.loads(line)
        del entry["scheme"]
        entry["digest"] = unkeyed_subject_digest("user-7")  # only user-7 was shredded
        old_lines.append(json.dumps(entry, sort_keys=True))
    shred_log.write_text("\n".join(old_lines) + "\n")


def test_an_old_database_is_converted_once_and_restored_backups_are_shredded_again(
    server: RunningServer,
) -> None:
    [card] = tokenize(server, "user-7", Field("card_number", PAN))
    [kept] = tokenize(server, "user-8", Field("card_number", PAN))
    with server.client("ops") as ops:
        receipt = ops.subjects().shred("user-7")["receipt"]
    settings = server.app.settings
    engine = server.app.engine
    keyed = server.app.database.names.digest("user-7")
    unkeyed = unkeyed_subject_digest("user-7")
    assert receipt["subjectDigest"] == keyed

    # The old form: what the database and the shred log held before this change.
    with engine.begin() as conn:
        conn.execute(
            update(shredded_subjects).where(shredded_subjects.c.subject_digest == keyed),
            {"subject_digest": unkeyed},
        )
    make_old(engine, settings.effective_shred_log)
    with engine.connect() as conn:
        user8 = conn.execute(select(subjects).filter_by(subject_id="user-8")).mappings().one()
    assert user8["subject_digest"] == unkeyed_subject_digest("user-8")

    for replica in [0, 1]:  # two starts: the first converts, the second finds nothing to do
        with running(build_app(settings), close=True) as srv:
            with srv.client("payment") as payment:
                gone, alive = payment.detokenize([card, kept], "payment")
            assert gone.error is not None
            assert gone.error.reason == "SUBJECT_DELETED"
            assert alive.value == PAN
            with srv.client("ops") as ops:
                again = ops.subjects().shred("user-7")["receipt"]
            assert again["receiptId"] == receipt["receiptId"]
            assert again["subjectDigest"] == keyed
            with engine.connect() as conn:
                digests = set(conn.execute(select(shredded_subjects.c.subject_digest)).scalars())
                live = dict(
                    conn.execute(select(subjects.c.subject_id, subjects.c.subject_digest)).all()
                )
                marker = (
                    conn.execute(
                        select(service_state.c.value).where(service_state.c.name == MARKER)
                    )
                    .scalars()
                    .all()
                )
            assert digests == {keyed}, replica  # no unkeyed digest of a shredded id is left
            assert unkeyed not in digests
            assert live["user-8"] == srv.app.database.names.digest("user-8")
            assert len(marker) == 1
            assert marker[0].startswith("hmac-sha256:")


def test_a_restored_backup_from_before_keyed_digests_forgets_the_shredded_subject(
    server: RunningServer,
) -> None:
    """The backup holds the subject with its unkeyed digest; the shred log's line is old."""
    [card] = tokenize(server, "user-7", Field("card_number", PAN))
    [kept] = tokenize(server, "user-8", Field("card_number", PAN))
    engine = server.app.engine
    settings = server.app.settings
    with engine.begin() as conn:  # the database as the old code kept it, backed up
        for subject_id in ("user-7", "user-8"):
            conn.execute(
                update(subjects).where(subjects.c.subject_id == subject_id),
                {"subject_digest": unkeyed_subject_digest(subject_id)},
            )
    old = snapshot(engine)
    with engine.begin() as conn:  # (the running code's own form, for its shred)
        for subject_id in ("user-7", "user-8"):
            conn.execute(
                update(subjects).where(subjects.c.subject_id == subject_id),
                {"subject_digest": server.app.database.names.digest(subject_id)},
            )
    with server.client("ops") as ops:
        ops.subjects().shred("user-7")
    keyed = server.app.database.names.digest("user-7")
    with engine.begin() as conn:  # the old form of the shred's record
        conn.execute(
            update(shredded_subjects).where(shredded_subjects.c.subject_digest == keyed),
            {"subject_digest": unkeyed_subject_digest("user-7")},
        )
    make_old(engine, settings.effective_shred_log)
    restore(engine, old)  # the whole old database is back: user-7 with its data
    with engine.connect() as conn:
        assert conn.execute(select(subjects).filter_by(subject_id="user-7")).first() is not None

    with running(build_app(settings), close=True) as srv:  # converts, then re-shreds
        with srv.client("payment") as payment:
            gone, alive = payment.detokenize([card, kept], "payment")
        assert gone.error is not None
        assert gone.error.reason == "SUBJECT_DELETED"
        assert alive.value == PAN
        with engine.connect() as conn:
            assert conn.execute(select(subjects).filter_by(subject_id="user-7")).first() is None
            digests = set(conn.execute(select(shredded_subjects.c.subject_digest)).scalars())
        assert digests == {keyed}


def test_a_start_with_another_naming_secret_is_refused(server: RunningServer) -> None:
    tokenize(server, "user-7", Field("card_number", PAN))
    settings: Settings = server.app.settings
    key_file = settings.effective_key_file
    doc = json.loads(key_file.read_text())
    doc["naming_secret"] = base64.b64encode(os.urandom(32)).decode("ascii")
    key_file.write_text(json.dumps(doc))
    os.chmod(key_file, 0o600)
    with pytest.raises(ConfigurationError, match="another naming secret"):
        build_app(dataclasses.replace(settings))


def test_a_vault_without_the_naming_key_stops_start_up_in_one_line(
    settings: Settings,
) -> None:
    with TransitEmulator(root_token="root") as emulator:
        root: Any = hvac.Client(url=emulator.url, token="root")  # transit methods are untyped
        root.secrets.transit.create_key("pdvault", exportable=False)  # but no pdvault-naming
        token = emulator.create_token(hcl_policy("pdvault-service.hcl"), ttl=3600)
        vault = dataclasses.replace(
            settings, kms="vault", vault_addr=emulator.url, vault_token=token, vault_timeout=2.0
        )
        with pytest.raises(ConfigurationError, match="naming secret") as err:
            build_app(vault)
        assert "\n" not in err.value.message
        assert token not in err.value.message
