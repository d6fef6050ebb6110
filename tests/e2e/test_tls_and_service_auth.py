"""TLS towards clients and towards the upstream, and every upstream login method for the service account."""

from __future__ import annotations

import os
import pwd
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import trustme

from gateway.pgcluster import Cluster, free_port
from gateway.wire import messages as m
from tests.conftest import GatewayFactory
from tests.support import WORK, Gateway, LoginFailed, Upstream, raw_client

SERVICE_PASSWORD = "s3rvice-Pass"
HBA = """\
host all svc_md5 127.0.0.1/32 md5
host all svc_password 127.0.0.1/32 password
host all svc_scram 127.0.0.1/32 scram-sha-256
"""


@dataclass
class TLSCluster:
    cluster: Cluster
    ca: trustme.CA
    ca_file: Path

    def dsn(self, user: str, sslmode: str, password: str | None = SERVICE_PASSWORD, **extra: str) -> str:
        secret = f":{password}" if password else ""
        query = "&".join(f"{k}={v}" for k, v in {"sslmode": sslmode, **extra}.items())
        return f"postgresql://{user}{secret}@127.0.0.1:{self.cluster.port}/postgres?{query}"


def _give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_cluster(ca: trustme.CA) -> Iterator[TLSCluster]:
    """A cluster with TLS on and password logins for three service accounts."""
    name = uuid.uuid4().hex[:8]
    certs = WORK / f"certs-{name}"
    certs.mkdir(parents=True)
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = certs / "server.crt", certs / "server.key", certs / "ca.crt"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    key_file.chmod(0o600)
    for path in (certs, cert_file, key_file):
        _give_to_postgres(path)
    settings = (
        *Cluster.settings,
        ("ssl", "on"),
        ("ssl_cert_file", f"'{cert_file}'"),
        ("ssl_key_file", f"'{key_file}'"),
    )
    cluster = Cluster(WORK / f"pg-tls-{name}", free_port(), settings=settings)
    cluster.start()
    hba = cluster.data_dir / "pg_hba.conf"
    hba.write_text(HBA + hba.read_text())
    with psycopg.connect(
        f"host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres", autocommit=True
    ) as c:
        c.execute("SET password_encryption = 'md5'")
        c.execute(f"CREATE ROLE svc_md5 LOGIN PASSWORD '{SERVICE_PASSWORD}'")
        c.execute("SET password_encryption = 'scram-sha-256'")
        for role in ("svc_password", "svc_scram"):
            c.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{SERVICE_PASSWORD}'")
        c.execute("SELECT pg_reload_conf()")
    try:
        yield TLSCluster(cluster, ca, ca_file)
    finally:
        cluster.stop("immediate")
        shutil.rmtree(cluster.data_dir, ignore_errors=True)
        shutil.rmtree(certs, ignore_errors=True)
        cluster.log_file.unlink(missing_ok=True)


def _whoami(gw: Gateway) -> tuple[str, bool]:
    with psycopg.connect(gw.conninfo("maint", dbname="postgres")) as conn:
        row = conn.execute(
            "SELECT current_user, coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)"
        ).fetchone()
        assert row is not None
        return str(row[0]), bool(row[1])


@pytest.mark.parametrize("service", ["svc_md5", "svc_password", "svc_scram"])
def test_service_account_logs_in_with_each_method(
    tls_cluster: TLSCluster, gateway_factory: GatewayFactory, service: str
) -> None:
    gw = gateway_factory(tls_cluster.dsn(service, "disable"))
    assert _whoami(gw) == (service, False)


def test_wrong_service_password_is_an_operator_problem_not_the_users(
    tls_cluster: TLSCluster, gateway_factory: GatewayFactory
) -> None:
    gw = gateway_factory(tls_cluster.dsn("svc_scram", "disable", password="wrong"))
    with raw_client(gw.port) as client, pytest.raises(LoginFailed) as caught:
        client.login("maint", "maint", "postgres")
    error = caught.value.error
    assert error.sqlstate == "08006"
    assert "service account" in (error.get("M") or "")
    assert "svc_scram" not in str(error.fields), "the service account's name stays private"
    assert "password authentication failed" in gw.log(), "the operator sees the real reason"


