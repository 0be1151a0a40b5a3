"""Fault injection with real processes and real signals: every promise of ARCHITECTURE §3, one fault at a time.

Each test checks: every item processed at least once, exact accounting, the right final status, the hook called
once (or not at all where it must not be), and no process of the job left.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.e2e.conftest import Stack, alive, processes_mentioning, processes_of
from tests.faults.conftest import LONG_VISIBILITY_S, Outputs, assert_nothing_left, submit
from tests.helpers import eventually
from thresher.core import trust
from thresher.core.errors import Unavailable
from thresher.core.names import ENV_API_KEY
from thresher.core.runtime.base import TOKEN_REFUSED
from thresher.tools.services import SERVICES

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]


def assert_succeeded_exactly(stack: Stack, outputs: Outputs, job_id: str, items: list[int]) -> dict:
    status = stack.wait_for_final("recorder", job_id, timeout_s=120)
    js, metrics = status["job_status"], status["metrics"]
    assert js["status"] == "succeeded", status
    assert metrics["succeeded"] == js["total_batch_count"] == len(items)
    assert metrics["dead_lettered"] == 0
    assert sorted(set(outputs.items())) == items, "every item processed at least once"
    [hook] = outputs.hooks()
    assert (hook["succeeded"], hook["dead_lettered"]) == (len(items), 0)
    assert_nothing_left(job_id, outputs)
    return status


def assert_results_exactly_once(stack: Stack, job_id: str, items: list[int]) -> list[dict]:
    """One result per batch (batch_size 1), in order, each the worker's answer for its item; the lines returned."""
    results = [json.loads(line) for line in stack.client.results(job_id)]
    assert [r["index"] for r in results] == list(range(len(items))), "exactly one result per batch, in batch order"
    assert [r["result"]["squares"] for r in results] == [[item * item] for item in items]
    return results


def scrape(stack: Stack, service: str) -> str:
    endpoints = json.loads((stack.data_dir / "endpoints.json").read_text())
    return urllib.request.urlopen(endpoints[service]["metrics"], timeout=10).read().decode()


def progress_reached(stack: Stack, job_id: str, done: int) -> None:
    def reached() -> None:
        try:
            assert stack.client.get("recorder", job_id)["metrics"]["succeeded"] >= done
        except Unavailable as e:  # a service restarting
            raise AssertionError(e) from e

    eventually(reached, timeout_s=30)


def test_failing_batches_are_retried_dead_lettered_listed_and_retried_as_a_new_job(
    stack: Stack, outputs: Outputs
) -> None:
    # Given items 5 and 13 that fail while a flag file exists, 20 items in batches of 2, 3 attempts
    flag = outputs.out.parent / "poison-on"
    flag.write_text("")
    job_id = submit(
        stack, outputs, list(range(20)), batch_size=2, config={"fail_items": [5, 13], "fail_while": str(flag)}
    )

    status = stack.wait_for_final("recorder", job_id, timeout_s=120)

    # Then the two batches are tried 3 times each, then dead-lettered; the job completes with failures
    js, metrics = status["job_status"], status["metrics"]
    assert js["status"] == "completed_with_failures", status
    assert (metrics["succeeded"], metrics["dead_lettered"], metrics["failed"]) == (8, 2, 6)
    [hook] = outputs.hooks()
    assert hook["status"] == "completed_with_failures" and len(hook["dead_lettered_batch_ids"]) == 2
    failed = stack.client.failed(job_id)
    assert sorted(b["items"] for b in failed) == [[4, 5], [12, 13]]
    assert all(b["attempts"] == 3 and "poison item" in b["error"] for b in failed)
    assert_nothing_left(job_id, outputs)
    scraped = scrape(stack, "monitor")
    labels = f'api_name="recorder",job_id="{job_id}"'
    assert f"cortex_batch_failed{{{labels}}} 6\n" in scraped and f"cortex_batch_succeeded{{{labels}}} 8\n" in scraped
    assert f'thresher_batches_total{{{labels},outcome="dead_lettered"}} 2.0' in scraped

    # When the cause is fixed and only the failed batches are retried
    flag.unlink()
    retry = stack.client.retry(job_id)
    retried = stack.wait_for_final("recorder", retry["job_id"])
    assert retried["job_status"]["status"] == "succeeded"
    assert retried["job_status"]["retry_of"] == job_id
    assert retried["job_status"]["total_batch_count"] == 2
    assert sorted(set(outputs.items())) == list(range(20))


