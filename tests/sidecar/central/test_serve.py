"""`central serve`: TLS, the plain-HTTP warning, a clear error when it cannot listen."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sidecar.central.server import is_loopback
from sidecar.testing.central import CentralProcess


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_file, key_file


async def test_serves_https_with_a_certificate_and_key(tmp_path: Path, db_url: str) -> None:
    cert, key = _self_signed(tmp_path)
    async with CentralProcess(db_url, "--tls-cert", str(cert), "--tls-key", str(key)) as server:
        assert server.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + "/v1/signing-key", ssl=ctx) as r:
                assert r.status == 200 and (await r.json())["algorithm"] == "Ed25519"


def test_plain_http_on_a_non_loopback_address_warns_and_a_failed_bind_is_one_line(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is not on this machine: the bind fails after the warning, so
    # nothing is ever exposed beyond loopback.
    proc = subprocess.run(
        [sys.executable, "-m", "sidecar", "central", "serve", "--db", f"sqlite:///{tmp_path / 'c.db'}", "--host", "192.0.2.1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "warning: serving plain HTTP on 192.0.2.1" in proc.stderr
    assert "error: cannot listen on 192.0.2.1:8790" in proc.stderr and "Traceback" not in proc.stderr


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.com")


async def test_sigterm_answers_held_long_polls_and_exits_cleanly(tmp_path: Path) -> None:
    server = await CentralProcess(f"sqlite:///{tmp_path / 'c.db'}").__aenter__()
    try:
        async with aiohttp.ClientSession() as http:
            headers = {"authorization": f"Bearer {server.bootstrap_token}"}
            async with http.post(server.url + "/v1/admin/developers", json={"email": "a@example.com"}, headers=headers) as r:
                dev = await r.json()
            async with http.post(server.url + "/v1/admin/enrollment-tokens", json={"developer": dev["id"]}, headers=headers) as r:
                token = (await r.json())["token"]
            async with http.post(server.url + "/v1/enroll", json={"token": token}) as r:
                cred = (await r.json())["credential"]

            async def poll() -> int:
                async with http.get(server.url + "/v1/policy", params={"after": "0"}, headers={"authorization": f"Bearer {cred}"}) as r:
                    return r.status

            held = asyncio.ensure_future(poll())
            await asyncio.sleep(0.5)
            await server.stop(kill_after=10)
            assert await held == 304  # answered "nothing newer", not cut off
    finally:
        await server.stop()
    assert server.returncode == 0  # exited by itself, not killed
