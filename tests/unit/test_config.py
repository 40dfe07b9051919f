from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vault import config
from vault.config import Settings, load_settings
from vault.errors import ConfigurationError


def test_defaults_are_the_embedded_default() -> None:
    s = load_settings({})
    assert s.addr == "127.0.0.1:50051"
    assert s.data_dir == Path(".pdvault")
    assert s.effective_database_url == "sqlite:///.pdvault/pdvault.db"
    assert s.effective_key_file == Path(".pdvault/kek.json")
    assert s.credentials_file == Path(".pdvault/dev-credentials.json")
    assert s.kms == "local"
    assert s.uses_sqlite


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    f = tmp_path / "pdv.toml"
    f.write_text('addr = "127.0.0.1:6000"\nmax_workers = 4\ndev_credentials = false\n')
    s = load_settings({"PDV_CONFIG": str(f), "PDV_ADDR": "0.0.0.0:7000"})
    assert s.addr == "0.0.0.0:7000"
    assert s.max_workers == 4
    assert s.dev_credentials is False


def test_the_database_password_never_reaches_repr_or_describe() -> None:
    s = load_settings({"PDV_DATABASE_URL": "postgresql+psycopg://app:hunter2@db/pdvault"})
    assert "hunter2" not in repr(s)
    assert "hunter2" not in s.describe()
    assert not s.uses_sqlite


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PDV_ADDR": "nope"}, "HOST:PORT"),
        ({"PDV_ADDR": "h:99999"}, "HOST:PORT"),
        ({"PDV_KMS": "aws"}, "PDV_KMS"),
        ({"PDV_MAX_WORKERS": "0"}, "PDV_MAX_WORKERS"),
        ({"PDV_MAX_WORKERS": "many"}, "PDV_MAX_WORKERS"),
        ({"PDV_DATABASE_URL": "mysql://x"}, "PDV_DATABASE_URL"),
        ({"PDV_DEV_CREDENTIALS": "maybe"}, "dev_credentials"),
        ({"PDV_CONFIG": "/nonexistent/pdv.toml"}, "PDV_CONFIG"),
        ({"PDV_LOG_LEVEL": "verbose"}, "PDV_LOG_LEVEL='verbose': expected one of DEBUG, INFO"),
        ({"PDV_LOG_LEVEL": ""}, "PDV_LOG_LEVEL"),
    ],
)
def test_bad_settings_say_what_is_wrong(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_settings(env)


def test_unknown_settings_in_the_file_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "pdv.toml"
    f.write_text('adress = "x"\n')
    with pytest.raises(ConfigurationError, match="adress"):
        load_settings({"PDV_CONFIG": str(f)})


def test_settings_are_immutable() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.addr = "x"  # type: ignore[misc]


@pytest.mark.parametrize(("value", "level"), [("debug", "DEBUG"), (" Warning ", "WARNING")])
def test_the_log_level_is_case_insensitive(value: str, level: str) -> None:
    assert load_settings({"PDV_LOG_LEVEL": value}).log_level == level


def test_the_cli_offers_the_log_levels_the_settings_accept() -> None:
    from pdvault_client.cli import parser
    from vault import config

    assert parser.LOG_LEVELS == config.LOG_LEVELS


# -- each default stated once (issue #10 §5) ------------------------------------------------------


def test_every_setting_has_one_variable_and_a_valid_default() -> None:
    seen: set[str] = set()
    for f in dataclasses.fields(Settings):
        var = config._var(f)
        assert var.name not in seen
        seen.add(var.name)
        if isinstance(f.default, int | float) and not isinstance(f.default, bool):
            assert var.low <= f.default <= var.high, f.name
        if var.choices:
            assert f.default in var.choices, f.name
    assert load_settings({}) == Settings()


@pytest.mark.parametrize(
    ("variable", "value", "setting", "parsed"),
    [
        ("PDV_MAX_WORKERS", "4", "max_workers", 4),
        ("PDV_KEY_CACHE_MAX_AGE", "2.5", "cache_max_age", 2.5),
        ("PDV_ALLOW_INSECURE", "yes", "allow_insecure", True),
        ("PDV_KMS", "local", "kms", "local"),
        ("PDV_KEY_FILE", "/k/kek.json", "key_file", Path("/k/kek.json")),
        ("PDV_KEY_FILE", "", "key_file", None),
        ("PDV_DATA_DIR", "", "data_dir", Path(".pdvault")),
        ("PDV_VAULT_K8S_JWT_FILE", "/t", "vault_k8s_jwt_file", Path("/t")),
    ],
)
def test_each_kind_of_setting_is_read(
    variable: str, value: str, setting: str, parsed: object
) -> None:
    assert getattr(load_settings({variable: value}), setting) == parsed


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PDV_MAX_WORKERS": "2000"}, "PDV_MAX_WORKERS: expected a whole number from 1 to 1024$"),
        ({"PDV_KEY_CACHE_MAX_USES": "0"}, "from 1 to 4294967296$"),
        ({"PDV_VAULT_TIMEOUT": "0"}, "PDV_VAULT_TIMEOUT: expected a number from 0.1 to 120$"),
        ({"PDV_VAULT_AUTH": "ldap"}, "PDV_VAULT_AUTH='ldap': expected one of token, approle"),
        ({"PDV_TLS_CERT": "c.pem"}, "PDV_TLS_CERT and PDV_TLS_KEY go together"),
        ({"PDV_KMS": "vault"}, "PDV_KMS=vault with token auth needs VAULT_TOKEN"),
    ],
)
def test_the_range_and_the_choices_are_the_fields(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_settings(env)


def test_the_client_commands_default_to_the_server_defaults() -> None:
    """The client distribution installs without the server, so it states its own defaults:
    the same as the server's."""
    from pdvault_client.address import DEFAULT_ADDR
    from pdvault_client.cli import connection
    from pdvault_client.cli.environment import CLIENT_VARIABLES

    s = Settings()
    assert s.addr == DEFAULT_ADDR
    assert s.data_dir == connection.DEFAULT_DATA_DIR
    assert s.credentials_file == connection.DEFAULT_DATA_DIR / connection.CREDENTIALS_FILE
    shown = {v.name: v.default for v in CLIENT_VARIABLES}
    server = config.defaults()
    both = shown.keys() & server.keys()
    assert both == {"PDV_ADDR", "PDV_DATA_DIR", "VAULT_TOKEN", "VAULT_TOKEN_FILE"}
    assert {n: shown[n] for n in both} == {n: server[n] for n in both}


# -- mTLS (issue #12 §1) --------------------------------------------------------------------------

TLS = {"PDV_TLS_CERT": "s.pem", "PDV_TLS_KEY": "s-key.pem"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PDV_TLS_CLIENT_CA": "ca.pem"}, "PDV_TLS_CLIENT_CA needs PDV_TLS_CERT and PDV_TLS_KEY"),
        ({**TLS, "PDV_TLS_CLIENT_AUTH": "require"}, "PDV_TLS_CLIENT_AUTH=require needs PDV_TLS_"),
        ({"PDV_TLS_CLIENT_AUTH": "optional"}, "PDV_TLS_CLIENT_AUTH=optional needs PDV_TLS_CLIENT"),
        (
            {**TLS, "PDV_TLS_CLIENT_CA": "ca.pem", "PDV_TLS_CLIENT_AUTH": "sometimes"},
            "PDV_TLS_CLIENT_AUTH='sometimes': expected one of require, optional$",
        ),
        (
            {**TLS, "PDV_TLS_CLIENT_CA": "ca.pem", "PDV_TLS_CLIENT_AUTH": "optional"},
            "PDV_TLS_CLIENT_AUTH=optional needs PDV_MTLS_ADDR",
        ),
        (
            {**TLS, "PDV_TLS_CLIENT_CA": "ca.pem", "PDV_MTLS_ADDR": "127.0.0.1:6001"},
            "PDV_MTLS_ADDR is for PDV_TLS_CLIENT_AUTH=optional",
        ),
        ({"PDV_MTLS_ADDR": "127.0.0.1:6001"}, "PDV_MTLS_ADDR is for PDV_TLS_CLIENT_AUTH=optional"),
        (
            {
                **TLS,
                "PDV_TLS_CLIENT_CA": "ca.pem",
                "PDV_TLS_CLIENT_AUTH": "optional",
                "PDV_MTLS_ADDR": "6001",
            },
            "PDV_MTLS_ADDR='6001': expected HOST:PORT",
        ),
        (
            {
                **TLS,
                "PDV_ADDR": "127.0.0.1:6001",
                "PDV_TLS_CLIENT_CA": "ca.pem",
                "PDV_TLS_CLIENT_AUTH": "optional",
                "PDV_MTLS_ADDR": "127.0.0.1:6001",
            },
            "PDV_MTLS_ADDR must differ from PDV_ADDR",
        ),
    ],
)
def test_mtls_settings_that_cannot_work_together(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_settings(env)


def test_client_certificates_are_required_by_default_once_a_client_ca_is_set() -> None:
    assert load_settings({}).client_auth == ""
    assert load_settings(TLS).client_auth == ""
    mtls = load_settings({**TLS, "PDV_TLS_CLIENT_CA": "ca.pem"})
    assert mtls.client_auth == "require"
    assert mtls.tls_client_ca == Path("ca.pem")
    assert "client certificates required" in mtls.describe()
    optional = load_settings(
        {
            **TLS,
            "PDV_TLS_CLIENT_CA": "ca.pem",
            "PDV_TLS_CLIENT_AUTH": "optional",
            "PDV_MTLS_ADDR": "127.0.0.1:6001",
        }
    )
    assert optional.client_auth == "optional"
    assert optional.mtls_addr == "127.0.0.1:6001"
    assert "client certificates optional on 127.0.0.1:6001" in optional.describe()
