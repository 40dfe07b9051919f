"""The settings a deployment needs (issue #13): secret settings read from files (`*_FILE`), the
health port's address, the shutdown's pause and grace, and the process count the cgroup allows;
and the TLS key a Kubernetes Secret mounts (root's, group-readable)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from tests.pki import Authority
from vault import config
from vault.config import Settings, available_cpus, cgroup_cpu_limit, load_settings
from vault.errors import ConfigurationError
from vault.transport.tls import TlsFiles, read_material

SECRETS = {"database_url", "vault_token", "vault_secret_id"}


def test_the_secret_settings_are_the_ones_with_a_file_variant() -> None:
    secret = {f.name for f in dataclasses.fields(Settings) if config._var(f).secret}
    assert secret == SECRETS
    assert {f.name for f in dataclasses.fields(Settings) if not f.repr} == SECRETS
    shown = config.defaults()
    for name in ("PDV_DATABASE_URL", "VAULT_TOKEN", "VAULT_SECRET_ID"):
        assert shown[f"{name}_FILE"] == ""
    help_rows = {name: text for _title, rows in config.environment() for name, text in rows}
    assert help_rows["VAULT_TOKEN_FILE"] == "a file holding VAULT_TOKEN, instead of it"


@pytest.mark.parametrize(
    ("variable", "setting", "content", "value"),
    [
        (
            "PDV_DATABASE_URL",
            "database_url",
            "postgresql+psycopg://u:pw@db/p\n",
            "postgresql+psycopg://u:pw@db/p",
        ),
        ("VAULT_TOKEN", "vault_token", "hvs.token\r\n", "hvs.token"),
        ("VAULT_SECRET_ID", "vault_secret_id", "s3cret", "s3cret"),
    ],
)
def test_a_secret_setting_is_read_from_its_file(
    tmp_path: Path, variable: str, setting: str, content: str, value: str
) -> None:
    path = tmp_path / "secret"
    path.write_text(content)
    s = load_settings({f"{variable}_FILE": str(path)})
    assert getattr(s, setting) == value
    assert value not in repr(s)


def test_a_secret_setting_and_its_file_are_not_both_taken(tmp_path: Path) -> None:
    path = tmp_path / "url"
    path.write_text("sqlite:///x.db\n")
    with pytest.raises(ConfigurationError) as refused:
        load_settings({"PDV_DATABASE_URL": "sqlite:///y.db", "PDV_DATABASE_URL_FILE": str(path)})
    assert refused.value.message == (
        "PDV_DATABASE_URL and PDV_DATABASE_URL_FILE are both set: use one"
    )
    # An empty variable is not set: the file is taken (an orchestrator may define it empty).
    got = load_settings({"PDV_DATABASE_URL": "", "PDV_DATABASE_URL_FILE": str(path)})
    assert got.database_url == "sqlite:///x.db"


def test_an_unreadable_secret_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings({"VAULT_TOKEN_FILE": str(tmp_path / "missing")})
    assert refused.value.message == (
        f"VAULT_TOKEN_FILE={tmp_path / 'missing'}: cannot read it (No such file or directory)"
    )
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigurationError, match=r"VAULT_SECRET_ID_FILE=.*: not UTF-8 text"):
        load_settings({"VAULT_SECRET_ID_FILE": str(binary)})


def test_the_file_variant_is_checked_like_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "url"
    path.write_text("mysql://db/x\n")
    with pytest.raises(ConfigurationError, match="PDV_DATABASE_URL: expected a sqlite"):
        load_settings({"PDV_DATABASE_URL_FILE": str(path)})


def test_the_health_port_and_the_shutdown_settings() -> None:
    s = load_settings({})
    assert (s.health_addr, s.shutdown_pause, s.shutdown_grace) == ("", 5.0, 10.0)
    s = load_settings(
        {
            "PDV_HEALTH_ADDR": "0.0.0.0:8081",
            "PDV_SHUTDOWN_PAUSE": "0",
            "PDV_SHUTDOWN_GRACE": "2.5",
        }
    )
    assert (s.health_addr, s.shutdown_pause, s.shutdown_grace) == ("0.0.0.0:8081", 0.0, 2.5)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PDV_HEALTH_ADDR": "8081"}, "PDV_HEALTH_ADDR='8081': expected HOST:PORT"),
        (
            {"PDV_HEALTH_ADDR": "0.0.0.0:50051", "PDV_ADDR": "0.0.0.0:50051"},
            "the health port must be another port than the API's",
        ),
        ({"PDV_SHUTDOWN_PAUSE": "-1"}, "PDV_SHUTDOWN_PAUSE: expected a number from 0 to 300"),
        ({"PDV_SHUTDOWN_GRACE": "soon"}, "PDV_SHUTDOWN_GRACE: expected a number"),
    ],
)
def test_bad_health_and_shutdown_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_settings(env)


# -- the CPUs the cgroup allows ----------------------------------------------------------------


def _v2(root: Path, own: str, limits: dict[str, str]) -> Path:
    """A cgroup v2 tree under `root` with `cpu.max` files; returns the fake /proc/self/cgroup."""
    (root / "cgroup.controllers").parent.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    for where, value in limits.items():
        directory = root / where.lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cpu.max").write_text(value + "\n")
    proc = root.parent / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n")
    return proc


def _v1(root: Path, own: str, mount: str, limits: dict[str, tuple[int, int]]) -> Path:
    for where, (quota, period) in limits.items():
        directory = root / mount / where.lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        (directory / "cpu.cfs_period_us").write_text(f"{period}\n")
    proc = root.parent / "proc-self-cgroup"
    proc.write_text(f"12:pids:/\n4:cpu,cpuacct:{own}\n2:memory:{own}\n1:name=systemd:/\n")
    return proc


@pytest.mark.parametrize(
    ("limits", "own", "cpus"),
    [
        ({"/": "max 100000"}, "/", None),  # no quota
        ({"/": "100000 100000"}, "/", 1),  # a pod limited to one CPU
        ({"/": "150000 100000"}, "/", 2),  # 1.5 CPUs: rounded up
        ({"/": "50000 100000"}, "/", 1),  # half a CPU: still one process
        ({"/": "400000 100000", "/pod/c": "max 100000"}, "/pod/c", 4),  # the parent's limit
        ({"/": "max 100000", "/pod": "200000 100000", "/pod/c": "300000"}, "/pod/c", 2),
    ],
)
def test_cgroup_v2_cpu_max(
    tmp_path: Path, limits: dict[str, str], own: str, cpus: int | None
) -> None:
    root = tmp_path / "sys-fs-cgroup"
    proc = _v2(root, own, limits)
    assert cgroup_cpu_limit(root, proc) == cpus


def test_cgroup_v2_inside_a_container_whose_path_is_not_mounted(tmp_path: Path) -> None:
    """Without a cgroup namespace /proc/self/cgroup names the host's path; the container's
    mount is its own cgroup."""
    root = tmp_path / "sys-fs-cgroup"
    proc = _v2(root, "/kubepods/burstable/pod1/c1", {"/": "100000 100000"})
    assert cgroup_cpu_limit(root, proc) == 1


@pytest.mark.parametrize("mount", ["cpu,cpuacct", "cpu"])
@pytest.mark.parametrize(
    ("limits", "own", "cpus"),
    [
        ({"/": (-1, 100000)}, "/", None),
        ({"/": (100000, 100000)}, "/", 1),
        ({"/": (250000, 100000)}, "/", 3),
        ({"/": (-1, 100000), "/docker/abc": (200000, 100000)}, "/docker/abc", 2),
        ({"/": (100000, 100000)}, "/docker/elsewhere", 1),  # the mount is the container's
    ],
)
def test_cgroup_v1_cfs_quota(
    tmp_path: Path, mount: str, limits: dict[str, tuple[int, int]], own: str, cpus: int | None
) -> None:
    root = tmp_path / "sys-fs-cgroup"
    proc = _v1(root, own, mount, limits)
    assert cgroup_cpu_limit(root, proc) == cpus


def test_no_cgroup_files_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path, tmp_path / "missing") is None
    proc = tmp_path / "cgroup"
    proc.write_text("0::/\n")
    assert cgroup_cpu_limit(tmp_path, proc) is None  # neither v2 nor v1 files


def test_available_cpus_takes_the_smaller_of_quota_and_affinity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    root = tmp_path / "sys-fs-cgroup"
    proc = _v2(root, "/", {"/": "100000 100000"})
    assert available_cpus(root, proc) == 1
    (root / "cpu.max").write_text("max 100000\n")
    assert available_cpus(root, proc) == 4
    (root / "cpu.max").write_text("800000 100000\n")
    assert available_cpus(root, proc) == 4  # a quota above the CPUs it may run on


def test_the_default_process_count_is_the_available_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "available_cpus", lambda: 3)
    assert Settings().effective_processes == 3
    assert Settings(processes=2).effective_processes == 2


# -- the TLS key of a Kubernetes Secret --------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
@pytest.mark.parametrize(
    ("owner", "mode", "accepted"),
    [
        (0, 0o440, True),  # a Secret with defaultMode 0400 under an fsGroup
        (0, 0o400, True),
        (0, 0o460, False),  # the group may not write it
        (0, 0o444, False),  # nor may everyone read it
        (10001, 0o440, False),  # the server's own key: 0600 or less
        (10001, 0o600, True),
    ],
)
def test_a_root_owned_key_may_be_read_by_its_group(
    tmp_path: Path, owner: int, mode: int, accepted: bool
) -> None:
    cert, key = Authority().server().write(tmp_path, "tls")
    os.chown(key, owner, 10001)
    key.chmod(mode)
    files = TlsFiles(cert, key, None)
    if accepted:
        assert b"PRIVATE KEY" in read_material(files).key
    else:
        with pytest.raises(ConfigurationError, match="readable by others"):
            read_material(files)
