"""pyps over TLS, with client certificates and tokens, against a real
ps_server: the right credentials train; without them nothing is sent."""

import os
import subprocess

import numpy as np
import pytest

import pyps
from conftest import BIN_DIR

SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """Certificates made for this run only (tests/make_certs.sh)."""
    out = tmp_path_factory.mktemp("certs")
    subprocess.run([os.path.join(SOURCE, "tests/make_certs.sh"), str(out)],
                   check=True)
    return out


def tls_server_flags(certs, *more):
    return ("--mode=async", "--lr=0.5", "--l2=0",
            f"--tls_cert={certs}/server.crt", f"--tls_key={certs}/server.key",
            *more)


def export(servers, certs, path):
    """θ as psctl export writes it, read with the job's credentials."""
    subprocess.run(
        [f"{BIN_DIR}/psctl", "export", f"--servers={servers.addresses[0]}",
         f"--tls_ca={certs}/ca.crt", f"--auth_token_file={certs}/token",
         f"--out={path}"], check=True, capture_output=True)
    return path.read_bytes()


def test_token_over_tls_trains_and_a_wrong_token_changes_nothing(
        servers, certs, tmp_path):
    servers.start(1, *tls_server_flags(
        certs, f"--auth_token_file={certs}/token"))
    ca = f"{certs}/ca.crt"
    with pyps.Client(servers.addresses, 0, tls_ca=ca,
                     auth_token_file=f"{certs}/token") as client:
        client.init({"w": np.ones(8, np.float32)})
        theta = client.push_pull({"w": np.ones(8, np.float32)}, 1)
        np.testing.assert_array_equal(theta["w"], np.full(8, 0.5))
    before = export(servers, certs, tmp_path / "before")

    for token, says in ((None, "needs a token"),
                        (f"{certs}/wrong_token", "token does not match")):
        with pytest.raises(pyps.Rejected, match=says):
            pyps.Client(servers.addresses, 0, tls_ca=ca, max_retry_time=2,
                        auth_token_file=token)
    assert export(servers, certs, tmp_path / "after") == before


def test_mutual_tls_admits_only_a_certificate_from_its_ca(servers, certs):
    servers.start(1, *tls_server_flags(certs, f"--tls_client_ca={certs}/ca.crt"))
    ca = f"{certs}/ca.crt"
    with pyps.Client(servers.addresses, 0, tls_ca=ca,
                     tls_cert=f"{certs}/client.crt",
                     tls_key=f"{certs}/client.key") as client:
        client.init({"w": np.zeros(4, np.float32)})
        assert client.pull()["w"].shape == (4,)
    for cert in (None, "stranger"):
        keys = {} if cert is None else {
            "tls_cert": f"{certs}/{cert}.crt", "tls_key": f"{certs}/{cert}.key"}
        # The handshake fails: to the client, a server it cannot reach.
        with pytest.raises(pyps.ServerUnavailable):
            pyps.Client(servers.addresses, 1, num_workers=2, tls_ca=ca,
                        rpc_deadline=1, max_retry_time=2, **keys)


def test_credentials_are_checked_before_anything_is_sent(certs, tmp_path):
    (tmp_path / "not.pem").write_text("hello")
    for kwargs, says in (
            ({"auth_token_file": f"{certs}/token"}, "need TLS"),
            ({"tls_ca": f"{certs}/ca.crt", "tls_cert": f"{certs}/client.crt"},
             "go together"),
            ({"tls_ca": f"{tmp_path}/missing.crt"}, "No such file"),
            ({"tls_ca": f"{tmp_path}/not.pem"}, "not a PEM file")):
        # Port 1: nothing listens; the error comes before any call.
        with pytest.raises(ValueError, match=says):
            pyps.Client(["127.0.0.1:1"], 0, **kwargs)
