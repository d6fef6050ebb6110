"""The `sekisho` command: run | demo | passwd | policy check | explain | audit verify | audit search.

Errors a person can fix (a bad configuration, an unreadable users file, a missing PostgreSQL) are
printed as one clear line and exit with status 2; nothing prints a traceback at them.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path

from gateway.audit import cli as audit_cli
from gateway.audit.search import SearchError
from gateway.catalog import CatalogUnavailable, fetch_catalog
from gateway.config import ConfigError, UpstreamConfig, load_config, parse_dsn
from gateway.demo import DEMO_POLICY, install_sigterm_as_interrupt, run_demo
from gateway.gate import PolicyService, SessionGate
from gateway.pgcluster import ClusterError
from gateway.runner import serve, serve_workers
from gateway.server import read_policy
from gateway.users import UsersFileError, set_password
from policy.catalog import Catalog
from policy.engine import Named
from policy.errors import PolicyInvalid, Problem
from policy.explain import render
from policy.loader import check_against_catalog, load_policy_with_positions


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sekisho", description="Sekisho: a PostgreSQL data-access gateway.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve clients with a configuration file")
    run.add_argument("--config", "-c", type=Path, required=True, help="YAML configuration file")
    run.add_argument("--port", type=int, help="override listen.port")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--workers", type=int, default=1, help="processes accepting on the port (SO_REUSEPORT); default 1"
    )

    demo = sub.add_parser("demo", help="a private PostgreSQL with synthetic customers, and Sekisho")
    demo.add_argument("--upstream", help="use this PostgreSQL (postgresql:// URL) instead of a private one")
    demo.add_argument("--port", type=int, default=6432)
    demo.add_argument("--admin-port", type=int, default=6480)
    demo.add_argument("--rows", type=int, default=100_000, help="customers to seed (default 100000)")
    demo.add_argument("--data-dir", type=Path, default=Path(".sekisho-demo"))
    demo.add_argument(
        "--policy", type=Path, default=DEMO_POLICY, help="policy file (default: the demo policy)"
    )

    passwd = sub.add_parser("passwd", help="set a person's password in the users file")
    passwd.add_argument("user")
    passwd.add_argument("--users-file", type=Path, default=Path("users.txt"))
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    policy = sub.add_parser("policy", help="work with policy files")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_sub.add_parser(
        "check", help="validate a policy file, and with a database, check it against the live catalog"
    )
    check.add_argument("file", type=Path, help="the policy YAML file")
    where = check.add_mutually_exclusive_group()
    where.add_argument(
        "--config", "-c", type=Path, help="check against this configuration's upstream database"
    )
    where.add_argument("--upstream", help="check against this PostgreSQL (postgresql:// URL)")

    explain = sub.add_parser("explain", help="show what Sekisho sees in a statement and what it decides")
    explain.add_argument("sql", help="the statement(s), as a client would send them")
    explain.add_argument("--user", "-u", required=True, help="the person to decide for")
    explain.add_argument("--policy", "-p", type=Path, help="policy file (default: the configuration's)")
    source = explain.add_mutually_exclusive_group()
    source.add_argument("--config", "-c", type=Path, help="use this configuration's policy and database")
    source.add_argument("--upstream", help="resolve names against this PostgreSQL (postgresql:// URL)")
    audit_cli.add_parser(sub)
    return parser


def _explain(args: argparse.Namespace) -> int:
    """Analyze and decide exactly as the gateway would, and print it."""
    upstream: UpstreamConfig | None = None
    policy_path: Path | None = args.policy
    if args.config is not None:
        config = load_config(args.config)
        upstream = config.upstream
        policy_path = policy_path or config.policy_file
    elif args.upstream is not None:
        upstream = parse_dsn(args.upstream)
    if policy_path is None:
        raise ConfigError("explain: give --policy FILE or --config FILE")
    policy = read_policy(policy_path)
    catalog = Catalog.of([])
    if upstream is not None:
        try:
            catalog = asyncio.run(fetch_catalog(upstream))
        except CatalogUnavailable as exc:
            print(f"sekisho: {exc}", file=sys.stderr)
            return 2
    else:
        print(
            "sekisho: no database given (--config or --upstream): names are not resolved against a "
            "live catalog, so protected tables are recognized by name only",
            file=sys.stderr,
        )
    service = PolicyService(policy, catalog)
    gate = SessionGate(service, args.user)
    verdict = gate.decide(args.sql, Named())
    print(render(verdict.analysis, verdict.decision, policy, gate.permissions))
    return 0


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


def _policy_check(args: argparse.Namespace) -> int:
    """Exit 0 when the policy is valid (and matches the catalog), 1 with problems, 2 when it could
    not be read or the database could not be reached."""
    path: Path = args.file
    upstream: UpstreamConfig | None = None
    if args.upstream is not None:
        upstream = parse_dsn(args.upstream)
    elif args.config is not None:
        upstream = load_config(args.config).upstream
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        print(
            f"sekisho: cannot read the policy file {path}: {exc.strerror or exc}; nothing was checked",
            file=sys.stderr,
        )
        return 2
    except UnicodeDecodeError:
        print(f"sekisho: the policy file {path} is not UTF-8 text; nothing was checked", file=sys.stderr)
        return 2
    not_checked = "; it was not checked against the database" if upstream is not None else ""
    try:
        policy, positions = load_policy_with_positions(text, str(path))
    except PolicyInvalid as exc:
        return _report_problems(path, exc.problems, not_checked)
    against = "; not checked against a database (give --upstream or --config to do so)"
    if upstream is not None:
        try:
            catalog = asyncio.run(fetch_catalog(upstream))
        except CatalogUnavailable as exc:
            print(f"sekisho: {exc}", file=sys.stderr)
            print(
                f"sekisho: {path} is valid, but the check against the live catalog was NOT done",
                file=sys.stderr,
            )
            return 2
        problems = check_against_catalog(policy, catalog, positions)
        if problems:
            return _report_problems(path, problems, f" in the live catalog of {upstream.describe()}")
        against = f"; checked against the live catalog of {upstream.describe()}"
    pii = sum(len(table.pii) for table in policy.tables.values())
    counts = ", ".join(
        _count(n, word)
        for n, word in (
            (len(policy.roles), "role"),
            (len(policy.users), "user"),
            (len(policy.tables), "protected table"),
            (pii, "PII column"),
        )
    )
    print(f"{path}: OK ({counts}{against})")
    return 0


def _report_problems(path: Path, problems: list[Problem], context: str) -> int:
    for problem in problems:
        print(problem)
    print(f"{path}: {_count(len(problems), 'problem')}{context}", file=sys.stderr)
    return 1


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            config = load_config(args.config)
            if args.port is not None:
                config = config.with_overrides(port=args.port)
            if args.workers < 1:
                raise ConfigError("--workers: expected at least 1")
            if args.workers > 1:
                return serve_workers(config, args.workers, args.log_level)
            return serve(config, args.log_level)
        if args.command == "demo":
            if args.upstream is not None:
                parse_dsn(args.upstream)
            if args.rows < 1:
                raise ConfigError("--rows: expected a positive number of customers")
            install_sigterm_as_interrupt()
            return run_demo(
                args.upstream, args.port, args.admin_port, args.rows, args.data_dir, policy=args.policy
            )
        if args.command == "explain":
            return _explain(args)
        if args.command == "passwd":
            return _passwd(args)
        if args.command == "policy":
            return _policy_check(args)
        if args.command == "audit":
            return audit_cli.run(args)
    except (ConfigError, UsersFileError, ClusterError, PolicyInvalid, OSError, SearchError) as exc:
        print(f"sekisho: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
