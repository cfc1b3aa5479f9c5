"""Connection extras reach every connection: psycopg (extract ... load) and Great Expectations' SQLAlchemy URL.

The TLS test runs a real PostgreSQL with TLS and client certificates made here (a CA, a server and a client
certificate). The embedded server is built without OpenSSL, so this test uses Debian's `postgresql` package
(`make system-deps` installs it).
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from lm_insights.airflow_dag import conninfo_for
from lm_insights.runtime import db

LIBPQ_EXTRAS = {"sslmode": "verify-full", "sslrootcert": "/etc/ca.pem", "sslcert": "/etc/client.pem",
                "sslkey": "/etc/client.key", "options": "-c statement_timeout=5min", "application_name": "lm insights",
                "connect_timeout": 7}


def airflow_connection(monkeypatch, conn_id: str, extra: dict, host="db.example.com", port=5432) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({
        "conn_type": "postgres", "host": host, "port": port, "schema": "postgres", "login": "postgres",
        "password": "secret", "extra": extra}))


def test_every_libpq_extra_reaches_psycopg_and_the_sqlalchemy_url(monkeypatch):
    airflow_connection(monkeypatch, "extras_wh", LIBPQ_EXTRAS | {"cursor": "dictcursor"})  # a provider-only extra
    params = conninfo_to_dict(conninfo_for("extras_wh"))
    assert params == {"host": "db.example.com", "port": "5432", "dbname": "postgres", "user": "postgres",
                      "password": "secret", **{k: str(v) for k, v in LIBPQ_EXTRAS.items()}}
    url = urlsplit(db.sqlalchemy_url(conninfo_for("extras_wh")))
    assert (url.hostname, url.port, url.path, url.username) == ("db.example.com", 5432, "/postgres", "postgres")
    assert {k: v[0] for k, v in parse_qs(url.query).items()} == {k: str(v) for k, v in LIBPQ_EXTRAS.items()}


def test_a_unix_socket_keeps_its_port_and_extras_in_the_url():
    url = urlsplit(db.sqlalchemy_url("host=/tmp/pg port=5433 dbname=w user=u sslmode=disable"))
    assert url.hostname is None and {k: v[0] for k, v in parse_qs(url.query).items()} == {
        "host": "/tmp/pg", "port": "5433", "sslmode": "disable"}


# ------------------------------------------------------------------------------------------- a real TLS server


def _certificate(subject: str, issuer_key, issuer_name, key, *, ca: bool, names=()):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID
    import ipaddress

    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), name


def _write(path: Path, cert=None, key=None, owner: str | None = None) -> Path:
    from cryptography.hazmat.primitives import serialization

    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
        path.chmod(0o600)
    if owner:
        shutil.chown(path, owner, owner)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tls_server():
    """PostgreSQL with ssl=on that accepts only TLS connections with a client certificate of our CA."""
    from cryptography.hazmat.primitives.asymmetric import ec

    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not binaries:
        pytest.fail("Debian's postgresql package is missing (the embedded server has no TLS): run make system-deps")
    bin_dir = Path(binaries[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="lm_insights_tls_", dir="/tmp"))
    root.chmod(0o755)
    as_root = os.geteuid() == 0
    owner = "postgres" if as_root else None
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    if owner:
        shutil.chown(root, owner, owner)

    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("ca", "other_ca", "server", "client")}
    ca, ca_name = _certificate("lm-insights test CA", keys["ca"], None, keys["ca"], ca=True)
    other_ca, _ = _certificate("another CA", keys["other_ca"], None, keys["other_ca"], ca=True)
    server, _ = _certificate("localhost", keys["ca"], ca_name, keys["server"], ca=False, names=True)
    client, _ = _certificate("postgres", keys["ca"], ca_name, keys["client"], ca=False)
    files = {"ca": _write(root / "ca.pem", ca), "other_ca": _write(root / "other_ca.pem", other_ca),
             "server_cert": _write(root / "server.pem", server, owner=owner),
             "server_key": _write(root / "server.key", key=keys["server"], owner=owner)}
    client_dir = Path(tempfile.mkdtemp(prefix="lm_insights_tls_client_"))
    files |= {"client_cert": _write(client_dir / "client.pem", client),
              "client_key": _write(client_dir / "client.key", key=keys["client"])}

    subprocess.run([*run_as, str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", "postgres", "-A", "trust"],
                   check=True, capture_output=True)
    (root / "data" / "pg_hba.conf").write_text("local all all trust\nhostssl all all 127.0.0.1/32 cert\n")
    port = _free_port()
    server_process = subprocess.Popen([
        *run_as, str(bin_dir / "postgres"), "-D", str(root / "data"), "-c", "listen_addresses=127.0.0.1",
        "-c", f"port={port}", "-c", f"unix_socket_directories={root}", "-c", "ssl=on",
        "-c", f"ssl_cert_file={files['server_cert']}", "-c", f"ssl_key_file={files['server_key']}",
        "-c", f"ssl_ca_file={files['ca']}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(host=str(root), port=port, user="postgres", dbname="postgres").close()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline or server_process.poll() is not None:
                server_process.kill()
                raise RuntimeError(f"the TLS PostgreSQL did not start: {server_process.stderr.read()[-2000:]}")
            time.sleep(0.2)
    yield {"port": port, **{k: str(v) for k, v in files.items()}}
    server_process.terminate()
    server_process.wait(timeout=30)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(client_dir, ignore_errors=True)


def _tls_connection(monkeypatch, server, ca: str, client_cert: bool = True) -> str:
    extra = {"sslmode": "verify-full", "sslrootcert": server[ca], "application_name": "lm-insights-tls-test"}
    if client_cert:
        extra |= {"sslcert": server["client_cert"], "sslkey": server["client_key"]}
    airflow_connection(monkeypatch, "tls_wh", extra, host="localhost", port=server["port"])
    return conninfo_for("tls_wh")


FACTS = ("select s.ssl, current_setting('application_name') from pg_stat_ssl as s where s.pid = pg_backend_pid()")


def test_verify_full_connects_with_the_right_ca_for_psycopg_and_great_expectations(monkeypatch, tls_server):
    conninfo = _tls_connection(monkeypatch, tls_server, "ca")
    with psycopg.connect(conninfo) as conn:
        assert conn.execute(FACTS).fetchone() == (True, "lm-insights-tls-test")

    import great_expectations as gx

    from lm_insights.core.gx import gx_context

    context, datasource = gx_context(gx, conninfo)
    with datasource.get_engine().connect() as conn:  # the engine GX validates with, built from our URL
        from sqlalchemy import text

        assert tuple(conn.execute(text(FACTS)).one()) == (True, "lm-insights-tls-test")


def test_verify_full_refuses_a_server_of_another_ca(monkeypatch, tls_server):
    conninfo = _tls_connection(monkeypatch, tls_server, "other_ca")
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(conninfo)
    import sqlalchemy

    engine = sqlalchemy.create_engine(db.sqlalchemy_url(conninfo))
    with pytest.raises(sqlalchemy.exc.OperationalError, match="certificate verify failed"):
        engine.connect()
    engine.dispose()


def test_the_client_certificate_extras_are_what_lets_the_run_in(monkeypatch, tls_server):
    conninfo = _tls_connection(monkeypatch, tls_server, "ca", client_cert=False)
    with pytest.raises(psycopg.OperationalError, match="certificate"):
        psycopg.connect(conninfo)
