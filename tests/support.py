"""Test support: a private PostgreSQL, Sekisho processes in front of it, and raw protocol clients.

Nothing here mocks the database: every integration test talks to a real PostgreSQL, either a
private cluster this module starts (default) or one named by SEKISHO_TEST_DSN.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import yaml

from gateway.config import parse_dsn
from gateway.demo import ensure_database, seed
from gateway.pgcluster import Cluster, free_port
from gateway.users import set_password
from gateway.wire import messages as m
from gateway.wire.framing import Frame, FrameReader

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".test-work"
TEST_DATABASE = "sekisho_test"
TEST_ROWS = 2000
PEOPLE = ("maint", "lead", "auditor", "alice", "contractor", "strict", "clerk", "drip", "approver")

# The suite's default policy. The relay tests' people (maint, lead, auditor, alice) are
# unrestricted, so the protocol is exercised unshaped; the policy tests use the restricted people:
# contractor (the demo's maintenance role), strict (a small cap that fails instead of truncating)
# and clerk (may write orders); approver approves their elevations (role approvers).
TEST_POLICY = """\
version: 1
protected_tables:
  public.customers:
    pii:
      name: full
      address: {mask: partial, keep_first: 3}
      phone: phone
      email: email
      card_number: card
  public.orders:
    pii: {}
roles:
  relay: {restricted: false}
  maintenance:
    restricted: true
    max_rows: 100
    on_row_cap: truncate
    pii_use: {where: equality, join: equality, group_by: refuse, order_by: refuse, distinct: refuse,
              having: refuse, window: refuse}
  strict: {restricted: true, max_rows: 10, on_row_cap: error}
  clerk: {restricted: true, max_rows: 100, allow: [protected_writes], writable: [public.orders]}
  approvers: {restricted: true, max_rows: 100}
  metered:  # maintenance with volume quotas (tests/e2e/test_quotas.py)
    restricted: true
    max_rows: 100
    quotas:
      - {window: 1h, rows: 250}
      - {window: 1d, bytes: 2MB}
users:
  maint: {roles: [relay]}
  lead: {roles: [relay]}
  auditor: {roles: [relay]}
  alice: {roles: [relay]}
  contractor: {roles: [maintenance]}
  strict: {roles: [strict]}
  clerk: {roles: [clerk]}
  drip: {roles: [metered]}
  approver: {roles: [approvers]}
  newcomer: {roles: [relay]}  # gets a password in test_cli
elevations:
  bulk_export:
    grants: {allow: [copy_protected], max_rows: 10000}
    max_duration: 2h
    approvers: [approvers]
"""


@dataclass
class Upstream:
    """The real PostgreSQL the tests run against."""

    dsn: str
    cluster: Cluster | None = None

    @property
    def host(self) -> str:
        return parse_dsn(self.dsn).host

    @property
    def port(self) -> int:
        return parse_dsn(self.dsn).port

    def conninfo(self) -> str:
        cfg = parse_dsn(self.dsn)
        return f"host={cfg.host} port={cfg.port} dbname={cfg.database} user={cfg.user} sslmode=disable"


def start_upstream() -> Upstream:
    """A seeded PostgreSQL: SEKISHO_TEST_DSN's server, or a private cluster under .test-work."""
    given = os.environ.get("SEKISHO_TEST_DSN")
    if given:
        admin = given
        cluster = None
    else:
        WORK.mkdir(exist_ok=True)
        cluster = Cluster(WORK / f"pg-{os.getpid()}", free_port())
        cluster.start()
        admin = cluster.dsn()
    asyncio.run(ensure_database(admin, TEST_DATABASE))
    cfg = parse_dsn(admin)
    pw = f":{cfg.password}" if cfg.password else ""
    dsn = f"postgresql://{cfg.user}{pw}@{cfg.host}:{cfg.port}/{TEST_DATABASE}?sslmode=disable"
    asyncio.run(seed(dsn, TEST_ROWS))
    return Upstream(dsn, cluster)


