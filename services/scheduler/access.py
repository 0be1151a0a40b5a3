"""Who may call what on the Jobs service: the scopes each method needs, and whose jobs a key may touch.

A `submit` key submits jobs, and reads, stops and retries the ones it submitted; `read` reads every job and API;
`admin` does everything, deploying and deleting APIs and stopping any job included. Without keys everyone is
ANONYMOUS (admin).
"""

from __future__ import annotations

from thresher.core.auth import ADMIN, READ, SUBMIT, Caller
from thresher.core.errors import Forbidden, InvalidRequest

# Any one of these scopes lets a caller call the method; for one job, `check_job` decides as well.
METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    "DeployApi": (ADMIN,),
    "DeleteApi": (ADMIN,),
    "GetApi": (READ,),
    "ListApis": (READ,),
    "SubmitJob": (SUBMIT,),
    "GetJob": (READ, SUBMIT),
    "ListJobs": (READ, SUBMIT),
    "WatchJob": (READ, SUBMIT),
    "GetJobLogs": (READ, SUBMIT),
    "ListFailedBatches": (READ, SUBMIT),
    "StopJob": (SUBMIT,),
    "RetryFailed": (SUBMIT,),
    "ReadResults": (READ, SUBMIT),
    "DeleteResults": (SUBMIT,),
}


def require(caller: Caller, method: str) -> None:
    """Forbidden unless the caller's key has a scope that allows `method`."""
    scopes = METHOD_SCOPES.get(method)
    if scopes is None:
        raise InvalidRequest(f"unknown method {method!r} (known: {', '.join(METHOD_SCOPES)})")
    if not any(caller.has(scope) for scope in scopes):
        raise Forbidden(
            f"{method} needs an API key with the {' or '.join(scopes)} scope;"
            f" key {caller.name!r} has {', '.join(sorted(caller.scopes))}"
        )


def check_job(caller: Caller, job_id: str, owner: str, change: bool = False) -> None:
    """Forbidden unless the caller may read (or, with `change`, stop) the job that `owner`'s key submitted."""
    if caller.has(ADMIN) or caller.name == owner or (caller.has(READ) and not change):
        return
    needed = ADMIN if change else READ
    raise Forbidden(f"job {job_id} was submitted with another API key; this needs a key with the {needed} scope")


def owner_filter(caller: Caller) -> str:
    """The owner whose jobs a listing shows: the caller's own unless its key reads every job ("": all)."""
    return "" if caller.has(READ) else caller.name
