"""The retry policy, in one place: what uses one of a batch's attempts, and which failure is its last.

One object decides, as dramatiq's Retries middleware does, and the services take its verdict:

- The monitor takes the decision (services/monitor/accounting.py `decide`, inside the ledger's transaction): only it
  sees every attempt of a batch, whichever worker ran it, across restarts of either side.
- The dequeuer carries the job's limit to it in each FAILED report (`BatchReport.max_attempts`, its
  `--max-receive-count`, which the scheduler sets from the submission's `sqs_dead_letter_queue.max_receive_count`,
  else `queue.max_receive_count`), and carries out the verdict that comes back in the report's ack
  (`ReportAck.dead_letter`): its settler releases the batch or moves it to the dead letter queue. It never counts.
  The limit travels with the reports because a batch may fail before the monitor hears anything else of its job
  (the scheduler tracks a job there only once its batches are all enqueued).

What an attempt is. Each delivery of a batch from the queue is an attempt, numbered by the queue's receive count
(the worker sees it as `X-Thresher-Attempt`). A success (any 2xx, its result stored) is acked. A failure uses one
of the batch's attempts, is reported FAILED (with the job's limit, services/dequeuer/successes.py `failed_report`),
and gets the verdict below:
- a worker error: a non-2xx answer, or a connection cut by a worker that still accepts connections 0.2 s later;
- a timeout (`batch_timeout_s`) from a worker that then answers a health check: a slow batch;
- a result the dequeuer cannot keep: over `results.max_batch_bytes`, or one the result store refused (a batch is
  never acked without its result).
Anything else is no fault of the batch: the attempt is reported RELEASED, uses none, and the batch is released at
once for another delivery:
- a worker lost: it crashed or was killed (an OOM kill), its port closed; its dequeuer exits 1 and is replaced;
- a worker hung: a timeout, and no answer to a health check either; its dequeuer exits 69 and is replaced;
- the dequeuer stopping (SIGTERM: a spot reclaim, the job stopped or timed out): the batches it has not started,
  the one in progress once its grace period is over, and those it could not settle in time;
- the dequeuer lost (killed, its node gone, its heartbeats stopped): the monitor releases what it held, by the
  receipts of its STARTED reports, and reports those attempts RELEASED itself.
A batch whose visibility runs out unreported (held batches are extended, so only a dequeuer that hangs or cannot
reach its queue lets that happen) is delivered again, with nothing reported.

So a batch's attempt number may run ahead of its failures: only reported failures count, whatever the queue's own
receive count says (SQS's redrive policy is a safety net only, at `REDRIVE_MAX_RECEIVES` receives).
A job that is stopped or times out has its dequeuers drained as above, then its queue deleted: nothing is retried
or dead-lettered after that, and its batches not yet terminal stay so.

The verdict on a failure (`RetryPolicy.after_failure`): the failure that makes `max_attempts` failures is the
batch's last, and the batch is dead-lettered with that attempt's error; any failure before it is retried: the batch
is released at once (no backoff) for any worker to take. A `max_attempts` of 0 sets no limit. A repeated report gets
the verdict first recorded; a batch that succeeds after it was dead-lettered (a late report of an older attempt)
counts as succeeded. A dead letter that a dequeuer could not move (it stopped first) is moved by the scheduler at
the job's clean-up (services/scheduler/dead_letters.py).

Poison items (a job's `on_failure: bisect`, its submission's or else its API's). A batch of several items whose
last attempt failed is not dead-lettered but split (`Verdict.SPLIT`): the dequeuer sends its two halves as new
batches, `<batch id>.0` (the first ceil(n/2) items) and `<batch id>.1`, each with fresh attempts, and only then acks
it; and so on down to single items. Only a batch of one item is dead-lettered, with its own last error: the poison
items. A batch of n items with k poison items costs at most about 2·k·log2(n) extra batches, each up to
`max_attempts` attempts. The monitor records the split before the dequeuer sends the halves, so the job's batch
count grows by one per split before either half can be seen; a dequeuer lost in between leaves the batch to be
delivered again, whose failure gets the same verdict (the halves' ids are fixed: sending them again is harmless).

The job-completion hook is no batch, and the dequeuer retries it by itself (`RetryPolicy.hook_retry_delay_s`): a
failed call is released after HOOK_BACKOFF_S × its delivery, until the delivery that reaches `max_attempts`, whose
outcome is reported either way. Its deliveries are counted, not its failures: those to a lost worker count too.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from thresher.core.errors import InvalidRequest

ON_FAILURE_DEAD_LETTER = "dead_letter"  # the default: a batch whose attempts are used up is dead-lettered whole
ON_FAILURE_BISECT = "bisect"  # ... is split in two, down to single items (thresher/core/bisect.py)
ON_FAILURE_CHOICES = (ON_FAILURE_DEAD_LETTER, ON_FAILURE_BISECT)
HOOK_BACKOFF_S = 0.5  # × its delivery, before a failed hook call is released for another try


def check_on_failure(value: str, where: str) -> None:
    """InvalidRequest unless `value` is empty (the default) or one of ON_FAILURE_CHOICES."""
    if value and value not in ON_FAILURE_CHOICES:
        raise InvalidRequest(f"{where}: must be one of {', '.join(ON_FAILURE_CHOICES)}, got {value!r}")


class Verdict(StrEnum):
    """What becomes of a batch whose attempt failed."""

    RETRY = "retry"  # released at once, delivered again to any worker
    DEAD_LETTER = "dead_letter"  # that was its last attempt: to the dead letter queue, with its error
    SPLIT = "split"  # that was its last attempt, and the job bisects: its two halves become new batches


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A job's retry policy; the job's `max_receive_count` makes it."""

    max_attempts: int  # failed attempts a batch may use: the one that reaches it is the last; 0: no limit
    bisect: bool = False  # on_failure bisect: a batch of several items is split after its last attempt

    def after_failure(self, failed_before: int, items: int = 1) -> Verdict:
        """The verdict on a failed attempt of a batch of `items` items that had `failed_before` failures already
        (released attempts are not failures)."""
        if self.max_attempts and failed_before + 1 >= self.max_attempts:
            return Verdict.SPLIT if self.bisect and items > 1 else Verdict.DEAD_LETTER
        return Verdict.RETRY

    def hook_retry_delay_s(self, delivery: int) -> float | None:
        """After a failed call of the job-completion hook on its `delivery`-th delivery: how long to wait before it is
        released for another try; None when that was its last."""
        if self.max_attempts and delivery >= self.max_attempts:
            return None
        return HOOK_BACKOFF_S * delivery