@dataclass
class Gateway:
    """A `sekisho run` process with its own configuration directory."""

    directory: Path
    port: int
    database: str
    process: subprocess.Popen[bytes] | None = None
    log_lines: list[str] = field(default_factory=list)

    def conninfo(self, user: str = "maint", password: str | None = None, **extra: str) -> str:
        parts = {
            "host": "127.0.0.1",
            "port": str(self.port),
            "dbname": self.database,
            "user": user,
            "password": user if password is None else password,
            "sslmode": "disable",
        }
        parts.update(extra)
        return " ".join(f"{k}={_quote(v)}" for k, v in parts.items())

    def url(self, user: str = "maint") -> str:
        return f"postgresql://{user}:{user}@127.0.0.1:{self.port}/{self.database}?sslmode=disable"

    def env(self, user: str = "maint") -> dict[str, str]:
        """Environment for libpq tools (psql, pgbench) to reach Sekisho as ``user``."""
        return {
            **os.environ,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGDATABASE": self.database,
            "PGUSER": user,
            "PGPASSWORD": user,
            "PGSSLMODE": "disable",
        }

    def log(self) -> str:
        path = self.directory / "sekisho.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _quote(value: str) -> str:
    """A libpq conninfo value, quoted when it has spaces or quotes."""
    if value and not any(ch in value for ch in " '\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def write_gateway_config(
    directory: Path, upstream_dsn: str, port: int, *, admin_port: int | None = None, **sections: object
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    users = directory / "users.txt"
    if not users.exists():
        for person in PEOPLE:
            set_password(users, person, person)
    policy = directory / "policy.yaml"
    if not policy.exists():
        policy.write_text(TEST_POLICY)
    config: dict[str, object] = {
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": admin_port or free_port()},
        "upstream": upstream_dsn,
        "users_file": "users.txt",
        "policy": "policy.yaml",
    }
    config.update(sections)
    path = directory / "sekisho.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_gateway(directory: Path, upstream_dsn: str, **sections: object) -> Gateway:
    """Start `sekisho run` and wait until it accepts connections."""
    port = free_port()
    config = write_gateway_config(directory, upstream_dsn, port, **sections)
    with (directory / "sekisho.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(config), "--log-level", "debug"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    gateway = Gateway(directory, port, parse_dsn(upstream_dsn).database, process)
    problem = wait_until_listening(process, port, 20)
    if problem is not None:
        gateway.stop()
        raise RuntimeError(f"sekisho {problem}:\n{gateway.log()}")
    return gateway


def start_watched(directory: Path, upstream_dsn: str, alarms: str) -> tuple[Gateway, int]:
    """A gateway on the suite's policy plus ``alarms`` (a policy ``alarms:`` section), with its admin
    API on a port of its own (stats, alarm feed); returns the gateway and that port."""
    directory.mkdir()
    (directory / "policy.yaml").write_text(TEST_POLICY + alarms)
    admin = free_port()
    return start_gateway(directory, upstream_dsn, admin={"host": "127.0.0.1", "port": admin}), admin


def wait_until_listening(process: subprocess.Popen[bytes], port: int, timeout: float) -> str | None:
    """Wait for a server process to accept on 127.0.0.1:port; None when it does, else what went wrong."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"exited with {process.returncode}"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return None
        time.sleep(0.05)
    return "did not start listening"


T = TypeVar("T")


def eventually(predicate: Callable[[], T], what: str = "it", timeout: float = 20.0) -> T:
    """Poll ``predicate`` until it gives something truthy, and return that; fail the test, naming
    ``what``, after ``timeout`` seconds. For effects that follow asynchronously (delivery to the
    audit database, detection, the shared stores)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s: {what}"
        time.sleep(0.2)
    return value


# ----------------------------------------------------------------------------- raw protocol client


class RawClient:
    """A blocking socket speaking the protocol by hand, for tests that need exact bytes."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = FrameReader()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_frame(self) -> Frame:
        while (frame := self.reader.read()) is None:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by Sekisho")
            self.reader.feed(chunk)
        return frame

    def recv_byte(self) -> bytes:
        return self.sock.recv(1)

    def recv_until(self, kind: bytes) -> list[Frame]:
        frames = []
        while True:
            frame = self.recv_frame()
            frames.append(frame)
            if frame.type == kind:
                return frames

    def closed(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the connection (reading returns EOF or reset)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.reader.feed(chunk)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def error(self) -> m.ErrorResponse:
        """Read frames until an ErrorResponse and return it."""
        while True:
            frame = self.recv_frame()
            if frame.type == b"E":
                return m.ErrorResponse.decode(frame.body)

    def close(self) -> None:
        self.sock.close()

    def login(self, user: str, password: str, database: str) -> list[Frame]:
        """Startup + SCRAM exactly as libpq does it; returns the frames up to ReadyForQuery."""
        self.send(m.StartupMessage((("user", user), ("database", database))).encode())
        auth = m.Authentication.decode(self.recv_frame().body)
        assert auth.code == m.AUTH_SASL, auth
        first = f"n,,n=,r={base64.b64encode(os.urandom(18)).decode()}"
        self.send(m.sasl_initial_response("SCRAM-SHA-256", first.encode()).encode())
        frame = self.recv_frame()
        if frame.type == b"E":
            raise LoginFailed(m.ErrorResponse.decode(frame.body))
        server_first = m.Authentication.decode(frame.body).data.decode()
        self.send(m.AuthPayload(scram_client_final(first, server_first, password).encode()).encode())
        frames = []
        while (frame := self.recv_frame()).type != b"Z":
            if frame.type == b"E":
                raise LoginFailed(m.ErrorResponse.decode(frame.body))
            frames.append(frame)
        return [*frames, frame]


class LoginFailed(Exception):
    def __init__(self, error: m.ErrorResponse) -> None:
        super().__init__(error.get("M"))
        self.error = error


def scram_client_final(client_first: str, server_first: str, password: str) -> str:
    """The client-final message for ``client_first``, computed per RFC 5802."""
    attrs = dict(part.split("=", 1) for part in server_first.split(","))
    salt = base64.b64decode(attrs["s"])
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored = hashlib.sha256(client_key).digest()
    without_proof = f"c=biws,r={attrs['r']}"
    bare = client_first.split(",", 2)[2]
    auth_message = f"{bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored, auth_message, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    return f"{without_proof},p={base64.b64encode(proof).decode()}"


@contextlib.contextmanager
def raw_client(port: int, timeout: float = 10.0) -> Iterator[RawClient]:
    client = RawClient(port, timeout)
    try:
        yield client
    finally:
        client.close()


def start_redis(port: int, directory: Path) -> subprocess.Popen[bytes]:
    """A private Redis on a loopback port, keeping nothing on disk; waits until it answers."""
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ping = ["redis-cli", "-p", str(port), "ping"]
        if subprocess.run(ping, capture_output=True, text=True, check=False).stdout.strip() == "PONG":
            return process
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")