def test_missing_service_password_is_reported(
    tls_cluster: TLSCluster, gateway_factory: GatewayFactory
) -> None:
    gw = gateway_factory(tls_cluster.dsn("svc_md5", "disable", password=None))
    with raw_client(gw.port) as client, pytest.raises(LoginFailed) as caught:
        client.login("maint", "maint", "postgres")
    assert caught.value.error.sqlstate == "08006"
    assert "none is configured" in (caught.value.error.get("M") or "")


@pytest.mark.parametrize(
    ("sslmode", "encrypted"),
    [("disable", False), ("allow", True), ("prefer", True), ("require", True)],
)
def test_upstream_sslmodes(
    tls_cluster: TLSCluster, gateway_factory: GatewayFactory, sslmode: str, encrypted: bool
) -> None:
    gw = gateway_factory(tls_cluster.dsn("svc_scram", sslmode))
    assert _whoami(gw) == ("svc_scram", encrypted)


def test_upstream_verify_full_checks_the_certificate(
    tls_cluster: TLSCluster, gateway_factory: GatewayFactory
) -> None:
    good = gateway_factory(tls_cluster.dsn("svc_scram", "verify-full", sslrootcert=str(tls_cluster.ca_file)))
    assert _whoami(good) == ("svc_scram", True)
    other_ca = WORK / f"other-ca-{uuid.uuid4().hex[:8]}.crt"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    try:
        bad = gateway_factory(tls_cluster.dsn("svc_scram", "verify-full", sslrootcert=str(other_ca)))
        with raw_client(bad.port) as client, pytest.raises(LoginFailed) as caught:
            client.login("maint", "maint", "postgres")
        assert caught.value.error.sqlstate == "08006"
    finally:
        other_ca.unlink()


def test_upstream_without_tls_fails_when_tls_is_required(
    upstream: Upstream, gateway_factory: GatewayFactory
) -> None:
    gw = gateway_factory(upstream.dsn.replace("sslmode=disable", "sslmode=require"))
    with raw_client(gw.port) as client, pytest.raises(LoginFailed) as caught:
        client.login("maint", "maint", gw.database)
    assert caught.value.error.sqlstate == "08006"
    assert "refused TLS" in (caught.value.error.get("M") or "")


@pytest.fixture
def client_tls(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "gw.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "gw.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    return {"cert": str(tmp_path / "gw.crt"), "key": str(tmp_path / "gw.key"), "ca": str(tmp_path / "ca.crt")}


def test_clients_can_connect_with_verified_tls(
    client_tls: dict[str, str], gateway_factory: GatewayFactory
) -> None:
    gw = gateway_factory(tls={"cert": client_tls["cert"], "key": client_tls["key"]})
    info = gw.conninfo("maint", sslmode="verify-full", sslrootcert=client_tls["ca"])
    with psycopg.connect(info) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (2000,)
    with psycopg.connect(gw.conninfo("maint")) as plain:  # TLS offered, not required
        assert not plain.pgconn.ssl_in_use


def test_require_tls_refuses_plaintext(client_tls: dict[str, str], gateway_factory: GatewayFactory) -> None:
    gw = gateway_factory(tls={"cert": client_tls["cert"], "key": client_tls["key"], "require_tls": True})
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(gw.conninfo("maint"))
    assert "requires TLS" in str(caught.value)
    with psycopg.connect(gw.conninfo("maint", sslmode="require")) as conn:
        assert conn.pgconn.ssl_in_use


def test_plaintext_bytes_smuggled_after_ssl_request_are_refused(
    client_tls: dict[str, str], gateway_factory: GatewayFactory
) -> None:
    """CVE-2021-23214's shape: data buffered before the TLS handshake must not be trusted."""
    gw = gateway_factory(tls={"cert": client_tls["cert"], "key": client_tls["key"]})
    with raw_client(gw.port) as client:
        client.send(m.SSLRequest().encode() + m.StartupMessage((("user", "maint"),)).encode())
        error = client.error()
        assert error.sqlstate == "08P01"
        assert "unencrypted data after SSL request" in (error.get("M") or "")
