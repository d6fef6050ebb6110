"""The `sekisho` command: run | demo | passwd.

Errors a person can fix (a bad configuration, an unreadable users file, a missing PostgreSQL) are
printed as one clear line and exit with status 2; nothing prints a traceback at them.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from gateway.config import ConfigError, load_config, parse_dsn
from gateway.demo import install_sigterm_as_interrupt, run_demo
from gateway.pgcluster import ClusterError
from gateway.runner import serve
from gateway.users import UsersFileError, set_password


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sekisho", description="Sekisho: a PostgreSQL data-access gateway.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve clients with a configuration file")
    run.add_argument("--config", "-c", type=Path, required=True, help="YAML configuration file")
    run.add_argument("--port", type=int, help="override listen.port")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    demo = sub.add_parser("demo", help="a private PostgreSQL with synthetic customers, and Sekisho")
    demo.add_argument("--upstream", help="use this PostgreSQL (postgresql:// URL) instead of a private one")
    demo.add_argument("--port", type=int, default=6432)
    demo.add_argument("--admin-port", type=int, default=6480)
    demo.add_argument("--rows", type=int, default=100_000, help="customers to seed (default 100000)")
    demo.add_argument("--data-dir", type=Path, default=Path(".sekisho-demo"))

    passwd = sub.add_parser("passwd", help="set a person's password in the users file")
    passwd.add_argument("user")
    passwd.add_argument("--users-file", type=Path, default=Path("users.txt"))
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    return parser


def _passwd(args: argparse.Namespace) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"New password for {args.user}: ")
        if getpass.getpass("Again: ") != password:
            print("sekisho: passwords do not match", file=sys.stderr)
            return 2
    set_password(args.users_file, args.user, password)
    print(f"sekisho: password for {args.user} written to {args.users_file}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            config = load_config(args.config)
            if args.port is not None:
                config = config.with_overrides(port=args.port)
            return serve(config, args.log_level)
        if args.command == "demo":
            if args.upstream is not None:
                parse_dsn(args.upstream)
            if args.rows < 1:
                raise ConfigError("--rows: expected a positive number of customers")
            install_sigterm_as_interrupt()
            return run_demo(args.upstream, args.port, args.admin_port, args.rows, args.data_dir)
        if args.command == "passwd":
            return _passwd(args)
    except (ConfigError, UsersFileError, ClusterError, OSError) as exc:
        print(f"sekisho: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
