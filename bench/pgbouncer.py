"""A private PgBouncer in front of the benchmark cluster: the baseline Sekisho is measured against.

One process serves three pools onto the same database: ``bench`` in session mode (the baseline: one
server connection per client, like Sekisho's relay) and ``bench_tx`` in transaction mode (what
PgBouncer is usually deployed for), both trusting their clients; and ``bench_scram``, session mode
again, whose clients must log in with SCRAM-SHA-256 at Sekisho's iteration count. Under ``-C`` every
transaction is a new login, and the client's PBKDF2 (about 5 ms of pgbench's CPU on the same cores)
is then part of what is measured: ``bench_scram`` costs pgbench the same work per connection as
Sekisho does, so that comparison is of the relays alone. The upstream side is trust for all three.

Which pool authenticates how is an hba file (``auth_type = hba``), and ``start_pgbouncer`` checks it
on the wire before anything is measured: a pool that asked for less than it is labelled with would
make its figures quietly wrong. PgBouncer refuses to run as root, so as root it runs as the
``postgres`` system user, the same account gateway.pgcluster uses for PostgreSQL, with its files in a
directory handed to that user.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gateway.pgcluster import free_port
from gateway.users import ITERATIONS, Verifier
from gateway.wire import messages as m
from gateway.wire.errors import WireError
from gateway.wire.framing import Frame
from tests.support import LoginFailed, raw_client, wait_until_listening

SESSION_DB = "bench"
TRANSACTION_DB = "bench_tx"
SCRAM_DB = "bench_scram"  # session mode, clients log in with SCRAM-SHA-256
USER = "postgres"
SCRAM_PASSWORD = "bench"  # noqa: S105  a private PgBouncer on loopback, for the bench's own clients


class PgBouncerError(Exception):
    """PgBouncer is missing or did not start; the message carries its log."""


def find_pgbouncer() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if found is None:
        raise PgBouncerError("pgbouncer is not installed (run `make provision`)")
    return found


def _owner() -> tuple[int, int] | None:
    """The ``postgres`` user's (uid, gid) when we are root and must drop to it, else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise PgBouncerError("running as root and PgBouncer refuses root: create a 'postgres' user") from exc
    return entry.pw_uid, entry.pw_gid


