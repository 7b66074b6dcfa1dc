"""Sync with an org's central server: signed policy down, usage up, budget leases.

`service.SyncService` owns the loop (opened and closed with the app in `cleanup_ctx`);
`client.DeviceClient` speaks the device API; `policy`, `outbox` and `leases` are its parts.
Nothing here runs on a request's path: the gate reads what the loop last installed.
"""
