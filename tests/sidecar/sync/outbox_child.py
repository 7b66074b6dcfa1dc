"""A sidecar's ledger and outbox in a child process, for the SIGKILL test of test_outbox.py.

    python outbox_child.py DB_FILE URL CREDENTIAL SEED write|drain

`write`: recover the journal, then record rows continuously (journaled, as requests are)
while the Uploader uploads them; prints "acked N" as the server acknowledges batches, until
killed. `drain`: recover the journal, upload everything, print "drained", exit.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from sidecar.ledger.journal import Journal
from sidecar.ledger.pricing import Pricing
from sidecar.ledger.writer import Ledger
from sidecar.sync.client import DeviceClient
from sidecar.sync.outbox import Uploader
from sidecar.sync.settings import SyncConfig
from sidecar.tasks import TaskSet
from sidecar.testing.factories import usage_record

CFG = SyncConfig(upload_interval_seconds=0.02, upload_batch=40, retry_max_seconds=0.5)


async def main(db_file: Path, url: str, credential: str, seed: int, mode: str) -> None:
    journal = Journal(db_file.parent / "journal")
    await asyncio.to_thread(journal.recover, db_file)
    ledger = Ledger(db_file, Pricing(), journal)
    await ledger.start()
    await asyncio.to_thread(Uploader.enable, db_file)
    client = DeviceClient(url, credential)
    up = Uploader(db_file, client, CFG, lambda kind, data: None)
    if mode == "drain":
        await up.drain()
        await up.close()
        await ledger.close()
        journal.close()
        await client.close()
        print("drained", flush=True)
        return
    rnd = random.Random(seed)
    tasks = TaskSet()
    tasks.spawn(up.run(), name="uploader")
    n = 0
    while True:
        for _ in range(rnd.randrange(1, 15)):
            n += 1
            ledger.record(usage_record(None, rnd.choice(["claude-opus-4-8", "claude-haiku-4-5"]),
                                       input_tokens=rnd.randrange(1, 5000), output_tokens=rnd.randrange(0, 900),
                                       cache_read_tokens=rnd.randrange(0, 3) * 1000, route=rnd.choice([None, "default"])))  # fmt: skip
        journal.sync()  # as the request path does before an answer's last byte
        print(f"acked {up.state()['uploaded_total']}", flush=True)
        await asyncio.sleep(rnd.uniform(0.005, 0.03))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]))