@dataclass
class PgBouncer:
    """A running PgBouncer; ``stop()`` is safe to call more than once."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes]

    def env(self, database: str) -> dict[str, str]:
        """libpq environment reaching ``database`` (SESSION_DB, TRANSACTION_DB or SCRAM_DB) through
        PgBouncer, with the password for SCRAM_DB."""
        env = {
            **os.environ,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGDATABASE": database,
            "PGUSER": USER,
            "PGSSLMODE": "disable",
        }
        if database == SCRAM_DB:
            env["PGPASSWORD"] = SCRAM_PASSWORD
        return env

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.directory / "pgbouncer.log").read_text()
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # SIGTERM: immediate shutdown
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_pgbouncer(directory: Path, upstream_port: int, database: str, pool_size: int) -> PgBouncer:
    """Start PgBouncer (trust to the upstream; to clients trust, or SCRAM-SHA-256 for SCRAM_DB), wait
    until it accepts connections and check each pool's authentication (check_authentication)."""
    binary = find_pgbouncer()
    owner = _owner()
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = f"host=127.0.0.1 port={upstream_port} dbname={database} user=postgres"
    config = f"""\
[databases]
{SESSION_DB} = {server} pool_mode=session
{TRANSACTION_DB} = {server} pool_mode=transaction
{SCRAM_DB} = {server} pool_mode=session

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = hba
auth_hba_file = {directory / "hba.conf"}
auth_file = {directory / "userlist.txt"}
pool_mode = session
default_pool_size = {pool_size}
max_client_conn = {max(100, pool_size * 4)}
logfile = {directory / "pgbouncer.log"}
pidfile = {directory / "pgbouncer.pid"}
log_connections = 0
log_disconnections = 0
"""
    (directory / "pgbouncer.ini").write_text(config)
    # Anything not listed (another database, user or address) matches no line and is refused.
    (directory / "hba.conf").write_text(
        f"host {SESSION_DB} {USER} 127.0.0.1/32 trust\n"
        f"host {TRANSACTION_DB} {USER} 127.0.0.1/32 trust\n"
        f"host {SCRAM_DB} {USER} 127.0.0.1/32 scram-sha-256\n"
    )
    # The verifier PostgreSQL and gateway/users.py keep, never the password; trust ignores it.
    verifier = Verifier.make(SCRAM_PASSWORD, ITERATIONS).encode()
    (directory / "userlist.txt").write_text(f'"{USER}" "{verifier}"\n')
    (directory / "pgbouncer.log").touch()
    if owner is not None:
        for path in [directory, *directory.iterdir()]:
            os.chown(path, *owner)
    process = subprocess.Popen(
        [binary, str(directory / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
        user=owner[0] if owner else None, group=owner[1] if owner else None,
        extra_groups=[] if owner else None,
        start_new_session=True,  # Ctrl-C reaches the harness, which then stops PgBouncer itself
    )  # fmt: skip
    bouncer = PgBouncer(directory, port, process)
    problem = wait_until_listening(process, port, 15)
    if problem is not None:
        bouncer.stop()
        raise PgBouncerError(f"pgbouncer {problem}:\n{bouncer.log()[-2000:]}")
    try:
        check_authentication(port)
    except PgBouncerError as exc:
        bouncer.stop()
        raise PgBouncerError(f"{exc}\n{bouncer.log()[-2000:]}") from exc
    return bouncer


def check_authentication(port: int) -> None:
    """Check on the wire what the server on ``port`` asks each pool's clients for: nothing for
    SESSION_DB and TRANSACTION_DB; for SCRAM_DB SCRAM-SHA-256 with ITERATIONS iterations (Sekisho's
    count), then a whole login with SCRAM_PASSWORD. Raises PgBouncerError otherwise, so that no
    figure is recorded under a label its authentication does not match."""
    for database in (SESSION_DB, TRANSACTION_DB):
        if (iterations := _scram_iterations(port, database)) is not None:
            raise PgBouncerError(f"{database} should trust its clients but asks for SCRAM ({iterations})")
    iterations = _scram_iterations(port, SCRAM_DB)
    if iterations != ITERATIONS:
        asked = "no password" if iterations is None else f"{iterations} iterations"
        raise PgBouncerError(
            f"{SCRAM_DB} should ask for SCRAM-SHA-256, {ITERATIONS} iterations; it asks {asked}"
        )
    try:
        with raw_client(port) as client:
            client.login(USER, SCRAM_PASSWORD, SCRAM_DB)
    except (OSError, LoginFailed) as exc:
        raise PgBouncerError(f"{SCRAM_DB}: SCRAM login as {USER} failed: {exc}") from exc


def _scram_iterations(port: int, database: str) -> int | None:
    """None when a client of ``database`` is let in without a password; the iteration count when a
    SCRAM-SHA-256 exchange starts. PgBouncerError for a refusal or any other request."""
    try:
        with raw_client(port) as client:
            client.send(m.StartupMessage((("user", USER), ("database", database))).encode())
            auth = _authentication(client.recv_frame(), database)
            if auth.code == m.AUTH_OK:
                return None
            if auth.code != m.AUTH_SASL or "SCRAM-SHA-256" not in auth.sasl_mechanisms():
                raise PgBouncerError(f"{database}: asks for authentication {auth.code}, not trust or SCRAM")
            first = f"n,,n=,r={base64.b64encode(os.urandom(18)).decode()}"
            client.send(m.sasl_initial_response("SCRAM-SHA-256", first.encode()).encode())
            auth = _authentication(client.recv_frame(), database)
    except (OSError, WireError) as exc:
        raise PgBouncerError(f"{database}: authentication probe failed: {exc}") from exc
    attributes = dict(part.partition("=")[::2] for part in auth.data.decode(errors="replace").split(","))
    if auth.code != m.AUTH_SASL_CONTINUE or not attributes.get("i", "").isdigit():
        raise PgBouncerError(f"{database}: not a SCRAM server-first message: {auth}")
    return int(attributes["i"])


def _authentication(frame: Frame, database: str) -> m.Authentication:
    if frame.type == b"E":
        raise PgBouncerError(f"{database}: refused: {m.ErrorResponse.decode(frame.body).get('M')}")
    if frame.type != b"R":
        raise PgBouncerError(f"{database}: expected an authentication request, got {frame.type!r}")
    return m.Authentication.decode(frame.body)