def test_failed_batches_are_listed_with_their_items_byte_for_byte_as_submitted(stack: Stack, outputs: Outputs) -> None:
    # Given items written as Cortex clients may write them, in a batch that fails its only attempt
    config = {"out_dir": str(outputs.out), "fail_items": [3.5]}
    body = (
        '{"workers": 1, "item_list": {"items": [3.50, 1e2, "caf\\u00e9"], "batch_size": 3},'
        f' "sqs_dead_letter_queue": {{"arn": "", "max_receive_count": 1}}, "config": {json.dumps(config)}}}'
    )
    job_id = stack.client.submit("recorder", body.encode())["job_id"]
    assert stack.wait_for_final("recorder", job_id)["job_status"]["status"] == "completed_with_failures"
    # When its failed batches are listed, by the API and by `thresher failed -o json`
    listed = stack.client.failed_json(job_id)
    cli = [sys.executable, "-m", "thresher.tools.cli", "--url", stack.url, "failed", job_id, "-o", "json"]
    env = os.environ | {ENV_API_KEY: stack.api_key or ""}
    result = subprocess.run(cli, capture_output=True, timeout=30, check=False, env=env)
    assert result.returncode == 0, result.stderr
    printed = result.stdout
    # Then the items are as submitted (and as the worker got them), not decoded and encoded again (3.5, 100.0)
    for answer in (listed, printed):
        [batch] = json.loads(answer)["batches"]
        assert b"3.50" in answer and b"1e2" in answer and b'"caf\\u00e9"' in answer, answer
        assert batch["items"] == [3.5, 100, "caf\u00e9"] and batch["attempts"] == 1
    [call] = outputs.calls()
    assert call["items"] == [3.5, 100, "caf\u00e9"]


def test_a_worker_process_killed_mid_batch_loses_nothing_and_uses_no_attempt(stack: Stack, outputs: Outputs) -> None:
    items = list(range(40))
    job_id = submit(stack, outputs, items, config={"slow_s": 0.1, "results": True})
    progress_reached(stack, job_id, 5)

    os.kill(outputs.worker_pids()[0], signal.SIGKILL)

    status = assert_succeeded_exactly(stack, outputs, job_id, items)
    assert status["metrics"]["failed"] == 0, "a lost worker is not a failed attempt"
    assert status["job_status"]["worker_restarts"] == 1
    assert_results_exactly_once(stack, job_id, items)


def test_a_batch_that_kills_its_worker_once_is_redone_elsewhere(stack: Stack, outputs: Outputs) -> None:
    items = list(range(20))
    job_id = submit(stack, outputs, items, config={"crash_once_items": [7], "results": True})
    status = assert_succeeded_exactly(stack, outputs, job_id, items)
    assert status["metrics"]["failed"] == 0
    assert_results_exactly_once(stack, job_id, items)


