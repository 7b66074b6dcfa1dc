"""The audit log: an append-only, hash-chained record of every request and every policy
decision, in the `audit` table of the sidecar's store.

chain.py defines an entry and its hash, log.py appends (in the background, in batches),
stage.py is the request-path stage that writes one entry per request, verify.py checks a
chain (from the store or an exported file) and export.py writes JSONL.
"""
