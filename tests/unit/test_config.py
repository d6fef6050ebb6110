"""Configuration: the upstream DSN, the YAML file, and errors that name the offending key."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

import gateway.config as config_module
from gateway.config import (
    Config,
    ConfigError,
    Limits,
    TLSConfig,
    UpstreamConfig,
    config_from_mapping,
    load_config,
    parse_dsn,
)

# --------------------------------------------------------------------------- parse_dsn


def test_full_dsn() -> None:
    cfg = parse_dsn(
        "postgresql://sekisho_svc:secret@db.internal:5433/customers"
        "?sslmode=verify-full&sslrootcert=/etc/ca.pem&connect_timeout=2.5"
    )
    assert cfg == UpstreamConfig(
        host="db.internal",
        port=5433,
        database="customers",
        user="sekisho_svc",
        password="secret",
        sslmode="verify-full",
        sslrootcert="/etc/ca.pem",
        connect_timeout=2.5,
    )
    assert cfg.describe() == "db.internal:5433/customers"
    assert "secret" not in cfg.describe()


def test_url_escapes_are_decoded() -> None:
    cfg = parse_dsn("postgresql://svc%40corp:p%40ss%3Aw%2Frd%25%20x@localhost/my%20db")
    assert cfg.user == "svc@corp"
    assert cfg.password == "p@ss:w/rd% x"
    assert cfg.database == "my db"


def test_password_with_a_literal_at_sign() -> None:
    # The host is what follows the last '@', as libpq reads it.
    cfg = parse_dsn("postgresql://svc:p@ss@db:5432/app")
    assert (cfg.user, cfg.password, cfg.host) == ("svc", "p@ss", "db")


def test_defaults() -> None:
    cfg = parse_dsn("postgres://alice@db")
    assert cfg == UpstreamConfig(host="db", port=5432, database="alice", user="alice", password=None)
    assert cfg.sslmode == "prefer"
    bare = parse_dsn("postgresql://")
    assert (bare.host, bare.port, bare.user, bare.database) == ("127.0.0.1", 5432, "postgres", "postgres")


def test_default_database_is_the_user_name() -> None:
    assert parse_dsn("postgresql://reporting:pw@db/").database == "reporting"
    assert parse_dsn("postgresql://reporting:pw@db").database == "reporting"
    assert parse_dsn("postgresql://db/sales").user == "postgres"


def test_empty_password_is_not_no_password() -> None:
    assert parse_dsn("postgresql://svc:@db/app").password == ""
    assert parse_dsn("postgresql://svc@db/app").password is None


def test_ipv6_host() -> None:
    cfg = parse_dsn("postgresql://svc@[::1]:6000/app")
    assert (cfg.host, cfg.port) == ("::1", 6000)


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"])
def test_every_sslmode_is_accepted(mode: str) -> None:
    assert parse_dsn(f"postgresql://db/app?sslmode={mode}").sslmode == mode


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("postgresql://db/app?sslmode=on", "upstream.sslmode: expected one of disable, allow, prefer"),
        ("postgresql://db/app?sslmode=REQUIRE", "upstream.sslmode:"),
        ("mysql://db/app", "upstream: expected a postgresql:// URL, got scheme 'mysql'"),
        ("db.internal:5432", "upstream: expected a postgresql:// URL"),
        ("postgresql://db:99999/app", "upstream: invalid port in URL"),
        ("postgresql://db:http/app", "upstream: invalid port in URL"),
        ("postgresql://db:0/app", "upstream.port: expected 1-65535, got 0"),
        ("postgresql://db/app?connect_timeout=0", "upstream.connect_timeout: expected a positive number"),
        ("postgresql://db/app?connect_timeout=-1", "upstream.connect_timeout: expected a positive number"),
        ("postgresql://db/app?connect_timeout=soon", "upstream.connect_timeout: expected a positive number"),
        ("postgresql://db/app?connect_timeout=nan", "upstream.connect_timeout: expected a positive number"),
    ],
)
def test_bad_dsn(dsn: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_dsn(dsn)
    assert str(caught.value).startswith(message)


# --------------------------------------------------------------------------- load_config

FULL_EXAMPLE = """\
listen: {host: 0.0.0.0, port: 7432}
upstream: postgresql://sekisho_svc:secret@127.0.0.1:5432/customers?sslmode=prefer
users_file: users.txt          # relative paths are relative to this file
policy: policy.yaml
tls: {cert: tls/server.crt, key: tls/server.key, require_tls: true}
admin: {host: 127.0.0.2, port: 6481}
limits: {startup_timeout: 7, max_message_bytes: 1048576, max_clients: 50,
         drain_timeout: 2.5}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sekisho.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_load_full_example(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, FULL_EXAMPLE))
    assert config == Config(
        upstream=UpstreamConfig(
            host="127.0.0.1", port=5432, database="customers", user="sekisho_svc", password="secret"
        ),
        users_file=tmp_path / "users.txt",
        policy_file=tmp_path / "policy.yaml",
        host="0.0.0.0",  # noqa: S104 - the value under test, not a bind
        port=7432,
        admin_host="127.0.0.2",
        admin_port=6481,
        tls=TLSConfig(cert=tmp_path / "tls/server.crt", key=tmp_path / "tls/server.key", require_tls=True),
        limits=Limits(startup_timeout=7.0, max_message_bytes=1048576, max_clients=50, drain_timeout=2.5),
    )
    assert isinstance(config.limits.startup_timeout, float)