def test_a_batch_delivered_again_after_it_succeeded_keeps_one_result_the_last_attempts(
    stack: Stack, outputs: Outputs
) -> None:
    # Given a worker that kills its own dequeuer as soon as it answered batch 3: before the batch is acked, so it
    # comes back and succeeds a second time (and so may the batch written behind it)
    items = list(range(8))
    config = {"kill_dequeuer_items": [3], "kill_dequeuer_after_s": 0, "results": True, "slow_s": 0.05}
    job_id = submit(stack, outputs, items, workers=1, config=config)
    assert_succeeded_exactly(stack, outputs, job_id, items)
    successes: dict[int, list[int]] = {}
    for record in outputs.successes():
        successes.setdefault(record["items"][0], []).append(record["attempt"])
    assert sorted(successes[3]) == [1, 2], "batch 3 succeeded twice"
    # Then each batch has one result, its last successful attempt's
    results = assert_results_exactly_once(stack, job_id, items)
    assert [r["result"]["attempt"] for r in results] == [max(successes[item]) for item in items]


def test_a_dequeuer_killed_mid_batch_gets_its_batch_released_at_once(stack: Stack, outputs: Outputs) -> None:
    items = list(range(30))
    job_id = submit(stack, outputs, items, config={"slow_s": 0.3, "results": True})
    progress_reached(stack, job_id, 3)
    dequeuer = processes_mentioning(f"--job-id {job_id}")[0]

    os.kill(dequeuer, signal.SIGKILL)

    status = assert_succeeded_exactly(stack, outputs, job_id, items)
    assert status["metrics"]["failed"] == 0
    assert_results_exactly_once(stack, job_id, items)


@pytest.mark.timeout(LONG_VISIBILITY_S - 60)  # only a batch released at once lets the job end in time
def test_a_dequeuer_killed_just_after_its_worker_answered_has_the_batch_released_at_once(
    long_visibility_stack: Stack, outputs: Outputs
) -> None:
    # Given one worker whose last batch (item 5) always fails, and which kills its own dequeuer 15 ms after it first
    # answers it: once the monitor has acked the FAILED report, before the dequeuer releases the batch on the queue
    stack = long_visibility_stack
    config = {"fail_items": [5], "kill_dequeuer_items": [5], "kill_dequeuer_after_s": 0.015}
    job_id = submit(stack, outputs, list(range(6)), workers=1, config=config)

    # Then the job ends long before the batch could come back by itself: it was tried (on the replacement worker)
    # until its attempts were used up, and dead-lettered
    status = stack.wait_for_final("recorder", job_id, timeout_s=LONG_VISIBILITY_S)
    js, metrics = status["job_status"], status["metrics"]
    assert (js["status"], metrics["dead_lettered"], metrics["failed"]) == ("completed_with_failures", 1, 3), status
    assert sorted(set(outputs.items())) == [0, 1, 2, 3, 4]
    assert js["worker_restarts"] == 1
    assert_nothing_left(job_id, outputs)


def test_spot_termination_sigterm_drains_the_dequeuer_and_it_is_replaced(stack: Stack, outputs: Outputs) -> None:
    items = list(range(30))
    job_id = submit(stack, outputs, items, config={"slow_s": 0.2})
    progress_reached(stack, job_id, 3)
    dequeuer = processes_mentioning(f"--job-id {job_id}")[0]

    os.kill(dequeuer, signal.SIGTERM)

    status = assert_succeeded_exactly(stack, outputs, job_id, items)
    assert status["metrics"]["failed"] == 0
    assert status["job_status"]["worker_restarts"] == 0, "a drained worker is not a crash"


@pytest.mark.parametrize("service", [service.name for service in SERVICES])  # each that thresher up runs
def test_a_control_plane_service_killed_mid_job_loses_nothing(stack: Stack, outputs: Outputs, service: str) -> None:
    items = list(range(60))
    job_id = submit(stack, outputs, items, config={"slow_s": 0.05})
    if service != "enqueuer":
        progress_reached(stack, job_id, 10)
    pid = stack.service_pid(service)

    os.kill(pid, signal.SIGKILL)

    def restarted() -> None:
        try:
            assert stack.service_pid(service) != pid
        except LookupError as e:  # between its death and its restart
            raise AssertionError(e) from e

    eventually(restarted, timeout_s=30)
    assert_succeeded_exactly(stack, outputs, job_id, items)


