"""A private PgBouncer in front of the benchmark cluster: the baseline Sekisho is measured against.

One process serves two pools onto the same database: ``bench`` in session mode (the baseline: one
server connection per client, like Sekisho's relay) and ``bench_tx`` in transaction mode (what
PgBouncer is usually deployed for). PgBouncer refuses to run as root, so as root it runs as the
``postgres`` system user, the same account gateway.pgcluster uses for PostgreSQL, with its files in a
directory handed to that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gateway.pgcluster import free_port
from tests.support import wait_until_listening

SESSION_DB = "bench"
TRANSACTION_DB = "bench_tx"


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
        """libpq environment reaching ``database`` (SESSION_DB or TRANSACTION_DB) through PgBouncer."""
        return {
            **os.environ,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGDATABASE": database,
            "PGUSER": "postgres",
            "PGSSLMODE": "disable",
        }

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
    """Start PgBouncer (trust to clients and to the upstream) and wait until it accepts connections."""
    binary = find_pgbouncer()
    owner = _owner()
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = f"host=127.0.0.1 port={upstream_port} dbname={database} user=postgres"
    config = f"""\
[databases]
{SESSION_DB} = {server} pool_mode=session
{TRANSACTION_DB} = {server} pool_mode=transaction

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
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
    (directory / "userlist.txt").write_text('"postgres" ""\n')  # trust still needs the user listed
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
    return bouncer
