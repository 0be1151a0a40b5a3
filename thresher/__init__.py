"""Thresher: distributed, fault-tolerant batch jobs.

Three audiences, three folders, and an import rule between them (.importlinter):
- ``thresher.worker``: the worker SDK that users import in their Batch APIs; standard library only.
- ``thresher.core``: the building blocks the services share (config, errors, gRPC, trust, queue, store, runtime).
- ``thresher.tools``: the operator's tools (the ``thresher`` CLI, the Python client, the supervisor, the launcher).
``thresher.v1`` holds the gRPC contracts, generated from proto/ by the build.
"""

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, which a worker's start would pay for
if TYPE_CHECKING:
    from thresher.tools.sdk import Client, Job, JobFailed

__all__ = ["Client", "Job", "JobFailed"]


def __getattr__(name: str) -> object:
    """`from thresher import Client` loads the client only then: `import thresher.worker` stays light."""
    if name in ("Client", "Job", "JobFailed"):
        from thresher.tools import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'thresher' has no attribute {name!r}")
