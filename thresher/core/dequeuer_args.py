"""The dequeuer's command line, declared once: the runtimes build it (`to_argv`), the dequeuer reads it (`parse`).

Each field of `DequeuerArgs` is one option: `--<field-name>` (unless it names its own flag), how its text is read and
checked, and its help. A field without a default is required; one at its default is left off the command line.
Adding an option is adding a field here; the runtimes that fill it and the dequeuer that uses it see it by name.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from thresher.core.retries import ON_FAILURE_CHOICES

DEQUEUER_MODULE = "services.dequeuer"  # `python -m services.dequeuer <DequeuerArgs.to_argv()>`
DEFAULT_GRACE_S = 20.0  # time a batch in progress gets to finish after SIGTERM (spot termination notice)


def _option(read: Callable[[str], Any], help: str = "", flag: str = "", default: Any = dataclasses.MISSING) -> Any:
    return field(default=default, metadata={"read": read, "help": help, "flag": flag})


def _text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{text} is not a TCP port (1-65535)")
    return port


def _path(text: str) -> str:
    if not text.startswith("/"):
        raise argparse.ArgumentTypeError(f"{text!r} must start with '/'")
    return text


def _s3_path(text: str) -> str:
    if not text.startswith("s3://"):
        raise argparse.ArgumentTypeError(f"{text!r} must start with 's3://'")
    return text


def _positive(kind: type[float] | type[int]) -> Callable[[str], float | int]:
    def read(text: str) -> float | int:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
        return value

    read.__name__ = kind.__name__  # argparse names the type in its "invalid <type> value" message
    return read


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return value


def _on_failure(text: str) -> str:
    if text not in ON_FAILURE_CHOICES:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(ON_FAILURE_CHOICES)}")
    return text


@dataclass(frozen=True)
class DequeuerArgs:
    """Who one worker's dequeuer is and where its worker listens; how it behaves comes from thresher.core.config."""

    job_id: str = _option(_text)
    api_name: str = _option(str)
    worker_id: str = _option(_text)
    queue_name: str = _option(_text, "the job's queue name", flag="--queue")
    worker_port: int = _option(_port)
    readiness_path: str | None = _option(_path, "HTTP GET path that answers 2xx once the worker is ready", default=None)
    batch_timeout_s: float | None = _option(_positive(float), "default: dequeuer.batch_timeout_s", default=None)
    max_receive_count: int | None = _option(_positive(int), "default: queue.max_receive_count", default=None)
    grace_s: float = _option(_non_negative, "after SIGTERM (default 20)", default=DEFAULT_GRACE_S)
    results_s3_path: str | None = _option(_s3_path, "the job's S3 path for results (default: results.*)", default=None)
    idle_s: float | None = _option(
        _positive(float), "exit (code 76) after finding nothing to receive this long (default: never)", default=None
    )
    exit_file: str | None = _option(_path, "write the exit code to this file on the way out", default=None)
    on_failure: str | None = _option(_on_failure, "bisect: split a batch whose attempts are used up", default=None)

    def to_argv(self) -> list[str]:
        """The options after `python -m services.dequeuer`; those at their default are left off."""
        argv: list[str] = []
        for option in fields(DequeuerArgs):  # a subclass's own fields are not options
            value = getattr(self, option.name)
            if value is not None and value != option.default:
                argv += [flag(option), str(value)]
        return argv

    @classmethod
    def parse(cls, argv: Sequence[str] | None) -> DequeuerArgs:
        """Read a command line (None: sys.argv's); a bad one exits with status 2 and a message saying which option."""
        return cls(**vars(_PARSER.parse_args(argv)))


def flag(option: dataclasses.Field[Any]) -> str:
    """The option's flag on the command line: its own, else `--` and the field's name in kebab case."""
    return option.metadata["flag"] or "--" + option.name.replace("_", "-")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {DEQUEUER_MODULE}", description="Thresher's worker sidecar.")
    for option in fields(DequeuerArgs):
        required = option.default is dataclasses.MISSING
        parser.add_argument(
            flag(option),
            dest=option.name,
            type=option.metadata["read"],
            required=required,
            default=None if required else option.default,
            help=option.metadata["help"] or None,
        )
    return parser


# Built once, on import: a forked dequeuer (services/dequeuer/forkserver.py) finds it built; building it is a third
# of what a forked dequeuer does before it looks at its worker (argparse looks up a translation for each message).
_PARSER = _parser()
