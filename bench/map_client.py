"""`python -m bench.map_client URL ITEMS BATCH_SIZE WORKERS`: the client side of scenario 7, in a process of its own.

Runs `Client.map` over ITEMS small integers on the bench API (its worker echoes each batch) and checks every
result arrives in input order, holding neither items nor results; prints the job id as soon as it is known (so the
bench can watch the job's processes), then one JSON line with the count, seconds and this process's peak RSS.
The API key comes from $THRESHER_DATA_DIR (the embedded stack's), never the command line.
"""

from __future__ import annotations

import json
import os
import sys
import time

from bench.procs import peak_rss_mib
from bench.stack import API
from thresher.tools.sdk import Client


def main(url: str, items: int, batch_size: int, workers: int) -> None:
    client = Client(url)
    started = time.monotonic()
    results = client.map(API, range(items), batch_size=batch_size, workers=workers, config={"echo": True})
    print("submitted", flush=True)  # map has submitted: the bench measures the submission apart
    count = 0
    for expected, result in enumerate(results):
        if result != expected:
            raise SystemExit(f"item {expected}: result {result!r}")
        count += 1
    seconds = time.monotonic() - started
    print(json.dumps({"count": count, "seconds": seconds, "peak_rss_mib": peak_rss_mib(os.getpid())}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:]))
