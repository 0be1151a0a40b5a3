"""The retry policy (thresher/core/retries.py), and the monitor's accounting asking it for each kind of report."""

from __future__ import annotations

import pytest

from services.monitor.accounting import Batch, BatchEvent, BatchState, Result, advance, decide
from thresher.core.retries import HOOK_BACKOFF_S, RetryPolicy, Verdict


@pytest.mark.parametrize(
    ("max_attempts", "failed_before", "verdict"),
    [
        (3, 0, Verdict.RETRY),  # the first failure of three allowed
        (3, 1, Verdict.RETRY),
        (3, 2, Verdict.DEAD_LETTER),  # the one that reaches the limit is the last
        (3, 5, Verdict.DEAD_LETTER),  # past the limit (reports from a dequeuer given a lower one): still the last
        (1, 0, Verdict.DEAD_LETTER),  # one attempt: its first failure is its last
        (0, 0, Verdict.RETRY),  # 0 sets no limit
        (0, 1000, Verdict.RETRY),
    ],
)
def test_a_failure_is_retried_until_the_one_that_reaches_the_limit(
    max_attempts: int, failed_before: int, verdict: Verdict
) -> None:
    assert RetryPolicy(max_attempts).after_failure(failed_before) is verdict


@pytest.mark.parametrize(
    ("max_attempts", "delivery", "delay_s"),
    [
        (3, 1, HOOK_BACKOFF_S),  # tried again, later after each delivery
        (3, 2, 2 * HOOK_BACKOFF_S),
        (3, 3, None),  # the delivery that reaches the limit is its last: its outcome is reported
        (3, 4, None),  # one more delivery (a worker lost on its last): still the last
        (1, 1, None),
        (0, 7, 7 * HOOK_BACKOFF_S),  # no limit
    ],
)
def test_a_failed_hook_call_is_tried_again_later_until_the_delivery_that_reaches_the_limit(
    max_attempts: int, delivery: int, delay_s: float | None
) -> None:
    assert RetryPolicy(max_attempts).hook_retry_delay_s(delivery) == delay_s


def recorded(reports: list[tuple[int, Result]], max_attempts: int = 3) -> tuple[list[Result], Batch]:
    """Each (attempt, result) of one batch as the ledger records it, in order, and the batch after them."""
    batch: Batch | None = None
    results = []
    for attempt, result in reports:
        report = BatchEvent("j1", "b1", attempt, result, error=f"error {attempt}", max_attempts=max_attempts)
        event = decide(batch, report)
        results.append(event.result)
        batch = advance(batch, event)
    assert batch is not None
    return results, batch


def test_worker_errors_and_timeouts_use_the_attempts_and_the_last_one_dead_letters_the_batch() -> None:
    # Given a job allowing 3 attempts, when a batch fails three times (non-2xx, cut connections, timeouts)
    results, batch = recorded([(1, Result.FAILED), (2, Result.FAILED), (3, Result.FAILED)])
    # Then the first two are retried and the third is its last: dead-lettered with its error
    assert results == [Result.FAILED, Result.FAILED, Result.DEAD_LETTERED]
    assert (batch.state, batch.failed_attempts, batch.last_error) == (BatchState.DEAD_LETTERED, 3, "error 3")


def test_released_attempts_use_none_so_the_attempt_number_runs_ahead_of_the_failures() -> None:
    # Given attempts released through no fault of the batch (worker lost or hung, dequeuer drained or lost)
    results, batch = recorded([(1, Result.RELEASED), (2, Result.FAILED), (3, Result.RELEASED), (4, Result.FAILED)])
    # Then only the two failures count: the batch is waiting for its third attempt, on its fifth delivery
    assert results == [Result.RELEASED, Result.FAILED, Result.RELEASED, Result.FAILED]
    assert (batch.state, batch.attempt, batch.failed_attempts) == (BatchState.RETRYING, 4, 2)
    # And the next failure is its last
    results, _ = recorded([(1, Result.FAILED), (2, Result.RELEASED), (3, Result.FAILED), (5, Result.FAILED)])
    assert results[-1] is Result.DEAD_LETTERED


@pytest.mark.parametrize("result", [Result.STARTED, Result.SUCCEEDED, Result.RELEASED])
def test_only_a_failure_gets_a_verdict(result: Result) -> None:
    # Given a batch whose attempts are used up but for one, when an attempt reports anything but a failure
    results, _ = recorded([(1, Result.FAILED), (2, result)], max_attempts=2)
    # Then it is recorded as reported
    assert results == [Result.FAILED, result]


def test_without_a_limit_a_batch_is_retried_for_ever() -> None:
    results, batch = recorded([(n, Result.FAILED) for n in range(1, 51)], max_attempts=0)
    assert set(results) == {Result.FAILED}
    assert (batch.state, batch.failed_attempts) == (BatchState.RETRYING, 50)


def test_a_batch_that_succeeds_after_its_last_attempt_failed_counts_as_succeeded() -> None:
    # Given a batch dead-lettered on its second attempt, when a late report says its first attempt succeeded
    results, batch = recorded([(2, Result.FAILED), (1, Result.SUCCEEDED)], max_attempts=1)
    # Then it has succeeded, and its failure still counts as a failed attempt
    assert results == [Result.DEAD_LETTERED, Result.SUCCEEDED]
    assert (batch.state, batch.failed_attempts) == (BatchState.SUCCEEDED, 1)
