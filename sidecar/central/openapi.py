"""The OpenAPI 3.0 document of the central server, served at ``GET /openapi.json``.

Written by hand next to the handlers it describes; the schemathesis test fuzzes the
running server against it (no 5xx, every answer matches its schema).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sidecar import __version__

S = dict[str, Any]


def _obj(props: dict[str, S], required: list[str] | None = None, extra: bool = True) -> S:
    out: S = {"type": "object", "properties": props, "required": list(props) if required is None else required}
    if not extra:
        out["additionalProperties"] = False
    return out


STR: S = {"type": "string"}
NSTR: S = {"type": "string", "nullable": True}
NUM: S = {"type": "number"}
NNUM: S = {"type": "number", "nullable": True}
INT: S = {"type": "integer"}
ERROR = _obj({"type": {"type": "string", "enum": ["error"]}, "error": _obj({"type": STR, "message": STR})})


def _ref(name: str) -> S:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: S, description: str) -> S:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, S]:
    text = {400: "Invalid request", 401: "Missing, unknown or revoked token", 403: "The role may not do this",
            404: "Not found", 409: "Conflicts with what is stored", 413: "Body too large", 429: "Rate limited"}
    return {str(c): _json(_ref("Error"), text[c]) for c in (400, 413, *codes)}


def _op(summary: str, ok: dict[str, S], errs: tuple[int, ...], security: str | None, **extra: Any) -> S:
    op: S = {"summary": summary, "responses": {**ok, **_errors(*errs)}, **extra}
    op["security"] = [{security: []}] if security else []
    return op


def _body(schema: S) -> S:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _q(name: str, schema: S, description: str = "") -> S:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _p(name: str) -> S:
    return {"name": name, "in": "path", "required": True, "schema": STR}


ADMIN_ERRS = (401, 429)
WRITE_ERRS = (401, 403, 404, 409, 429)
# fmt: off
SCHEMAS: dict[str, S] = {
    "Error": ERROR,
    "SignedPolicy": _obj({"payload": {**STR, "description": "canonical JSON: device_id, version, issued_at, policy"},
                          "signature": {**STR, "description": "base64 Ed25519 over the payload's UTF-8 bytes"},
                          "key_id": STR}),
    "Team": _obj({"id": STR, "name": STR, "created_at": NUM}),
    "Developer": _obj({"id": STR, "email": STR, "name": STR, "team_id": NSTR, "created_at": NUM}),
    "UsageRecord": _obj(
        {"id": {"type": "string", "description": "ULID"}, "ts": NUM, "model": STR, "route": NSTR, "provider": NSTR,
         "input_tokens": INT, "output_tokens": INT, "cache_read_tokens": INT, "cache_write_tokens": INT, "cost_usd": NUM},
        required=["id", "ts", "model"],
    ),
}
# fmt: on
def _rows(**props: S) -> S:
    return {"type": "array", "items": _obj(props)}


ADMINS = _rows(id=STR, name=STR, role=STR, created_at=NUM, revoked_at=NNUM)
TEAMS = _rows(id=STR, name=STR, created_at=NUM, developers=INT)
DEVELOPERS = _rows(id=STR, email=STR, name=STR, team_id=NSTR, team=NSTR, created_at=NUM, devices=INT)
TOKENS = _rows(id=STR, developer_id=STR, email=STR, created_by=STR, created_at=NUM, expires_at=NUM)
DEVICES = _rows(id=STR, name=STR, developer_id=STR, email=STR, created_at=NUM, last_seen_at=NNUM, revoked_at=NNUM,
                policy_version={"type": "integer", "nullable": True}, policy_error=NSTR,
                outbox_backlog={"type": "integer", "nullable": True}, reported_at=NNUM)  # fmt: skip
VERSIONS = _rows(version=INT, scope=STR, created_by=STR, created_at=NUM, comment=NSTR)
USAGE = _rows(key=NSTR, requests=INT, input_tokens=INT, output_tokens=INT, cache_read_tokens=INT,
              cache_write_tokens=INT, cost_usd=NUM)  # fmt: skip
POOLS = _rows(pool=STR, period=STR, limit_usd=NUM, outstanding_usd=NUM, used_usd=NUM, leases=INT)
AUDIT = _rows(seq=INT, ts=NUM, time=STR, kind=STR, request_id=NSTR, data={"type": "object"}, prev_hash=STR, hash=STR)


def document() -> S:
    """The OpenAPI document."""
    # fmt: off
    paths: dict[str, S] = {
        "/healthz": {"get": _op("Liveness", {"200": _json(_obj({"status": STR}), "ok")}, (), None)},
        "/v1/signing-key": {"get": _op("The policy-signing public key", {"200": _json(
            _obj({"public_key": STR, "key_id": STR, "algorithm": STR}), "the key")}, (), None)},
        "/v1/enroll": {"post": _op(
            "Exchange a one-time enrollment token for a device credential",
            {"201": _json(_obj({"device_id": STR, "developer_id": STR, "credential": STR, "public_key": STR, "key_id": STR}), "enrolled")},
            (401, 429), None, requestBody=_body(_obj({"token": STR, "name": STR}, required=["token"])),
        )},
        "/v1/policy": {"get": _op(
            "The device's signed effective policy; long-polls with ?after=VERSION",
            {"200": _json(_ref("SignedPolicy"), "a policy newer than `after`"),
             "304": {"description": "no newer version within the wait"}},
            (401, 429), "device",
            parameters=[_q("after", {"type": "integer", "minimum": 0}, "the version the device holds"),
                        _q("wait", {"type": "number", "minimum": 0, "maximum": 30}, "longest hold in seconds"),
                        {"name": "If-None-Match", "in": "header", "required": False, "schema": STR}],
        )},
        "/v1/usage": {"post": _op(
            "Insert usage records idempotently (by ULID)",
            {"200": _json(_obj({"accepted": INT, "duplicates": INT, "conflicts": {"type": "array", "items": STR}}), "counts")},
            (401, 429), "device",
            requestBody=_body(_obj({"records": {"type": "array", "maxItems": 1000, "items": _ref("UsageRecord")}})),
        )},
        "/v1/leases": {"post": _op(
            "Ask for a slice of the team's and org's budget pools",
            {"200": _json(_obj({"lease_id": NSTR, "granted_usd": NNUM, "period": STR, "expires_at": NUM,
                                "pools": {"type": "array", "items": STR}, "limits": {"type": "object"},
                                "remaining": {"type": "object"}, "names": {"type": "object"}, "resets_at": NUM,
                                "timezone": STR}), "the grant")},
            (401, 429), "device",
            requestBody=_body(_obj({"amount_usd": NUM, "period": {"type": "string", "enum": ["day", "month"]},
                                    "ttl_seconds": NUM}, required=["amount_usd"])),
        )},
        "/v1/leases/{lease_id}/return": {"post": _op(
            "Close a lease, giving back what was not spent", {"200": _json(_obj({"returned": {"type": "boolean"}}), "closed")},
            (401, 404, 429), "device", parameters=[_p("lease_id")], requestBody=_body(_obj({"used_usd": NUM})),
        )},
        "/v1/device": {"delete": _op("Unenroll: the device revokes its own credential",
                                     {"200": _json(_obj({"revoked": STR}), "revoked")}, (401, 404, 429), "device")},
        "/v1/device/status": {"post": _op(
            "The device reports the policy version it enforces (or why it refused the newest) and its usage backlog",
            {"200": _json(_obj({"recorded": {"type": "boolean"}}), "recorded")}, (400, 401, 429), "device",
            requestBody=_body(_obj({"policy_version": {"type": "integer", "minimum": 0, "nullable": True},
                                    "policy_error": NSTR,
                                    "outbox_backlog": {"type": "integer", "minimum": 0, "nullable": True}})),
        )},
        "/v1/admin/whoami": {"get": _op("The calling admin", {"200": _json(_obj({"id": STR, "name": STR, "role": STR}), "me")}, ADMIN_ERRS, "admin")},
        "/v1/admin/admins": {
            "get": _op("Admin users", {"200": _json(_obj({"admins": ADMINS}), "list")}, ADMIN_ERRS, "admin"),
            "post": _op("Create an admin user (token shown once)",
                        {"201": _json(_obj({"name": STR, "role": STR, "token": STR}), "created")}, WRITE_ERRS, "admin",
                        requestBody=_body(_obj({"name": STR, "role": {"type": "string", "enum": ["admin", "viewer"]}}, required=["name"]))),
        },
        "/v1/admin/admins/{name}": {"delete": _op("Revoke an admin user", {"200": _json(_obj({"revoked": STR}), "revoked")},
                                                  WRITE_ERRS, "admin", parameters=[_p("name")])},
        "/v1/admin/teams": {
            "get": _op("Teams", {"200": _json(_obj({"teams": TEAMS}), "list")}, ADMIN_ERRS, "admin"),
            "post": _op("Create a team", {"201": _json(_ref("Team"), "created")}, WRITE_ERRS, "admin",
                        requestBody=_body(_obj({"name": STR}))),
        },
        "/v1/admin/developers": {
            "get": _op("Developers", {"200": _json(_obj({"developers": DEVELOPERS}), "list")}, ADMIN_ERRS, "admin"),
            "post": _op("Create a developer", {"201": _json(_ref("Developer"), "created")}, WRITE_ERRS, "admin",
                        requestBody=_body(_obj({"email": STR, "name": STR, "team": STR}, required=["email"]))),
        },
        "/v1/admin/developers/{developer}": {"patch": _op(
            "Move a developer to another team (null: none); a new policy version",
            {"200": _json(_obj({"id": STR, "team_id": NSTR, "version": INT}), "moved")}, WRITE_ERRS, "admin",
            parameters=[_p("developer")], requestBody=_body(_obj({"team": NSTR})),
        )},
        "/v1/admin/enrollment-tokens": {
            "get": _op("Outstanding enrollment tokens (never the tokens themselves)",
                       {"200": _json(_obj({"tokens": TOKENS}), "list")}, ADMIN_ERRS, "admin"),
            "post": _op(
                "A one-time, expiring enrollment token for a developer (shown once)",
                {"201": _json(_obj({"id": STR, "developer_id": STR, "expires_at": NUM, "token": STR}), "created")},
                WRITE_ERRS, "admin", requestBody=_body(_obj({"developer": STR, "ttl_seconds": NUM}, required=["developer"])),
            ),
        },
        "/v1/admin/enrollment-tokens/{enrollment_id}": {"delete": _op(
            "Revoke an outstanding enrollment token", {"200": _json(_obj({"revoked": STR}), "revoked")}, WRITE_ERRS, "admin",
            parameters=[_p("enrollment_id")],
        )},
        "/v1/admin/devices": {"get": _op("Devices", {"200": _json(_obj({"devices": DEVICES}), "list")}, ADMIN_ERRS, "admin")},
        "/v1/admin/devices/{device_id}": {"delete": _op("Revoke a device (its next call is refused)",
                                                        {"200": _json(_obj({"revoked": STR}), "revoked")}, WRITE_ERRS, "admin",
                                                        parameters=[_p("device_id")])},
        "/v1/admin/policy": {
            "get": _op("A scope's policy document and its effective merge",
                       {"200": _json(_obj({"scope": STR, "version": INT, "document": {"type": "object"}, "effective": {"type": "object"},
                                           "created_by": NSTR, "created_at": NNUM}), "the policy")},
                       (*ADMIN_ERRS, 404), "admin",
                       parameters=[_q("scope", STR, "org, team:NAME or developer:EMAIL"), _q("version", {"type": "integer", "minimum": 0})]),
            "post": _op("Push a scope's new policy document (a new signed version)",
                        {"201": _json(_obj({"version": INT, "scope": STR}), "pushed")}, WRITE_ERRS, "admin",
                        requestBody=_body(_obj({"scope": STR, "document": {"type": "object", "nullable": True}, "comment": STR},
                                               required=["document"]))),
        },
        "/v1/admin/policy/history": {"get": _op(
            "Policy versions, newest first", {"200": _json(_obj({"versions": VERSIONS}), "history")}, (*ADMIN_ERRS, 404), "admin",
            parameters=[_q("scope", STR), _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000})],
        )},
        "/v1/admin/policy/rollback": {"post": _op(
            "Make a scope's older document current again (as a new version)",
            {"201": _json(_obj({"version": INT, "scope": STR}), "rolled back")}, WRITE_ERRS, "admin",
            requestBody=_body(_obj({"scope": STR, "version": {"type": "integer", "minimum": 1}}, required=["version"])),
        )},
        "/v1/admin/usage": {"get": _op(
            "Usage totals", {"200": _json(_obj({"by": STR, "rows": USAGE}), "report")}, ADMIN_ERRS, "admin",
            parameters=[_q("by", {"type": "string", "enum": ["developer", "team", "model", "route", "day"]}),
                        _q("since", {"type": "string", "format": "date"}), _q("until", {"type": "string", "format": "date"})],
        )},
        "/v1/admin/leases": {"get": _op("Budget pools and their leases", {"200": _json(_obj({"pools": POOLS}), "pools")}, ADMIN_ERRS, "admin")},
        "/metrics": {"get": _op("The org's aggregates in the Prometheus text format", {"200": {
            "description": "exposition", "content": {"text/plain": {"schema": STR}}}}, ADMIN_ERRS, "admin")},
        "/v1/admin/audit": {"get": _op("The server's hash-chained audit log", {"200": _json(_obj({"entries": AUDIT}), "entries")},
                                       ADMIN_ERRS, "admin", parameters=[_q("after", {"type": "integer", "minimum": 0})])},
    }
    # fmt: on
    return {
        "openapi": "3.0.3",
        "info": {"title": "claude-sidecar central server", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "admin": {"type": "http", "scheme": "bearer", "description": "an admin token (csa_...)"},
                "device": {"type": "http", "scheme": "bearer", "description": "a device credential (csd_...)"},
            },
        },
    }


async def handler(request: web.Request) -> web.Response:
    """Serve the document."""
    return web.json_response(document())
