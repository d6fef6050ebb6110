"""Configuration: the upstream DSN, the YAML file, and errors that name the offending key."""

from __future__ import annotations

import os
import stat
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
    MaskingConfig,
    TLSConfig,
    UpstreamConfig,
    config_from_mapping,
    load_config,
    load_token_key,
    parse_dsn,
)
from policy.analyze import Budget

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
masking: {token_key_file: keys/token.key}
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
        masking=MaskingConfig(token_key_file=tmp_path / "keys/token.key"),
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
    assert config.masking == MaskingConfig()


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
        ({"masking": {"token_key": "x"}}, "masking.token_key"),
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
        ({"masking": "SEKISHO_TOKEN_KEY"}, "masking: expected a mapping, got str"),
        ({"masking": {"token_key_env": 1}}, "masking.token_key_env: expected str, got int 1"),
        ({"masking": {"token_key_file": ["a"]}}, "masking.token_key_file: expected str, got list"),
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
        ({"limits": {"analysis_seconds": 0}}, "limits: timeouts must be positive"),
        ({"limits": {"max_statement_bytes": 100}}, "limits.max_statement_bytes: must be at least 1024"),
        ({"upstream": {"sslmode": "always"}}, "upstream.sslmode: expected one of"),
        ({"upstream": {"port": 70000}}, "upstream.port: expected 1-65535, got 70000"),
        ({"upstream": "postgresql://db/app?sslmode=bogus"}, "upstream.sslmode: expected one of"),
        (
            {"masking": {"token_key_env": "K", "token_key_file": "k"}},
            "masking: give token_key_env or token_key_file, not both",
        ),
        ({"masking": {"token_key_env": ""}}, "masking.token_key_env: expected the name of an environment"),
        ({"masking": {"token_key_file": ""}}, "masking.token_key_file: expected a file name"),
    ],
)
def test_invalid_values(data: dict[str, Any], message: str) -> None:
    assert _error(data).startswith(message)


def test_analysis_budget_comes_from_limits() -> None:
    config = config_from_mapping(
        {
            "upstream": "postgresql://db/app",
            "users_file": "u",
            "policy": "p.yaml",
            "limits": {"max_statement_bytes": 65536, "analysis_seconds": 0.5},
        },
        base=Path(),
    )
    assert config.limits.budget == Budget(65536, 0.5)
    assert Limits().budget == Budget()


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


# --------------------------------------------------------------------------- masking: the token key


def _masking_config(tmp_path: Path, masking: dict[str, Any] | None = None) -> Config:
    data: dict[str, Any] = {"upstream": "postgresql://db/app", "users_file": "users.txt", "policy": "p.yaml"}
    if masking is not None:
        data["masking"] = masking
    return config_from_mapping(data, base=tmp_path)


def test_masking_section_is_parsed(tmp_path: Path) -> None:
    assert _masking_config(tmp_path, {"token_key_env": "SEKISHO_TOKEN_KEY"}).masking == MaskingConfig(
        token_key_env="SEKISHO_TOKEN_KEY"
    )
    relative = _masking_config(tmp_path, {"token_key_file": "secrets/token.key"}).masking
    assert relative == MaskingConfig(token_key_file=tmp_path / "secrets/token.key")  # next to the config
    absolute = _masking_config(tmp_path, {"token_key_file": "/etc/sekisho/token.key"}).masking
    assert absolute.token_key_file == Path("/etc/sekisho/token.key")
    assert _masking_config(tmp_path, {}).masking == MaskingConfig()
    assert _masking_config(tmp_path).masking == MaskingConfig()


def test_masking_config_reads_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The configuration names the source; only load_token_key reads it (at start-up).
    monkeypatch.delenv("SEKISHO_TEST_TOKEN_KEY", raising=False)
    _masking_config(tmp_path, {"token_key_env": "SEKISHO_TEST_TOKEN_KEY"})
    _masking_config(tmp_path, {"token_key_file": "missing.key"})
    _masking_config(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_token_key_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEKISHO_TEST_TOKEN_KEY", " " + "ab" * 16 + "\n")
    config = _masking_config(tmp_path, {"token_key_env": "SEKISHO_TEST_TOKEN_KEY"})
    assert load_token_key(config) == b"ab" * 16  # surrounding whitespace is not part of the key
    assert list(tmp_path.iterdir()) == []  # no generated key


def test_token_key_environment_bytes_need_not_be_utf8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = bytes(range(128, 160))  # 32 bytes that are not UTF-8
    monkeypatch.setitem(os.environb, b"SEKISHO_TEST_TOKEN_KEY", raw)
    config = _masking_config(tmp_path, {"token_key_env": "SEKISHO_TEST_TOKEN_KEY"})
    assert load_token_key(config) == raw


def test_token_key_environment_variable_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEKISHO_TEST_TOKEN_KEY", raising=False)
    config = _masking_config(tmp_path, {"token_key_env": "SEKISHO_TEST_TOKEN_KEY"})
    with pytest.raises(ConfigError) as caught:
        load_token_key(config)
    assert str(caught.value) == (
        "masking.token_key_env: environment variable SEKISHO_TEST_TOKEN_KEY is not set"
    )


def test_token_key_from_a_file(tmp_path: Path) -> None:
    key = "0123456789abcdef" * 4
    (tmp_path / "token.key").write_text(key + "\n")  # as `openssl rand -hex 32 > token.key` writes it
    config = _masking_config(tmp_path, {"token_key_file": "token.key"})
    assert load_token_key(config) == key.encode()


def test_token_key_file_unreadable(tmp_path: Path) -> None:
    config = _masking_config(tmp_path, {"token_key_file": "missing.key"})
    with pytest.raises(ConfigError, match=r"^masking.token_key_file: cannot read .*missing.key"):
        load_token_key(config)
    assert not (tmp_path / "missing.key").exists()  # a named file is never created


@pytest.mark.parametrize("key", ["", "short", "x" * 31, "  " + "x" * 30 + "\n\n"])
def test_token_key_too_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("SEKISHO_TEST_TOKEN_KEY", key)
    (tmp_path / "token.key").write_text(key)
    for masking, where in (
        ({"token_key_env": "SEKISHO_TEST_TOKEN_KEY"}, "masking.token_key_env"),
        ({"token_key_file": "token.key"}, "masking.token_key_file"),
    ):
        with pytest.raises(ConfigError) as caught:
            load_token_key(_masking_config(tmp_path, masking))
        assert str(caught.value).startswith(f"{where}: the token key must be at least 32 bytes")


def test_token_key_generated_next_to_the_users_file(tmp_path: Path) -> None:
    config = _masking_config(tmp_path)
    key = load_token_key(config)
    path = tmp_path / ".sekisho-token-key"
    assert len(key) == 32
    assert path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_token_key(config) == key  # stable across restarts
    assert not (tmp_path / ".sekisho-mock-secret").exists()  # its own file, not the mock secret's
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sekisho-token-key"]  # nothing left aside


def test_generated_token_key_is_kept_when_present(tmp_path: Path) -> None:
    existing = os.urandom(32)
    (tmp_path / ".sekisho-token-key").write_bytes(existing)
    assert load_token_key(_masking_config(tmp_path)) == existing


def test_generated_token_key_unwritable(tmp_path: Path) -> None:
    config = config_from_mapping(
        {"upstream": "postgresql://db/app", "users_file": "no/such/dir/users.txt", "policy": "p.yaml"},
        base=tmp_path,
    )
    with pytest.raises(ConfigError, match=r"^masking: .*\.sekisho-token-key: cannot write the token key"):
        load_token_key(config)
