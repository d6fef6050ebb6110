"""Gateway configuration: a YAML file, validated with errors that name the key and what was expected.

Example (every key but ``upstream`` and ``users_file`` has a default)::

    listen: {host: 127.0.0.1, port: 6432}
    upstream: postgresql://sekisho_svc:secret@127.0.0.1:5432/customers?sslmode=prefer
    users_file: users.txt          # relative paths are relative to this file
    policy: policy.yaml
    tls: {cert: server.crt, key: server.key, require_tls: false}
    quotas: {store: redis://127.0.0.1:6379/0, chunk: 100}   # default: a SQLite file by the users file
    admin: {host: 127.0.0.1, port: 6480}
    limits: {startup_timeout: 10, max_message_bytes: 67108864, max_clients: 5000,
             drain_timeout: 30, catalog_refresh: 60, max_statement_bytes: 1048576,
             analysis_seconds: 2}
    masking: {token_key_file: token.key}   # or {token_key_env: NAME}
    alarms: {feed: 1000, webhook: {url: "https://hooks.example/sekisho", timeout: 5, retries: 5,
             backoff: 1, queue: 1000}}
    audit: {database: postgresql://sekisho_audit@127.0.0.1:5432/audit, log: stdout,
            spool: audit-spool, spool_max_bytes: 1073741824, when_full: refuse_protected,
            batch: 1000, sync_interval: 0.2, name: gw1}
    upstream_pool: {max_idle: 50, idle_timeout: 60, check_after: 10}

The upstream may also be a mapping (host, port, database, user, password or password_env,
sslmode, sslrootcert, connect_timeout). Its password is service material: users never see it.

The token key is the secret behind ``token`` masks (``policy.masks``): the same key gives the same
tokens, so every gateway sharing a database must share it, and changing it changes every token.
Without ``masking``, Sekisho creates a random key next to the users file (``.sekisho-token-key``).

Upstream connections are reused across clients (``gateway.upstream_pool``): a session that ends
cleanly leaves its upstream connection reset (``DISCARD ALL``) and parked for the next client with
the same startup parameters; at most ``max_idle`` wait, each for ``idle_timeout`` seconds, and one
parked longer than ``check_after`` seconds is checked with a round trip before reuse. ``max_idle:
0`` turns reuse off.

Alarms (``gateway.alarms``) always go to the log and to the admin API's feed (the last ``feed``
alarms); with ``webhook``, each is also POSTed as JSON to ``url``, retried ``retries`` times with
exponential backoff from ``backoff`` seconds, at most ``queue`` waiting (the oldest are dropped).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import yaml

from gateway.users import UsersFileError, load_or_create_secret
from policy.analyze import Budget
from policy.masks import MIN_TOKEN_KEY_BYTES

_URL_PARAMETERS = {"sslmode", "sslrootcert", "connect_timeout"}
GENERATED_KEY_NAME = ".sekisho-token-key"  # the token key Sekisho creates, next to the users file
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class ConfigError(Exception):
    """The configuration is missing, unreadable or invalid; the message names the key."""

    code = "config_invalid"


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "postgres"
    user: str = "postgres"
    password: str | None = None
    sslmode: str = "prefer"
    sslrootcert: str | None = None
    connect_timeout: float = 5.0

    def describe(self) -> str:
        """Where the upstream is, without its credentials (for logs and errors)."""
        return f"{self.host}:{self.port}/{self.database}"


@dataclass(frozen=True, slots=True)
class TLSConfig:
    cert: Path | None = None
    key: Path | None = None
    require_tls: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    startup_timeout: float = 10.0
    max_message_bytes: int = 64 * 1024 * 1024
    max_clients: int = 5000
    drain_timeout: float = 30.0
    catalog_refresh: float = 60.0  # seconds between catalog snapshots (DDL through Sekisho also refreshes)
    # Analysis budget: longer strings, or strings that take longer to analyze, are unanalyzable
    # (refused for restricted roles, passed audited for unrestricted ones).
    max_statement_bytes: int = 1024 * 1024
    analysis_seconds: float = 2.0

    @property
    def budget(self) -> Budget:
        return Budget(self.max_statement_bytes, self.analysis_seconds)


@dataclass(frozen=True, slots=True)
class MaskingConfig:
    """Where the token key comes from: an environment variable, a file, or (neither) a generated
    file next to the users file. Only the source is configuration; ``load_token_key`` reads it."""

    token_key_env: str | None = None
    token_key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class QuotaConfig:
    """Where quota counters live (None: a SQLite file next to the users file) and how many rows a
    session reserves from there at a time (at least a statement's cap is reserved anyway)."""

    store: str | None = None
    chunk: int = 100


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str  # http:// or https://
    timeout: float = 5.0  # seconds per attempt
    retries: int = 5  # attempts after the first
    backoff: float = 1.0  # seconds before the first retry, doubling up to 60
    queue: int = 1000  # alarms waiting for delivery; beyond it the oldest are dropped (and counted)

    def describe(self) -> str:
        """The URL without credentials or query (which may carry a token), for logs."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True, slots=True)
class AlarmsConfig:
    webhook: WebhookConfig | None = None
    feed: int = 1000  # alarms the admin API's feed keeps


WHEN_FULL = ("refuse_protected", "refuse_all")


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """Where the audit trail goes (``gateway.audit.trail``): the audit database (None: the audit log
    only), the JSON-lines audit log (stdout, stderr, none, or a file), and the local spool that
    holds what the database has not stored yet (None: ``.sekisho-audit`` by the users file)."""

    database: str | None = None
    log: str = "stdout"
    spool: Path | None = None
    spool_max_bytes: int = 1024 * 1024 * 1024
    when_full: str = "refuse_protected"  # or refuse_all
    batch: int = 1000  # records per COPY into the audit database, at most
    sync_interval: float = 0.2  # seconds between fsyncs of the spool
    name: str | None = None  # this gateway's name in chain names (default: host-port)


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Reuse of upstream connections across clients (``gateway.upstream_pool``): how many may wait
    idle (0: none, every session opens its own), for how long, and after how long idle a
    connection is checked with a round trip before it is handed out."""

    max_idle: int = 50
    idle_timeout: float = 60.0
    check_after: float = 10.0


@dataclass(frozen=True, slots=True)
class Config:
    upstream: UpstreamConfig
    users_file: Path
    policy_file: Path
    host: str = "127.0.0.1"
    port: int = 6432
    admin_host: str = "127.0.0.1"
    admin_port: int | None = 6480
    tls: TLSConfig = field(default_factory=TLSConfig)
    limits: Limits = field(default_factory=Limits)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    quotas: QuotaConfig = field(default_factory=QuotaConfig)
    alarms: AlarmsConfig = field(default_factory=AlarmsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    upstream_pool: PoolConfig = field(default_factory=PoolConfig)

    def with_overrides(self, **changes: Any) -> Config:
        return replace(self, **changes)


def parse_dsn(dsn: str) -> UpstreamConfig:
    """A ``postgresql://user:password@host:port/database?sslmode=...`` URL."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"upstream: expected a postgresql:// URL, got scheme {parts.scheme!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = sorted(set(query) - _URL_PARAMETERS)
    if unknown:
        # As libpq does: a typo such as ssl_mode must not silently leave TLS at its default.
        raise ConfigError(
            f"upstream: unknown URL parameter {unknown[0]!r} (known: {', '.join(sorted(_URL_PARAMETERS))})"
        )
    try:
        port = 5432 if parts.port is None else parts.port  # ':0' is an error, not the default
    except ValueError as exc:
        raise ConfigError(f"upstream: invalid port in URL: {exc}") from exc
    try:
        connect_timeout = float(query.get("connect_timeout", 5))
    except ValueError as exc:
        got = query["connect_timeout"]
        raise ConfigError(
            f"upstream.connect_timeout: expected a positive number of seconds, got {got!r}"
        ) from exc
    cfg = UpstreamConfig(
        host=unquote(parts.hostname or "127.0.0.1"),
        port=port,
        database=unquote(parts.path.lstrip("/")) or unquote(parts.username or "postgres"),
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password) if parts.password is not None else None,
        sslmode=query.get("sslmode", "prefer"),
        sslrootcert=query.get("sslrootcert"),
        connect_timeout=connect_timeout,
    )
    _check_upstream(cfg)
    return cfg


def _check_upstream(cfg: UpstreamConfig) -> None:
    if cfg.sslmode not in SSLMODES:
        raise ConfigError(f"upstream.sslmode: expected one of {', '.join(SSLMODES)}, got {cfg.sslmode!r}")
    if not 0 < cfg.port < 65536:
        raise ConfigError(f"upstream.port: expected 1-65535, got {cfg.port}")
    if not cfg.connect_timeout > 0:  # written so that NaN fails too
        raise ConfigError("upstream.connect_timeout: expected a positive number of seconds")


class _Section:
    """Reads typed keys out of one mapping and rejects keys nobody asked for."""

    def __init__(self, data: Any, where: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{where or 'configuration'}: expected a mapping, got {type(data).__name__}")
        self._data = data
        self._where = where
        self._seen: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def get(self, key: str, kind: type, default: Any, *, nullable: bool = False) -> Any:
        self._seen.add(key)
        value = self._data.get(key, default)
        if value is None and default is not None and not nullable:
            raise ConfigError(f"{self._key(key)}: expected {kind.__name__}, got null")
        if value is None or value is default:
            return value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(
                f"{self._key(key)}: expected {kind.__name__}, got {type(value).__name__} {value!r}"
            )
        return value

    def section(self, key: str) -> _Section:
        self._seen.add(key)
        return _Section(self._data.get(key), self._key(key))

    def raw(self, key: str) -> Any:
        self._seen.add(key)
        return self._data.get(key)

    def done(self) -> None:
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            raise ConfigError(
                f"{self._key(unknown[0])}: unknown key (known: {', '.join(sorted(self._seen))})"
            )


def load_config(path: Path) -> Config:
    """Load and validate a configuration file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: configuration is not valid UTF-8: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return config_from_mapping(data, base=path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def config_from_mapping(data: Any, base: Path) -> Config:
    root = _Section(data, "")
    upstream = _upstream(root.raw("upstream"))
    users = root.get("users_file", str, None)
    if users is None:
        raise ConfigError("users_file: required (the file of SCRAM verifiers, see 'sekisho passwd')")
    policy = root.get("policy", str, None)
    if policy is None:
        raise ConfigError("policy: required (the policy file; see README.md, 'Policy')")
    listen = root.section("listen")
    host = listen.get("host", str, "127.0.0.1")
    port = listen.get("port", int, 6432)
    listen.done()
    admin = root.section("admin")
    admin_host = admin.get("host", str, "127.0.0.1")
    admin_port = admin.get("port", int, 6480, nullable=True)  # null switches the admin API off
    admin.done()
    tls_s = root.section("tls")
    cert = tls_s.get("cert", str, None)
    key = tls_s.get("key", str, None)
    tls = TLSConfig(
        cert=(base / cert) if cert else None,
        key=(base / key) if key else None,
        require_tls=tls_s.get("require_tls", bool, False),
    )
    tls_s.done()
    if (tls.cert is None) != (tls.key is None):
        raise ConfigError("tls: cert and key must be given together")
    if tls.require_tls and tls.cert is None:
        raise ConfigError("tls.require_tls: true needs tls.cert and tls.key")
    lim = root.section("limits")
    limits = Limits(
        startup_timeout=lim.get("startup_timeout", float, 10.0),
        max_message_bytes=lim.get("max_message_bytes", int, 64 * 1024 * 1024),
        max_clients=lim.get("max_clients", int, 5000),
        drain_timeout=lim.get("drain_timeout", float, 30.0),
        catalog_refresh=lim.get("catalog_refresh", float, 60.0),
        max_statement_bytes=lim.get("max_statement_bytes", int, 1024 * 1024),
        analysis_seconds=lim.get("analysis_seconds", float, 2.0),
    )
    lim.done()
    if not (
        limits.startup_timeout > 0
        and limits.drain_timeout >= 0
        and limits.catalog_refresh > 0
        and limits.analysis_seconds > 0
    ):
        raise ConfigError("limits: timeouts must be positive")
    if limits.max_message_bytes < 1024 or limits.max_clients < 1:
        raise ConfigError("limits: max_message_bytes must be at least 1024 and max_clients at least 1")
    if limits.max_statement_bytes < 1024:
        raise ConfigError("limits.max_statement_bytes: must be at least 1024")
    masking = _masking(root.section("masking"), base)
    quotas = _quotas(root.section("quotas"), base)
    alarms = _alarms(root.section("alarms"))
    audit = _audit(root.section("audit"), base)
    upstream_pool = _upstream_pool(root.section("upstream_pool"))
    root.done()
    return Config(
        upstream=upstream,
        users_file=base / users,
        policy_file=base / policy,
        host=host,
        port=port,
        admin_host=admin_host,
        admin_port=admin_port,
        tls=tls,
        limits=limits,
        masking=masking,
        quotas=quotas,
        alarms=alarms,
        audit=audit,
        upstream_pool=upstream_pool,
    )


def _upstream_pool(sec: _Section) -> PoolConfig:
    pool = PoolConfig(
        max_idle=sec.get("max_idle", int, 50),
        idle_timeout=sec.get("idle_timeout", float, 60.0),
        check_after=sec.get("check_after", float, 10.0),
    )
    sec.done()
    if pool.max_idle < 0:
        raise ConfigError(f"upstream_pool.max_idle: expected 0 or more, got {pool.max_idle}")
    if not pool.idle_timeout > 0:  # written so that NaN fails too
        raise ConfigError("upstream_pool.idle_timeout: expected a positive number of seconds")
    if not pool.check_after >= 0:
        raise ConfigError("upstream_pool.check_after: expected 0 or more seconds")
    return pool


def _audit(sec: _Section, base: Path) -> AuditConfig:
    database = sec.get("database", str, None)
    target = sec.get("log", str, "stdout")
    spool = sec.get("spool", str, None)
    audit = AuditConfig(
        database=database,
        log=target if target in ("stdout", "stderr", "none") else str(base / target),
        spool=(base / spool) if spool else None,
        spool_max_bytes=sec.get("spool_max_bytes", int, 1024 * 1024 * 1024),
        when_full=sec.get("when_full", str, "refuse_protected"),
        batch=sec.get("batch", int, 1000),
        sync_interval=sec.get("sync_interval", float, 0.2),
        name=sec.get("name", str, None),
    )
    sec.done()
    if database is not None:
        try:
            parse_dsn(database)
        except ConfigError as exc:
            raise ConfigError(f"audit.database: {exc}".replace("upstream: ", "")) from None
    if target == "":
        raise ConfigError("audit.log: expected stdout, stderr, none or a file name, got ''")
    if audit.when_full not in WHEN_FULL:
        raise ConfigError(f"audit.when_full: expected one of {', '.join(WHEN_FULL)}, got {audit.when_full!r}")
    if audit.spool_max_bytes < 1024 * 1024:
        raise ConfigError("audit.spool_max_bytes: must be at least 1048576 (1 MiB)")
    if audit.batch < 1:
        raise ConfigError("audit.batch: must be at least 1")
    if not audit.sync_interval > 0:
        raise ConfigError("audit.sync_interval: expected a positive number of seconds")
    if audit.name is not None and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", audit.name):
        raise ConfigError(f"audit.name: expected letters, digits and _.:- (at most 64), got {audit.name!r}")
    return audit


def _quotas(sec: _Section, base: Path) -> QuotaConfig:
    store = sec.get("store", str, None)
    chunk = sec.get("chunk", int, 100)
    sec.done()
    if chunk < 1:
        raise ConfigError("quotas.chunk: must be at least 1")
    if store is not None:
        if store.startswith("sqlite:///"):
            path = Path(store.removeprefix("sqlite:///"))
            store = f"sqlite:///{path if path.is_absolute() else base / path}"
        elif not store.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"quotas.store: expected redis://host:port/db or sqlite:///path, got {store!r}")
    return QuotaConfig(store, chunk)


def _alarms(sec: _Section) -> AlarmsConfig:
    feed = sec.get("feed", int, 1000)
    webhook: WebhookConfig | None = None
    if sec.raw("webhook") is not None:
        hook = sec.section("webhook")
        url = hook.get("url", str, None)
        if url is None:
            raise ConfigError("alarms.webhook.url: required (the http:// or https:// URL to POST alarms to)")
        webhook = WebhookConfig(
            url=url,
            timeout=hook.get("timeout", float, 5.0),
            retries=hook.get("retries", int, 5),
            backoff=hook.get("backoff", float, 1.0),
            queue=hook.get("queue", int, 1000),
        )
        hook.done()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"alarms.webhook.url: expected an http:// or https:// URL with a host, got {url!r}"
            )
        if not webhook.timeout > 0:
            raise ConfigError("alarms.webhook.timeout: expected a positive number of seconds")
        if webhook.retries < 0:
            raise ConfigError("alarms.webhook.retries: expected 0 or more")
        if not webhook.backoff > 0:
            raise ConfigError("alarms.webhook.backoff: expected a positive number of seconds")
        if webhook.queue < 1:
            raise ConfigError("alarms.webhook.queue: expected at least 1")
    sec.done()
    if feed < 1:
        raise ConfigError("alarms.feed: expected at least 1")
    return AlarmsConfig(webhook=webhook, feed=feed)


def _masking(sec: _Section, base: Path) -> MaskingConfig:
    env = sec.get("token_key_env", str, None)
    file = sec.get("token_key_file", str, None)
    sec.done()
    if env is not None and file is not None:
        raise ConfigError("masking: give token_key_env or token_key_file, not both")
    if env == "":
        raise ConfigError("masking.token_key_env: expected the name of an environment variable, got ''")
    if file == "":
        raise ConfigError("masking.token_key_file: expected a file name, got ''")
    return MaskingConfig(token_key_env=env, token_key_file=(base / file) if file else None)


def load_token_key(config: Config) -> bytes:
    """The secret key of ``token`` masks, read at start-up (the configuration names only its source).

    From ``masking.token_key_env`` or ``masking.token_key_file`` (text such as ``openssl rand -hex
    32``; surrounding whitespace, like an editor's final newline, is not part of the key; at least
    32 bytes), or else a random 32-byte key created on first start in ``.sekisho-token-key`` (mode
    0600) next to the users file and reused afterwards. Raises ``ConfigError`` naming the key.
    """
    masking = config.masking
    if masking.token_key_env is not None:
        where = "masking.token_key_env"
        value = os.environ.get(masking.token_key_env)
        if value is None:
            raise ConfigError(f"{where}: environment variable {masking.token_key_env} is not set")
        key = os.fsencode(value.strip())  # the variable's bytes, even if they are not UTF-8
    elif masking.token_key_file is not None:
        where = "masking.token_key_file"
        try:
            key = masking.token_key_file.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read {masking.token_key_file}: {exc.strerror}") from exc
    else:
        try:
            return load_or_create_secret(config.users_file.with_name(GENERATED_KEY_NAME), "token key")
        except UsersFileError as exc:
            raise ConfigError(f"masking: {exc}") from exc
    if len(key) < MIN_TOKEN_KEY_BYTES:
        raise ConfigError(
            f"{where}: the token key must be at least {MIN_TOKEN_KEY_BYTES} bytes, got {len(key)} "
            "(make one with: openssl rand -hex 32)"
        )
    return key


def _upstream(value: Any) -> UpstreamConfig:
    if value is None:
        raise ConfigError("upstream: required (a postgresql:// URL or a mapping)")
    if isinstance(value, str):
        return parse_dsn(value)
    sec = _Section(value, "upstream")
    password = sec.get("password", str, None)
    env = sec.get("password_env", str, None)
    if env is not None:
        if env not in os.environ:
            raise ConfigError(f"upstream.password_env: environment variable {env} is not set")
        password = os.environ[env]
    cfg = UpstreamConfig(
        host=sec.get("host", str, "127.0.0.1"),
        port=sec.get("port", int, 5432),
        database=sec.get("database", str, "postgres"),
        user=sec.get("user", str, "postgres"),
        password=password,
        sslmode=sec.get("sslmode", str, "prefer"),
        sslrootcert=sec.get("sslrootcert", str, None),
        connect_timeout=sec.get("connect_timeout", float, 5.0),
    )
    sec.done()
    _check_upstream(cfg)
    return cfg
