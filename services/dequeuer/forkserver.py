"""`python -m services.dequeuer.forkserver <room>`: how the local runtime starts dequeuers
(thresher/core/forkserver.py).

It imports the dequeuer once, then forks one per worker: each child runs `main` with its request's arguments, under
the command line `python -m services.dequeuer <args>`, so it behaves, exits and shows in `ps` as a dequeuer started
on its own would. Its environment is the server's: the local runtime gives every dequeuer the same one.
"""

from __future__ import annotations

import sys

from services.dequeuer.__main__ import main
from thresher.core.config import load_config
from thresher.core.dequeuer_args import DEQUEUER_MODULE
from thresher.core.errors import ThresherError
from thresher.core.forkserver import run_server, set_command_line
from thresher.core.queue.registry import backend_factory, queue_backend_entry

DEQUEUER_COMMAND = [sys.executable, "-m", DEQUEUER_MODULE]


def _import_queue_backend() -> None:
    """The queue backend's modules (boto3 on SQS: the largest import of all), once for every dequeuer."""
    try:
        backend_factory(queue_backend_entry(load_config().queue.backend))
    except (ThresherError, OSError):  # each dequeuer reports a bad configuration itself
        return


if __name__ == "__main__":
    _import_queue_backend()
    fork = run_server()
    if fork is None:
        sys.exit(0)
    set_command_line([*DEQUEUER_COMMAND, *fork.args])
    sys.exit(main(fork.args))
