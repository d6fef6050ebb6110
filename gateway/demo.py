"""`sekisho demo`: a private PostgreSQL with synthetic Japanese customers, and Sekisho in front.

Everything lives under ``--data-dir`` (default ``.sekisho-demo``): the cluster, the users file and
the generated configuration. A second start reuses the cluster and the seeded rows, so it is quick.
All data is synthetic and generated inside PostgreSQL from a fixed seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import asyncpg
import yaml

from gateway.config import ConfigError, load_config, parse_dsn
from gateway.pgcluster import Cluster, free_port
from gateway.runner import serve
from gateway.users import load_users, set_password

DEMO_DATABASE = "sekisho_demo"
AUDIT_DATABASE = "sekisho_audit"  # the demo's audit trail, on the same server
DEMO_USERS = ("maint", "lead", "auditor")
CLUSTER_PORT = 54329
DEMO_POLICY = Path(__file__).resolve().parent.parent / "policies" / "demo.yaml"

SCHEMA = """
CREATE TABLE IF NOT EXISTS public.customers (
    id          bigint PRIMARY KEY,
    name        text NOT NULL,
    address     text NOT NULL,
    phone       text NOT NULL,
    email       text NOT NULL,
    card_number text NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS public.orders (
    id          bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES public.customers(id),
    amount      numeric(12, 0) NOT NULL,
    status      text NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_customer_id_idx ON public.orders(customer_id);
"""

# Built in SQL so 100,000 rows take about a second; per-row hashes make every run identical.
SEED = """
WITH parts AS (
  SELECT
    ARRAY['佐藤','鈴木','高橋','田中','伊藤','渡辺','山本','中村','小林','加藤','吉田','山田',
          '佐々木','山口','松本','井上','木村','林','斎藤','清水'] AS family,
    ARRAY['sato','suzuki','takahashi','tanaka','ito','watanabe','yamamoto','nakamura',
          'kobayashi','kato','yoshida','yamada','sasaki','yamaguchi','matsumoto','inoue',
          'kimura','hayashi','saito','shimizu'] AS family_latin,
    ARRAY['翔太','陽菜','蓮','結衣','大翔','葵','悠真','さくら','湊','美咲','健一','恵子',
          '誠','由美','隆','直子','浩','明美','拓也','彩'] AS given,
    ARRAY['shota','hina','ren','yui','hiroto','aoi','yuma','sakura','minato','misaki',
          'kenichi','keiko','makoto','yumi','takashi','naoko','hiroshi','akemi','takuya','aya']
          AS given_latin,
    ARRAY['東京都新宿区西新宿','大阪府大阪市北区梅田','愛知県名古屋市中区栄','福岡県福岡市博多区博多駅前',
          '北海道札幌市中央区北一条西','宮城県仙台市青葉区一番町','広島県広島市中区紙屋町',
          '京都府京都市下京区四条通','兵庫県神戸市中央区三宮町','神奈川県横浜市西区みなとみらい']
          AS towns,
    ARRAY['example.jp','mail.example.co.jp','example.ne.jp','example.or.jp'] AS domains,
    ARRAY['090','080','070','03','06','052','092','011'] AS prefixes
)
INSERT INTO public.customers (id, name, address, phone, email, card_number, created_at)
SELECT g,
       family[f] || ' ' || given[gv],
       towns[t] || (1 + h % 5) || '丁目' || (1 + (h / 5) % 30) || '番' || (1 + (h / 150) % 20) || '号',
       prefixes[p] || '-'
         || CASE WHEN prefixes[p] IN ('052', '092', '011')
                 THEN lpad(((h / 7) % 1000)::text, 3, '0')
                 ELSE lpad(((h / 7) % 10000)::text, 4, '0') END
         || '-' || lpad(((h / 70000) % 10000)::text, 4, '0'),
       family_latin[f] || '.' || given_latin[gv] || g || '@' || domains[1 + (h / 13) % 4],
       '4' || lpad((((g::numeric * 982451653) + h) % 1000000000000000)::text, 15, '0'),
       timestamptz '2015-01-01 09:00+09' + (g * interval '47 minutes')
FROM parts, generate_series(1, $1::bigint) AS g,
     LATERAL (SELECT abs(hashint8(g)::bigint) AS h,
                     1 + abs(hashint8(g + 1000003)) % 20 AS f,
                     1 + abs(hashint8(g + 2000003)) % 20 AS gv,
                     1 + abs(hashint8(g + 3000017)) % 10 AS t,
                     1 + abs(hashint8(g + 4000037)) % 8 AS p) AS r;
INSERT INTO public.orders (id, customer_id, amount, status, created_at)
SELECT o, 1 + (o * 7) % $1::bigint, 500 + (o * 37) % 50000,
       (ARRAY['paid','shipped','delivered','cancelled','refunded'])[1 + o % 5],
       timestamptz '2016-01-01 09:00+09' + (o * interval '23 minutes')
FROM generate_series(1, $1::bigint * 2) AS o;
ANALYZE public.customers;
ANALYZE public.orders;
"""


@dataclass(frozen=True)
class DemoPaths:
    root: Path

    @property
    def cluster(self) -> Path:
        return self.root / "pg"

    @property
    def users(self) -> Path:
        return self.root / "users.txt"

    @property
    def config(self) -> Path:
        return self.root / "sekisho.yaml"


async def seed(dsn: str, rows: int) -> int:
    """Create the demo tables and fill them with ``rows`` customers; returns the customer count."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA)
        have = await conn.fetchval("SELECT count(*) FROM public.customers")
        if have != rows:
            async with conn.transaction():
                await conn.execute("TRUNCATE public.orders, public.customers")
                # asyncpg sends one statement per prepared call; run the seed statement by statement.
                for statement in _statements(SEED):
                    if "$1" in statement:
                        await conn.execute(statement, rows)
                    else:
                        await conn.execute(statement)
        return int(await conn.fetchval("SELECT count(*) FROM public.customers"))
    finally:
        await conn.close()


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";\n") if s.strip()]


