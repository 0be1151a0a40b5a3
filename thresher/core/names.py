"""Wire names: headers, environment variables, gRPC metadata keys and metric prefixes, in one place."""

# Headers on every batch POST to a worker.
HEADER_CORTEX_JOB_ID = "X-Cortex-Job-ID"
HEADER_JOB_ID = "X-Thresher-Job-Id"
HEADER_BATCH_ID = "X-Thresher-Batch-Id"
HEADER_ATTEMPT = "X-Thresher-Attempt"
# On the /on-job-complete call: the same key on every try, so a worker can ignore a repeat.
HEADER_IDEMPOTENCY_KEY = "X-Thresher-Idempotency-Key"
# On a worker's answers, "1": it answers pipelined requests one after another, in order (the worker helper does), so
# the dequeuer may send the next batch before the answer to the one in progress.
HEADER_PIPELINING = "X-Thresher-Pipelining"

HOOK_PATH = "/on-job-complete"

# Environment of a worker process (the Cortex names where Cortex had one).
ENV_PORT = "CORTEX_PORT"
ENV_JOB_SPEC = "THRESHER_JOB_SPEC"

# gRPC trailing metadata key that carries an error's kind across a service boundary.
GRPC_KIND_KEY = "thresher-kind"

# API keys: `Authorization: Bearer <key>` on HTTP, the same value under this gRPC metadata key (as gRPC's own
# access-token call credentials send it); clients also read the key from this variable.
HEADER_AUTHORIZATION = "Authorization"
GRPC_AUTHORIZATION_KEY = "authorization"
ENV_API_KEY = "THRESHER_API_KEY"

# Internal calls: the caller's token (thresher/core/trust.py) under this gRPC metadata key. A dequeuer finds its
# token in this variable, set by the runtime that starts it (never on a command line: `ps` shows those to everyone).
GRPC_TOKEN_KEY = "thresher-token"
ENV_WORKER_TOKEN = "THRESHER_WORKER_TOKEN"

METRIC_PREFIX = "thresher_"

# The control message a job's queue carries once every batch is terminal.
JOB_COMPLETE = "job_complete"

# The dequeuer's exit code once it drained on SIGTERM (spot reclaim, node drain): neither a crash (1) nor the end of
# the job (0: its queue is gone). Runtimes replace such a worker without counting it against the restart budget.
EXIT_DRAINED = 75  # sysexits' EX_TEMPFAIL: try again later
# The dequeuer's exit code once its worker hung (it answered neither a batch within batch_timeout nor a health check):
# a crash of the worker's, not the batch's. Runtimes kill the worker and replace it, as after a crash.
EXIT_WORKER_HUNG = 69  # sysexits' EX_UNAVAILABLE
# The dequeuer's exit code once it found nothing to receive for its job's `idle_s` (an elastic job's tail): it held
# nothing, so it just ended. Runtimes do not replace such a worker: the scheduler's scaler counts it as removed.
EXIT_IDLE = 76  # not sysexits' meaning (EX_PROTOCOL): a code of its own, neither a crash nor a drain
# The dequeuer's exit code once the monitor refused its token (UNAUTHENTICATED or PERMISSION_DENIED): trying again
# with the same token cannot help. The services' internal secrets differ (one was changed and a service not restarted);
# runtimes count it as a crash and name it, and a replacement gets a new token.
EXIT_TOKEN_REFUSED = 77  # sysexits' EX_NOPERM
