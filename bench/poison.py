"""Scenario 10, poison items: a job of 10,000 items in batches of 100 with 3 poison items, on_failure bisect.

Each batch holding a poison item fails; with `on_failure: bisect` it is split in two halves, each a new batch, down
to the poison item alone, which only is dead-lettered. One attempt per batch (max_receive_count 1), so that every
extra attempt is a split's: the same job without poison items, run just before, takes one attempt per batch (the
baseline). The issue's bound: about 2·k·log2(n) extra attempts for k poison items in batches of n (with
⌈log2 n⌉ halvings: 42 here).
"""

from __future__ import annotations

import math
from typing import Any

from bench.results import Figure, Scenario, Target
from bench.stack import BenchStack

ITEMS = 10_000
BATCH_SIZE = 100
POISON = (1_234, 5_678, 9_999)
WORKERS = 2
TIMEOUT_S = 600.0


def run(stack: BenchStack) -> Scenario:
    clean, clean_s = _one_job(stack, ())
    poisoned, poisoned_s = _one_job(stack, POISON)
    extra = _attempts(poisoned) - _attempts(clean)
    counts = poisoned["job_status"]["batch_counts"]
    bound = 2 * len(POISON) * math.ceil(math.log2(BATCH_SIZE))
    scenario = Scenario(10, f"Poison items: {ITEMS:,} items in batches of {BATCH_SIZE}, {len(POISON)} poison items")
    scenario.figures = [
        Figure("items dead-lettered", counts["items_dead_lettered"], "items", target=Target(len(POISON), False)),
        Figure(
            "items succeeded",
            counts["items_succeeded"],
            "items",
            target=Target(ITEMS - len(POISON), at_least=True),
        ),
        Figure(
            "extra batch attempts (the splits' halves)",
            extra,
            "attempts",
            baseline=_attempts(clean),
            baseline_label="the same job without poison items",
            target=Target(bound, at_least=False),
        ),
        Figure("batches split", counts["split"], "batches"),
        Figure("wall time", poisoned_s, "s", baseline=clean_s, baseline_label="the same job without poison items"),
    ]
    scenario.notes.append(
        f"Poison items {', '.join(map(str, POISON))}; {WORKERS} workers; one attempt per batch. Dead-lettered batch "
        f"ids: {', '.join(sorted(_short(b) for b in poisoned['dead_lettered_batch_ids']))} (each a single item, "
        "`<batch>.<half>...`)."
    )
    return scenario


def _one_job(stack: BenchStack, poison: tuple[int, ...]) -> tuple[dict[str, Any], float]:
    job = {
        "workers": WORKERS,
        "item_list": {"items": list(range(ITEMS)), "batch_size": BATCH_SIZE},
        "config": {"fail_items": list(poison)},
        "on_failure": "bisect",
        "sqs_dead_letter_queue": {"arn": "", "max_receive_count": 1},
    }
    job_id, submitted_at = stack.submit(job)
    status, ended_at = stack.wait_final(job_id, TIMEOUT_S, poll_s=0.1)
    expected = "completed_with_failures" if poison else "succeeded"
    if status["job_status"]["status"] != expected:
        raise RuntimeError(f"poison job ended {status['job_status']['status']}: {status['job_status']}")
    status["dead_lettered_batch_ids"] = [f["batch_id"] for f in stack.client.failed(job_id)]
    stack.wait_nothing_left(job_id, TIMEOUT_S)
    return status, ended_at - submitted_at


def _attempts(status: dict[str, Any]) -> int:
    """Attempts the job's batches took: its failed ones, and one per batch that succeeded."""
    return int(status["metrics"]["failed"]) + int(status["metrics"]["succeeded"])


def _short(batch_id: str) -> str:
    return batch_id.rpartition("-")[2]