@pytest.mark.parametrize("stack_kind", ["stack", "staging_stack"])  # items in the message, or staged as a file
def test_the_enqueuer_killed_while_enqueuing_resumes_without_duplicates(
    stack_kind: str, outputs: Outputs, request: pytest.FixtureRequest
) -> None:
    stack: Stack = request.getfixturevalue(stack_kind)
    items = list(range(30000))
    job_id = submit(stack, outputs, items, batch_size=10, workers=1)
    os.kill(stack.service_pid("enqueuer"), signal.SIGKILL)

    status = stack.wait_for_final("recorder", job_id, timeout_s=180)
    assert status["job_status"]["status"] == "succeeded", status
    assert status["metrics"]["succeeded"] == status["job_status"]["total_batch_count"] == 3000
    assert outputs.items() == items, "every item exactly once: no batch enqueued twice"
    assert len(outputs.hooks()) == 1
    assert not list((stack.data_dir / "staged").glob("*")), "a staged file goes with its job"


def test_a_hanging_batch_times_out_and_is_dead_lettered(stack: Stack, outputs: Outputs) -> None:
    job_id = submit(stack, outputs, [1, 2, 3], config={"hang_items": [2]}, batch_timeout=1,
                    sqs_dead_letter_queue={"max_receive_count": 2})  # fmt: skip
    status = stack.wait_for_final("recorder", job_id, timeout_s=60)
    assert status["job_status"]["status"] == "completed_with_failures", status
    assert (status["metrics"]["succeeded"], status["metrics"]["dead_lettered"]) == (2, 1)
    [failed] = stack.client.failed(job_id)
    assert failed["items"] == [2] and "timeout" in failed["error"]
    assert status["job_status"]["worker_restarts"] == 0, "a slow batch on a worker that answers its health check"
    assert_nothing_left(job_id, outputs)


def test_a_hung_worker_is_replaced_and_its_batches_keep_their_attempts(stack: Stack, outputs: Outputs) -> None:
    # Given a job on two workers with a 2 s batch timeout, under way
    items = list(range(30))
    job_id = submit(stack, outputs, items, config={"slow_s": 0.2}, batch_timeout=2)
    progress_reached(stack, job_id, 3)
    hung = outputs.worker_pids()[0]

    # When one worker stops mid-batch (SIGSTOP: a deadlock, a hung GPU call)
    os.kill(hung, signal.SIGSTOP)

    # Then the job succeeds with no batch failed or dead-lettered, the hook went to a healthy worker at its first
    # attempt, the status says a hung worker was replaced, and the hung one is gone (killed after its grace)
    status = assert_succeeded_exactly(stack, outputs, job_id, items)
    js = status["job_status"]
    assert status["metrics"]["failed"] == 0, "a hung worker is not a failed attempt"
    assert js["hook"]["attempts"] == 1 and js["hook"]["succeeded"], js["hook"]
    assert js["worker_restarts"] == 1 and "worker hung" in js["status_reason"], js
    assert not alive(hung)


def test_a_failing_hook_is_retried_and_its_outcome_shown(stack: Stack, outputs: Outputs) -> None:
    job_id = submit(stack, outputs, [1, 2], config={"hook_failures": 2})
    status = stack.wait_for_final("recorder", job_id, timeout_s=60)
    hook = status["job_status"]["hook"]
    assert status["job_status"]["status"] == "succeeded"
    assert (hook["succeeded"], hook["attempts"]) == (True, 3)
    assert len(outputs.hooks()) == 1 and outputs.hook_calls() == 3
    scraped = scrape(stack, "monitor")
    for outcome, calls in (("succeeded", 1), ("failed", 2)):
        assert (
            f'thresher_hook_calls_total{{api_name="recorder",job_id="{job_id}",outcome="{outcome}"}} {calls}.0'
            in scraped
        )


