"""The dequeuer's settings: its command line (who and where it is, thresher/core/dequeuer_args.py) over
thresher.core.config (how it behaves)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from thresher.core.config import Config
from thresher.core.dequeuer_args import DequeuerArgs


@dataclass(frozen=True, kw_only=True)
class Settings(DequeuerArgs):
    """The command line's options, those it left out taken from config, and the rest of config the dequeuer uses."""

    # The two options whose default is in config, always known here:
    batch_timeout_s: float  # limit for one POST of a batch
    max_receive_count: int  # the job's RetryPolicy (thresher/core/retries.py): a batch's failed attempts, at most
    # Config only:
    visibility_s: float  # each extension keeps a batch invisible this long from now
    receive_max: int  # batches per receive call, at most (fewer when batches are slow: see receiving.py)
    wait_s: float  # long-poll wait of one receive call
    readiness_timeout_s: float  # how long the worker may take to become ready
    hook_timeout_s: float  # limit for one /on-job-complete call
    heartbeat_s: float  # how often the monitor hears that this worker is alive
    max_result_bytes: int  # a batch's result (its JSON answer) over this fails the attempt

    @classmethod
    def create(cls, config: Config, **options: Any) -> Settings:
        """Settings for one worker from DequeuerArgs's options (job_id=..., ...); those left out come from `config`."""
        return cls.of(DequeuerArgs(**options), config)

    @classmethod
    def of(cls, args: DequeuerArgs, config: Config) -> Settings:
        """The options a command line gave, over config's values for those it left out."""
        d = config.dequeuer
        defaults: dict[str, Any] = {
            "batch_timeout_s": d.batch_timeout_s,
            "max_receive_count": config.queue.max_receive_count,
        }
        given = {name: value for name, value in dataclasses.asdict(args).items() if value is not None}
        return cls(
            **(defaults | given),
            visibility_s=config.queue.visibility_s,
            receive_max=d.receive_max,
            wait_s=d.wait_s,
            readiness_timeout_s=d.readiness_timeout_s,
            hook_timeout_s=d.hook_timeout_s,
            heartbeat_s=d.heartbeat_s,
            max_result_bytes=config.results.max_batch_bytes,
        )


def parse_args(argv: Sequence[str] | None, config: Config) -> Settings:
    """Read the command line; a bad value exits with status 2 and a message saying which."""
    return Settings.of(DequeuerArgs.parse(argv), config)
