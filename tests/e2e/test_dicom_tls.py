"""DICOM TLS (PS3.15 BCP 195 profile): with a certificate configured, associations
need TLS 1.2+, and with a client CA, a client certificate too."""

from __future__ import annotations

import shutil
import ssl
import subprocess

import pytest
from pynetdicom import AE

from tests.conftest import make_backend
from tests.support.data import uids, variant
from tests.support.gateway import Gateway


def _openssl(*args: str) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (apt-get install openssl)")
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=dicomgate-test-ca",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                 "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
        ext = d / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1\n")
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
                 "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(d / f"{name}.pem"))
    return d


def test_tls_associations_with_client_certificates(pki, tmp_path, request):
    gw = Gateway(make_backend("sqlite", tmp_path, request), extra_env={
        "DICOMGATE_TLS_CERTIFICATE": str(pki / "server.pem"),
        "DICOMGATE_TLS_PRIVATE_KEY": str(pki / "server.key"),
        "DICOMGATE_TLS_CA_CERTIFICATE": str(pki / "ca.pem"),
    }).start()
    try:
        acc = gw.new_account()
        prv = gw.new_provider()
        gw.link(acc, prv, push=True)
        raw = variant()

        def associate(with_cert: bool, tls: bool = True):
            ae = AE(ae_title=prv["ae_title"])
            ae.acse_timeout = ae.network_timeout = 10
            ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
            if not tls:
                return ae.associate("127.0.0.1", gw.dicom_port, ae_title=acc["ae_title"])
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.pem"))
            if with_cert:
                ctx.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
            return ae.associate("127.0.0.1", gw.dicom_port, ae_title=acc["ae_title"], tls_args=(ctx, "127.0.0.1"))

        assoc = associate(with_cert=True)
        assert assoc.is_established
        from pydicom import dcmread
        import io

        assert assoc.send_c_store(dcmread(io.BytesIO(raw))).Status == 0
        assoc.release()
        assert uids(raw)[2] in [r.sop_uid for r in gw.instance_rows(acc["id"])]
        assert not associate(with_cert=False).is_established  # no client certificate
        assert not associate(with_cert=False, tls=False).is_established  # plain TCP
        assert len(gw.instance_rows(acc["id"])) == 1
    finally:
        gw.close()
        gw.stop()


def test_silent_connections_do_not_block_tls_associations(pki, tmp_path, request):
    """The TLS handshake happens in the connection's own thread, under ARTIM, not in the accept loop."""
    import socket

    from tests.support.pdus import closed_within

    gw = Gateway(make_backend("sqlite", tmp_path, request), extra_env={
        "DICOMGATE_TLS_CERTIFICATE": str(pki / "server.pem"),
        "DICOMGATE_TLS_PRIVATE_KEY": str(pki / "server.key"),
        "DICOMGATE_ASSOCIATION_REQUEST_TIMEOUT": "3",
    }).start()
    silent = []
    try:
        acc, prv = gw.new_account(), gw.new_provider()
        gw.link(acc, prv, push=True)
        silent = [socket.create_connection(("127.0.0.1", gw.dicom_port), timeout=5) for _ in range(8)]
        ae = AE(ae_title=prv["ae_title"])
        ae.acse_timeout = ae.network_timeout = 10
        ae.add_requested_context("1.2.840.10008.1.1")
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.pem"))
        assoc = ae.associate("127.0.0.1", gw.dicom_port, ae_title=acc["ae_title"], tls_args=(ctx, "127.0.0.1"))
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        assert all(closed_within(s, 3 + 5) for s in silent)  # handshake never started: closed at ARTIM
    finally:
        for s in silent:
            s.close()
        gw.close()
        gw.stop()