def test_minimal_config_takes_defaults(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path, "upstream: postgresql://db/app\nusers_file: /etc/sekisho/users\npolicy: policy.yaml\n"
        )
    )
    assert config == Config(
        upstream=parse_dsn("postgresql://db/app"),
        users_file=Path("/etc/sekisho/users"),
        policy_file=tmp_path / "policy.yaml",
    )
    assert (config.host, config.port, config.admin_port) == ("127.0.0.1", 6432, 6480)
    assert config.tls == TLSConfig()
    assert config.limits == Limits()


def test_upstream_as_a_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEKISHO_TEST_UPSTREAM_PW", "from-env")
    text = """\
    upstream:
      host: db.internal
      port: 5433
      database: customers
      user: svc
      password_env: SEKISHO_TEST_UPSTREAM_PW
      sslmode: require
      sslrootcert: /etc/ca.pem
      connect_timeout: 3
    users_file: users.txt
    policy: policy.yaml
    """
    upstream = load_config(_write(tmp_path, text)).upstream
    assert upstream == UpstreamConfig(
        host="db.internal",
        port=5433,
        database="customers",
        user="svc",
        password="from-env",
        sslmode="require",
        sslrootcert="/etc/ca.pem",
        connect_timeout=3.0,
    )


def test_admin_api_can_be_switched_off(tmp_path: Path) -> None:
    text = "upstream: postgresql://db/app\nusers_file: u\npolicy: policy.yaml\nadmin: {port: null}\n"
    assert load_config(_write(tmp_path, text)).admin_port is None


