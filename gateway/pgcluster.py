"""A private PostgreSQL cluster under a data directory, for the demo and the test suite.

Uses the machine's PostgreSQL server binaries (``pg_config --bindir``, else the newest
/usr/lib/postgresql/*/bin). PostgreSQL refuses to run as root, so when Sekisho runs as root the
cluster runs as the ``postgres`` system user and its directory is handed to that user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class ClusterError(Exception):
    """The private cluster could not be created, started or stopped."""

    code = "cluster_failed"


def find_bindir() -> Path:
    """Where initdb, pg_ctl and postgres live."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise ClusterError(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found; install the postgresql "
        "package or pass --upstream DSN to use an existing server"
    )


def free_port(preferred: int | None = None) -> int:
    """The preferred loopback port if it is free, else any free one."""
    candidates = [preferred] if preferred else []
    for port in [*candidates, 0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port or 0))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise ClusterError("no free TCP port on 127.0.0.1")


@dataclass
class Cluster:
    """A PostgreSQL cluster in ``data_dir`` listening on 127.0.0.1:``port``, superuser postgres."""

    data_dir: Path
    port: int
    settings: tuple[tuple[str, str], ...] = (
        ("fsync", "off"),
        ("synchronous_commit", "off"),
        ("full_page_writes", "off"),
        ("max_connections", "300"),
        ("shared_buffers", "128MB"),
    )

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}?sslmode=disable"

    def _as_owner(self) -> tuple[Callable[[], None] | None, int | None, int | None]:
        if os.geteuid() != 0:
            return None, None, None
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise ClusterError(
                "running as root, and PostgreSQL refuses to run as root: create a 'postgres' "
                "system user or run as an ordinary user"
            ) from exc
        uid, gid = entry.pw_uid, entry.pw_gid

        def drop() -> None:
            os.setgid(gid)
            os.setuid(uid)

        return drop, uid, gid

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        drop, _, _ = self._as_owner()
        return subprocess.run(
            list(args), capture_output=True, text=True, check=False, preexec_fn=drop,
            cwd="/", env={**os.environ, "LC_ALL": "C.UTF-8"},
        )  # fmt: skip

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        bindir = find_bindir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _, uid, gid = self._as_owner()
        if uid is not None and gid is not None:
            self._check_reachable_by_others()
            os.chown(self.data_dir, uid, gid)
            self.log_file.touch()
            os.chown(self.log_file, uid, gid)
        os.chmod(self.data_dir, 0o700)
        out = self._run(
            str(bindir / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        if out.returncode != 0:
            raise ClusterError(f"initdb failed: {out.stderr.strip() or out.stdout.strip()}")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# Sekisho private cluster\nlisten_addresses = '127.0.0.1'\n")
            conf.write("unix_socket_directories = ''\n")
            for key, value in self.settings:
                conf.write(f"{key} = {value}\n")

    def _check_reachable_by_others(self) -> None:
        """The postgres user must be able to walk down to the data directory."""
        for parent in self.data_dir.resolve().parents:
            if not os.stat(parent).st_mode & 0o001:
                raise ClusterError(
                    f"the postgres user cannot reach {self.data_dir}: {parent} is not searchable by "
                    "other users; choose a data directory outside it"
                )

    def running(self) -> bool:
        out = self._run(str(find_bindir() / "pg_ctl"), "-D", str(self.data_dir), "status")
        return out.returncode == 0

    def start(self) -> None:
        if not self.initialized():
            self.init()
        if self.running():
            self.stop()
        out = self._run(
            str(find_bindir() / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
            "-o", f"-p {self.port}", "-w", "-t", "60", "start",
        )  # fmt: skip
        if out.returncode != 0:
            tail = ""
            with contextlib.suppress(OSError):
                tail = self.log_file.read_text()[-2000:]
            raise ClusterError(f"PostgreSQL did not start on port {self.port}: {out.stderr.strip()}\n{tail}")

    def stop(self, mode: str = "fast") -> None:
        if not self.initialized():
            return
        self._run(str(find_bindir() / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")
