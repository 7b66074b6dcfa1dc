"""The org's central server: teams, developers, devices, signed policy, usage and leases.

    db.py          one async interface over SQLite (default) and PostgreSQL
    migrations.py  named, append-only schema migrations (the same SQL on both)
    tokens.py      token kinds, generation, hashing
    signing.py     the Ed25519 policy-signing key, signed policy envelopes, verification
    policy_doc.py  scoped policy documents: validation and the org -> team -> developer merge
    store.py       every read and write, in transactions
    notify.py      wakes policy long-polls (in-process on SQLite, LISTEN/NOTIFY on PostgreSQL)
    serving.py     what every endpoint uses: app keys, options, error middleware, authentication
    app.py         the aiohttp application: device, admin, metrics and OpenAPI endpoints
    openapi.py     the OpenAPI document the server serves
    client.py      the small HTTP client the admin and enroll commands use

The server is never on a request's path: sidecars decide locally from their last signed
policy and sync asynchronously.
"""