def _error(data: Any) -> str:
    base = {"upstream": "postgresql://db/app", "users_file": "users.txt", "policy": "policy.yaml"}
    if isinstance(data, dict):
        data = {**base, **data}
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(data, base=Path("/etc/sekisho"))
    return str(caught.value)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"bogus": 1}, "bogus"),
        ({"limits": {"bogus": 1}}, "limits.bogus"),
        ({"limits": {"startup_timeout": 1, "max_clients_": 3}}, "limits.max_clients_"),
        ({"listen": {"hots": "::"}}, "listen.hots"),
        ({"tls": {"ca": "x"}}, "tls.ca"),
        ({"admin": {"token": "x"}}, "admin.token"),
        ({"upstream": {"host": "db", "passwd": "x"}}, "upstream.passwd"),
    ],
)
def test_unknown_keys_are_named_by_path(data: dict[str, Any], key: str) -> None:
    message = _error(data)
    assert message.startswith(f"{key}: unknown key (known: ")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"listen": {"port": "6432"}}, "listen.port: expected int, got str '6432'"),
        ({"listen": {"port": True}}, "listen.port: expected int, got bool True"),
        ({"listen": {"port": 6432.0}}, "listen.port: expected int, got float"),
        ({"listen": {"host": 127}}, "listen.host: expected str, got int"),
        ({"limits": {"startup_timeout": "10"}}, "limits.startup_timeout: expected float, got str"),
        ({"limits": {"drain_timeout": False}}, "limits.drain_timeout: expected float, got bool"),
        ({"tls": {"require_tls": "yes"}}, "tls.require_tls: expected bool, got str"),
        ({"users_file": ["a"]}, "users_file: expected str, got list"),
        ({"upstream": {"port": "5432"}}, "upstream.port: expected int, got str"),
        ({"upstream": 5432}, "upstream: expected a mapping, got int"),
        ({"limits": [1, 2]}, "limits: expected a mapping, got list"),
        ({"listen": "0.0.0.0:6432"}, "listen: expected a mapping, got str"),
        (["upstream"], "configuration: expected a mapping, got list"),
    ],
)
def test_wrong_types(data: Any, message: str) -> None:
    assert _error(data).startswith(message)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"listen": {"port": None}}, "listen.port"),
        ({"listen": {"host": None}}, "listen.host"),
        ({"limits": {"startup_timeout": None}}, "limits.startup_timeout"),
        ({"limits": {"max_clients": None}}, "limits.max_clients"),
        ({"upstream": {"port": None}}, "upstream.port"),
        ({"upstream": {"connect_timeout": None}}, "upstream.connect_timeout"),
    ],
)
def test_null_is_not_a_value_for_keys_with_a_default(data: dict[str, Any], key: str) -> None:
    assert _error(data).startswith(f"{key}: expected ")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"upstream": None}, "upstream: required"),
        ({"users_file": None}, "users_file: required"),
        ({"policy": None}, "policy: required"),
        ({"limits": {"catalog_refresh": 0}}, "limits: timeouts must be positive"),
        ({"tls": {"cert": "server.crt"}}, "tls: cert and key must be given together"),
        ({"tls": {"key": "server.key"}}, "tls: cert and key must be given together"),
        ({"tls": {"require_tls": True}}, "tls.require_tls: true needs tls.cert and tls.key"),
        ({"limits": {"startup_timeout": 0}}, "limits: timeouts must be positive"),
        ({"limits": {"drain_timeout": -1}}, "limits: timeouts must be positive"),
        ({"limits": {"max_message_bytes": 1023}}, "limits: max_message_bytes must be at least 1024"),
        ({"limits": {"max_clients": 0}}, "limits: max_message_bytes must be at least 1024 and max_clients"),
        ({"upstream": {"sslmode": "always"}}, "upstream.sslmode: expected one of"),
        ({"upstream": {"port": 70000}}, "upstream.port: expected 1-65535, got 70000"),
        ({"upstream": "postgresql://db/app?sslmode=bogus"}, "upstream.sslmode: expected one of"),
    ],
)
def test_invalid_values(data: dict[str, Any], message: str) -> None:
    assert _error(data).startswith(message)


def test_missing_upstream_and_users_file() -> None:
    assert _error(None).startswith("upstream: required")
    with pytest.raises(ConfigError, match=r"^users_file: required"):
        config_from_mapping({"upstream": "postgresql://db/app"}, base=Path())
    with pytest.raises(ConfigError, match=r"^upstream: required"):
        config_from_mapping({"users_file": "u"}, base=Path())


def test_password_env_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEKISHO_TEST_NO_SUCH_VAR", raising=False)
    text = (
        "upstream: {host: db, password_env: SEKISHO_TEST_NO_SUCH_VAR}\nusers_file: u\npolicy: policy.yaml\n"
    )
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: upstream.password_env: environment variable SEKISHO_TEST_NO_SUCH_VAR is not set"
    )


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "upstream: postgresql://db/app\nusers_file: u\npolicy: policy.yaml\nlimits: {bogus: 1}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: limits.bogus: unknown key")


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "upstream: [unclosed\n"))
    not_utf8 = tmp_path / "latin1.yaml"
    not_utf8.write_bytes(b"# caf\xe9\nupstream: postgresql://db/app\nusers_file: u\npolicy: policy.yaml\n")
    with pytest.raises(ConfigError) as caught:
        load_config(not_utf8)
    assert str(caught.value).startswith(f"{not_utf8}: configuration is not valid UTF-8")


def test_empty_file_reports_the_first_missing_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="upstream: required"):
        load_config(_write(tmp_path, ""))


def test_example_in_the_module_docstring_loads(tmp_path: Path) -> None:
    doc = config_module.__doc__ or ""
    example = doc.split("::", 1)[1].split("\n\n")[1]
    data = yaml.safe_load(textwrap.dedent(example))
    config = config_from_mapping(data, base=tmp_path)
    assert config.upstream.database == "customers"
    assert config.tls.cert == tmp_path / "server.crt"
