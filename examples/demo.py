"""`make demo`: start the embedded stack, run the textstats example on 2,000 documents, show the result (the worker's
summary file, and the batches' results read back from Thresher), stop.

Everything lives in .thresher/demo (recreated each run): the stack's state and logs, the corpus, the results.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from examples.textstats.make_corpus import job_submission, make_corpus
from thresher import Client, Job
from thresher.tools.cli import describe
from thresher.tools.launcher import StackProcess

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = ROOT / ".thresher" / "demo"
APIS = ROOT / "examples" / "textstats" / "apis.yaml"
DOCUMENTS = 2000
BATCH_SIZE = 20
WORKERS = 2


def main() -> int:
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    corpus, out = DEMO_DIR / "corpus", DEMO_DIR / "out"
    print(f"1. Writing {DOCUMENTS} text documents to {corpus}")
    paths = make_corpus(corpus, count=DOCUMENTS)

    print("2. Starting the embedded stack (thresher up) and deploying the textstats Batch API")
    stack = StackProcess(DEMO_DIR / "state", port=0, apis=APIS, echo=True)
    try:
        client = Client(stack.url, api_key=stack.api_key)
        key_file = DEMO_DIR / "state" / "api_key"
        print(f"   The console, while the demo runs: {stack.url}/ui/ (sign in with the key in {key_file})")
        submission = job_submission(paths, corpus, out, batch_size=BATCH_SIZE, workers=WORKERS)
        job = client.submit("textstats", source={"item_list": submission.pop("item_list")}, **submission)
        print(f"3. Submitted job {job.id}: {DOCUMENTS} documents in batches of {BATCH_SIZE}, {WORKERS} workers")
        final = job.wait(out=sys.stdout)
        print("4. The job:")
        print("   " + describe(final).replace("\n", "\n   "))
        show_results(out / "summary.json")
        show_batch_results(job)
        ok = final["job_status"]["status"] == "succeeded"
    finally:
        print("5. Stopping the stack")
        stack.stop()
    print(f"\nState and logs: {DEMO_DIR / 'state'}   results: {out}")
    return 0 if ok else 1


def show_results(path: Path) -> None:
    summary = json.loads(path.read_text(encoding="utf-8"))
    top = ", ".join(f"{word} ({count})" for word, count in list(summary["top_words"].items())[:8])
    print(f"   Results in {path}:")
    print(f"   {summary['documents']} documents, {summary['words']} words, {summary['distinct_words']} distinct")
    print(f"   most frequent: {top}")


def show_batch_results(job: Job) -> None:
    """The batches' results as Thresher kept them, read through the client (`job.results()`, GET
    /v1/jobs/<id>/results, `thresher results JOB`)."""
    documents = words = batches = 0
    first: dict[str, Any] = {}
    for batch in job.results():
        first = first or batch
        batches += 1
        documents += len(batch["result"])
        words += sum(document["words"] for document in batch["result"])
    print("   Results read back from Thresher through thresher.Client (job.results()):")
    print(f"   {batches} batches, {documents} documents, {words} words; batch 0's first document:")
    print(f"   {json.dumps(first['result'][0])[:110]}")


if __name__ == "__main__":
    sys.exit(main())