async def ensure_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def ensure_users(path: Path) -> None:
    """The demo's people, each with the password equal to the user name."""
    existing = load_users(path) if path.exists() else {}
    for name in DEMO_USERS:
        if name not in existing:
            set_password(path, name, name)


def write_config(
    paths: DemoPaths, upstream_dsn: str, port: int, admin_port: int, policy: Path, *, audit_dsn: str | None
) -> None:
    config: dict[str, object] = {
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": admin_port},
        "upstream": upstream_dsn,
        "users_file": paths.users.name,
        "policy": str(policy.resolve()),
        # The audit trail: JSON lines in the demo directory and, durably, the audit database.
        "audit": {"log": "audit.jsonl", **({"database": audit_dsn} if audit_dsn else {})},
    }
    paths.config.write_text(
        "# Generated by `sekisho demo`; edit freely, it is rewritten on the next demo start.\n"
        + yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )


def _say(text: str) -> None:
    print(text, flush=True)


def run_demo(
    upstream: str | None, port: int, admin_port: int, rows: int, data_dir: Path, *, policy: Path = DEMO_POLICY
) -> int:
    """Start everything, print how to connect, serve until interrupted."""
    if not policy.is_file():
        raise ConfigError(
            f"policy file {policy} not found (the demo policy ships in the source tree's policies/)"
        )
    paths = DemoPaths(data_dir.resolve())
    paths.root.mkdir(parents=True, exist_ok=True)
    cluster: Cluster | None = None
    if upstream is None:
        cluster = Cluster(paths.cluster, free_port(CLUSTER_PORT))
        fresh = not cluster.initialized()
        _say(f"sekisho demo: {'creating' if fresh else 'starting'} a private PostgreSQL in {paths.cluster}")
        cluster.start()
        asyncio.run(ensure_database(cluster.dsn(), DEMO_DATABASE))
        upstream = cluster.dsn(DEMO_DATABASE)
    try:
        _say(f"sekisho demo: seeding {rows:,} synthetic customers (skipped when already there)")
        count = asyncio.run(seed(upstream, rows))
        ensure_users(paths.users)
        audit_dsn = _audit_database(upstream)
        write_config(paths, upstream, port, admin_port, policy, audit_dsn=audit_dsn)
        config = load_config(paths.config)
        database = config.upstream.database

        def ready() -> None:
            _say("")
            _say(f"Sekisho is listening on 127.0.0.1:{port} in front of {config.upstream.describe()} "
                 f"({count:,} customers); admin API on 127.0.0.1:{admin_port}.")  # fmt: skip
            _say("Connect as the maintenance user (password: maint):")
            _say(f'    PGPASSWORD=maint psql "host=127.0.0.1 port={port} dbname={database} user=maint"')
            _say("Other people: lead (compliance lead), auditor (read-only audit); password = user name.")
            _say(f"Policy: {policy} (maintenance: at most 100 rows per statement, no bulk export of "
                 "customers, no server files or programs).")  # fmt: skip
            _say("Try:  \\d customers    SELECT count(*) FROM customers;    COPY customers TO STDOUT;")
            if audit_dsn is not None:
                _say(f"Audit trail: database {AUDIT_DATABASE} and {paths.root / 'audit.jsonl'}. Read it with")
                _say(f"    sekisho audit search --config {paths.config} --person maint")
                _say(f"    sekisho audit verify --config {paths.config}")
            _say("Press Ctrl-C to stop.")

        return serve(config, on_ready=ready)
    finally:
        if cluster is not None:
            _say("sekisho demo: stopping the private PostgreSQL")
            cluster.stop()


def _audit_database(upstream: str) -> str | None:
    """The demo's audit database beside the customers' (None, said, if it cannot be created)."""
    cfg = parse_dsn(upstream)
    pw = f":{quote(cfg.password, safe='')}" if cfg.password else ""
    base = f"postgresql://{quote(cfg.user, safe='')}{pw}@{cfg.host}:{cfg.port}"
    try:
        asyncio.run(ensure_database(f"{base}/{quote(cfg.database)}?sslmode={cfg.sslmode}", AUDIT_DATABASE))
    except (OSError, asyncpg.PostgresError) as exc:
        _say(f"sekisho demo: no audit database ({exc}); the audit trail goes to audit.jsonl only")
        return None
    return f"{base}/{AUDIT_DATABASE}?sslmode={cfg.sslmode}"


def install_sigterm_as_interrupt() -> None:
    """Let `kill` stop the demo the same way Ctrl-C does (so the cluster is stopped too)."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo(None, 6432, 6480, 100_000, Path(".sekisho-demo")))
