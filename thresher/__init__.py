"""Thresher: distributed, fault-tolerant batch jobs.

Three audiences, three folders, and an import rule between them (.importlinter):
- ``thresher.worker``: the worker SDK that users import in their Batch APIs; standard library only.
- ``thresher.core``: the building blocks the services share (config, errors, gRPC, trust, queue, store, runtime).
- ``thresher.tools``: the operator's tools (the ``thresher`` CLI, its HTTP client, the supervisor, the launcher).
``thresher.v1`` holds the gRPC contracts, generated from proto/ by the build.
"""
