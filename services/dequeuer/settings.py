"""The dequeuer's settings: its command line (who and where it is) over thresher.core.config (how it behaves)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from thresher.core.config import Config

DEFAULT_GRACE_S = 20.0  # time a batch in progress gets to finish after SIGTERM (spot termination notice)


@dataclass(frozen=True)
class Settings:
    job_id: str
    api_name: str
    worker_id: str
    queue_name: str
    worker_port: int
    readiness_path: str | None  # HTTP GET readiness check; None: a TCP connect to the worker port
    visibility_s: float  # each extension keeps a batch invisible this long from now
    max_receive_count: int  # the attempt that reaches this count is the last one
    receive_max: int  # batches per receive call, at most (fewer when batches are slow: see loop.py)
    wait_s: float  # long-poll wait of one receive call
    batch_timeout_s: float  # limit for one POST of a batch
    readiness_timeout_s: float  # how long the worker may take to become ready
    hook_timeout_s: float  # limit for one /on-job-complete call
    heartbeat_s: float  # how often the monitor hears that this worker is alive
    grace_s: float = DEFAULT_GRACE_S

    @classmethod
    def create(
        cls,
        config: Config,
        *,
        job_id: str,
        api_name: str,
        worker_id: str,
        queue_name: str,
        worker_port: int,
        readiness_path: str | None = None,
        batch_timeout_s: float | None = None,
        max_receive_count: int | None = None,
        grace_s: float = DEFAULT_GRACE_S,
    ) -> Settings:
        """Settings for one worker; values left as None come from `config`."""
        d = config.dequeuer
        return cls(
            job_id=job_id,
            api_name=api_name,
            worker_id=worker_id,
            queue_name=queue_name,
            worker_port=worker_port,
            readiness_path=readiness_path,
            visibility_s=config.queue.visibility_s,
            max_receive_count=config.queue.max_receive_count if max_receive_count is None else max_receive_count,
            receive_max=d.receive_max,
            wait_s=d.wait_s,
            batch_timeout_s=d.batch_timeout_s if batch_timeout_s is None else batch_timeout_s,
            readiness_timeout_s=d.readiness_timeout_s,
            heartbeat_s=d.heartbeat_s,
            hook_timeout_s=d.hook_timeout_s,
            grace_s=grace_s,
        )


def parse_args(argv: Sequence[str] | None, config: Config) -> Settings:
    """Read the command line; a bad value exits with status 2 and a message saying which."""
    args = _PARSER.parse_args(argv)
    for name, value in (("job-id", args.job_id), ("worker-id", args.worker_id), ("queue", args.queue_name)):
        if not value.strip():
            _PARSER.error(f"--{name} must not be empty")
    return Settings.create(config, **vars(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.dequeuer", description="Thresher's worker sidecar.")
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--api-name", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--queue", required=True, dest="queue_name", help="the job's queue name")
    parser.add_argument("--worker-port", required=True, type=_port)
    parser.add_argument("--readiness-path", type=_path, help="HTTP GET path that answers 2xx once the worker is ready")
    parser.add_argument("--batch-timeout-s", type=_positive(float), help="default: dequeuer.batch_timeout_s")
    parser.add_argument("--max-receive-count", type=_positive(int), help="default: queue.max_receive_count")
    parser.add_argument("--grace-s", type=_non_negative, default=DEFAULT_GRACE_S, help="after SIGTERM (default 20)")
    return parser


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port (1-65535)")
    return port


def _path(text: str) -> str:
    if not text.startswith("/"):
        raise argparse.ArgumentTypeError(f"{text!r} must start with '/'")
    return text


def _positive(kind: type[float] | type[int]) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its "invalid <type> value" message
    return parse


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return value


# Built once, on import: a forked dequeuer (services/dequeuer/forkserver.py) finds it built; building it is a third
# of what a forked dequeuer does before it looks at its worker (argparse looks up a translation for each message).
_PARSER = _parser()