def test_a_stopped_job_drains_calls_no_hook_and_leaves_nothing(stack: Stack, outputs: Outputs) -> None:
    job_id = submit(stack, outputs, list(range(100)), config={"slow_s": 0.2})
    progress_reached(stack, job_id, 2)

    stack.client.stop(job_id)

    assert stack.client.get("recorder", job_id)["job_status"]["status"] == "stopped"
    assert_nothing_left(job_id, outputs)
    time.sleep(0.5)
    assert outputs.hooks() == [] and outputs.hook_calls() == 0
    with pytest.raises(Exception, match="not in progress"):
        stack.client.stop(job_id)


def test_a_job_past_its_timeout_ends_timed_out_without_its_hook(stack: Stack, outputs: Outputs) -> None:
    job_id = submit(stack, outputs, list(range(100)), config={"slow_s": 0.2}, timeout=2)
    status = stack.wait_for_final("recorder", job_id, timeout_s=60)
    assert status["job_status"]["status"] == "timed_out"
    assert_nothing_left(job_id, outputs)
    assert outputs.hook_calls() == 0


def test_a_crash_looping_worker_ends_the_job_worker_error(stack: Stack, outputs: Outputs) -> None:
    job_id = submit(stack, outputs, [1, 2, 3], workers=1, config={"crash_at_start": True})
    status = stack.wait_for_final("recorder", job_id, timeout_s=90)
    assert status["job_status"]["status"] == "worker_error", status
    assert "exited with code 3" in status["job_status"]["status_reason"]
    assert_nothing_left(job_id, outputs)
    assert outputs.hook_calls() == 0


def test_a_dequeuer_whose_token_the_monitor_refuses_ends_the_job_worker_error_saying_why(
    stack: Stack, outputs: Outputs
) -> None:
    # Given a stack whose internal secret was changed after it started, the monitor not restarted: the scheduler
    # hands each dequeuer a token made with the new secret, which the monitor refuses
    secret_file = stack.data_dir / trust.SECRET_FILE
    old_secret = secret_file.read_text().strip()
    new_secret = secrets.token_hex(32)
    secret_file.write_text(new_secret + "\n")
    # When a job runs
    job_id = submit(stack, outputs, [1, 2, 3], workers=1)
    # Then each dequeuer gives up at once, and once the restart budget is spent the job ends saying why
    status = stack.wait_for_final("recorder", job_id, timeout_s=90)
    assert status["job_status"]["status"] == "worker_error", status
    assert TOKEN_REFUSED in status["job_status"]["status_reason"], status
    assert_nothing_left(job_id, outputs)
    # And the dequeuers' logs say so, with neither secret
    logs = [p.read_text() for p in stack.data_dir.rglob("*.dequeuer.log")]
    assert logs and all("refused this dequeuer's token (UNAUTHENTICATED" in log for log in logs)
    assert not [log for log in logs if old_secret in log or new_secret in log]


def test_a_batch_longer_than_several_visibility_timeouts_is_delivered_once(stack: Stack, outputs: Outputs) -> None:
    job_id = submit(stack, outputs, [1, 2], workers=2, config={"slow_s": 7})  # visibility is 2 s here
    status = stack.wait_for_final("recorder", job_id, timeout_s=60)
    assert status["job_status"]["status"] == "succeeded"
    calls = outputs.calls()
    assert sorted(c["items"][0] for c in calls) == [1, 2], "no batch was delivered twice"


def test_stopping_the_stack_while_the_scheduler_is_down_leaves_no_worker(stack: Stack, outputs: Outputs) -> None:
    job_id = submit(stack, outputs, list(range(100)), config={"slow_s": 0.2})
    progress_reached(stack, job_id, 2)

    os.kill(stack.service_pid("scheduler"), signal.SIGKILL)  # nobody left to stop the workers but the stack itself
    exit_code = stack.stop()

    assert exit_code == 0
    assert processes_of(stack.data_dir) == [], "Ctrl-C leaves no process behind"
