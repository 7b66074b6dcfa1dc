"""`enroll URL --token T` / `unenroll`: join or leave an org's central server."""

from __future__ import annotations

import json
import socket
import time

import click

from sidecar.central import enrollment
from sidecar.central.client import CentralClient, CentralError
from sidecar.central.signing import SignatureInvalid, verify_envelope
from sidecar.cli.common import context


@click.command()
@click.argument("url")
@click.option("--token", required=True, help="The one-time enrollment token (cse_...) your admin gave you.")
@click.option("--name", default=None, help="This machine's name on the server (default: the host name).")
@click.option("--pin", "pin_key_id", default=None, help="Refuse unless the server's signing key has this key id.")
@click.option("--force", is_flag=True, help="Replace an existing enrollment.")
@click.option("--json", "as_json", is_flag=True, help="Print the enrollment as JSON.")
def enroll(url: str, token: str, name: str | None, pin_key_id: str | None, force: bool, as_json: bool) -> None:
    """Join the central server at URL: store a device credential and pin its signing key."""
    _, p = context()
    existing = enrollment.load(p)
    if existing and not force:
        raise click.ClickException(f"already enrolled with {existing.url} as {existing.device_id}; run claude-sidecar unenroll (or pass --force)")
    client = CentralClient(url)
    answer = client.call("POST", "/v1/enroll", {"token": token, "name": name or socket.gethostname()})
    if pin_key_id and answer["key_id"] != pin_key_id:
        raise click.ClickException(f"the server's signing key is {answer['key_id']}, not the pinned {pin_key_id}: not enrolled")
    record = enrollment.Enrollment(
        url=client.url, device_id=answer["device_id"], developer_id=answer["developer_id"],
        public_key=answer["public_key"], key_id=answer["key_id"], enrolled_at=time.time(),
    )  # fmt: skip
    # A first signed policy proves the credential works and the key signs for this device.
    try:
        envelope = CentralClient(url, answer["credential"]).call("GET", "/v1/policy")
        version = verify_envelope(envelope, record.public_key, record.device_id)["version"]
    except (CentralError, SignatureInvalid) as e:
        raise click.ClickException(f"enrolled, but the first policy check failed: {e}") from None
    store = enrollment.secret_store(p)
    store.set(enrollment.CREDENTIAL_NAME, answer["credential"])
    enrollment.save(p, record)
    if as_json:
        click.echo(json.dumps({"device_id": record.device_id, "url": record.url, "key_id": record.key_id, "policy_version": version}))
        return
    click.echo(f"enrolled with {record.url} as device {record.device_id}")
    click.echo(f"pinned signing key {record.key_id}; policy version {version}")
    click.echo(f"device credential stored in {store.where}")


@click.command()
@click.option("--keep-server", is_flag=True, help="Only forget locally; do not revoke on the server.")
def unenroll(keep_server: bool) -> None:
    """Leave the central server: revoke this device's credential and forget it."""
    _, p = context()
    record = enrollment.load(p)
    store = enrollment.secret_store(p)
    if record is None:
        raise click.ClickException("this sidecar is not enrolled")
    credential = store.get(enrollment.CREDENTIAL_NAME)
    if credential and not keep_server:
        try:
            CentralClient(record.url, credential).call("DELETE", "/v1/device")
        except CentralError as e:
            click.echo(f"warning: could not revoke on the server ({e.message}); ask your admin to revoke {record.device_id}", err=True)
    store.delete(enrollment.CREDENTIAL_NAME)
    enrollment.remove(p)
    click.echo(f"unenrolled: device {record.device_id} forgotten")


COMMANDS = [enroll, unenroll]
