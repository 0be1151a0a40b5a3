"""KubernetesRuntime: each job's workers are the pods of one `batch/v1` Job (see k8s_manifests.py).

The Job controller starts `parallelism` pods and replaces failed ones; evictions, preemptions and drained dequeuers
spend no `backoffLimit` (podFailurePolicy). One watch over the namespace's worker pods keeps every pod's last state in
memory: `workers()` answers from it, and `stop_workers()` waits on it until no pod of the job is left. After a
scheduler restart the first list brings the state back, ended pods included (the Job keeps them until deleted).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from kubernetes.aio import client as k8s
from kubernetes.aio import config as k8s_config

from thresher.core.aiotasks import create_guarded_task
from thresher.core.config import Config
from thresher.core.errors import InvalidRequest, ThresherError, Unavailable
from thresher.core.queue.registry import QUEUE_BACKENDS, queue_backend_entry
from thresher.core.runtime import k8s_manifests as manifests
from thresher.core.runtime.base import Runtime, WorkerLaunch, WorkerState, dequeuer_token
from thresher.core.runtime.k8s_pods import unschedulable_message, unschedulable_since_from, worker_state
from thresher.core.trust import ANY_WORKER

log = logging.getLogger(__name__)
T = TypeVar("T")

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
WATCH_TIMEOUT_S = 240  # the API server ends each watch after this; it is reopened from the last resourceVersion
SYNC_TIMEOUT_S = 30.0  # the first list of pods must come within this, or the runtime is unavailable
STOP_MARGIN_S = 15.0  # after the grace period, how long the Job's garbage collection may take before pods are forced
RETRY_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
_TRANSIENT = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)


@dataclass
class _Pod:
    pod: dict[str, Any]  # the last JSON seen
    deleted: bool = False
    unschedulable_since: float | None = None  # when it was first seen unschedulable


class KubernetesRuntime(Runtime):
    def __init__(self, config: Config, api_client: k8s.ApiClient | None = None) -> None:
        """`api_client`: an API client to use (tests point one at a fake API server); by default one is made from
        `kubernetes.kubeconfig`, else in-cluster credentials, else ~/.kube/config."""
        manifests.check_settings(config)
        self._config = config
        self._api = api_client
        self._owns_api = api_client is None
        self._namespace = config.kubernetes.namespace or _own_namespace()
        self._jobs: dict[str, dict[str, _Pod]] = {}  # job id -> pod name -> its last state
        self._changed = asyncio.Condition()
        self._synced = asyncio.Event()
        self._watch: asyncio.Task[Any] | None = None
        if not queue_backend_entry(config.queue.backend).reachable_from_other_hosts:
            reachable = " or ".join(name for name, entry in QUEUE_BACKENDS.items() if entry.reachable_from_other_hosts)
            log.warning(
                "queue.backend is %s: worker pods cannot reach its queues; use %s on Kubernetes",
                config.queue.backend,
                reachable,
            )
        if not config.results.s3_prefix:
            log.warning("results.s3_prefix is not set: worker pods keep batches' results in their scratch space, lost")

    @property
    def namespace(self) -> str:
        return self._namespace

    async def close(self) -> None:
        """Stop watching and close the API client (workers keep running: they are the cluster's now)."""
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None
        if self._api is not None and self._owns_api:
            await self._api.close()
            self._api = None

    # --- the runtime seam -------------------------------------------------------------------

    async def ensure_workers(self, launch: WorkerLaunch, count: int) -> None:
        """Create the job's Job (and its ConfigMap) unless it exists; the Job controller replaces ended pods."""
        name = manifests.resource_name(launch.api.name, launch.job_id)
        spec_map = manifests.config_map(launch, name, self._namespace)
        token = dequeuer_token(self._config, launch.job_id, ANY_WORKER)
        body = manifests.worker_job(launch, count, name, self._namespace, self._config, time.time(), token)
        await self._started()
        batch, core = await self._batch(), await self._core()
        job = await self._call(partial(batch.read_namespaced_job, name, self._namespace), missing_ok=True)
        if job is not None and not _finished(job):
            if job.spec.parallelism != count:
                patch = {"spec": {"parallelism": count}}
                await self._call(partial(batch.patch_namespaced_job, name, self._namespace, patch))
            return
        if job is not None:
            # A pod succeeded (its dequeuer found no queue: a job ending, or a queue not visible yet) and every pod has
            # ended, yet workers are wanted: a finished Job makes no new pods, so it makes way for a new one.
            log.info("Job %s has finished while its job goes on; replacing it", name)
            delete = partial(batch.delete_namespaced_job, name, self._namespace, propagation_policy="Background")
            await self._call(delete, missing_ok=True)
            # Its ConfigMap too, at once: the garbage collector deletes it in its own time, maybe under the new Job
            await self._call(partial(core.delete_namespaced_config_map, name, self._namespace), missing_ok=True)
        # The ConfigMap first, so that pods find their job spec; deleting the Job deletes it (owner reference).
        # The client takes a manifest as a dict as well as a model object, which its annotations do not say.
        create_map = partial(core.create_namespaced_config_map, self._namespace, spec_map)  # type: ignore[arg-type]
        await self._call(create_map, exists_ok=True)
        await self._call(partial(batch.create_namespaced_job, self._namespace, body), exists_ok=True)  # type: ignore[arg-type]
        job = await self._call(partial(batch.read_namespaced_job, name, self._namespace))
        if job.metadata.deletion_timestamp:
            raise Unavailable(f"Job {name} is still being deleted; its workers start on the next try")
        owner = manifests.owner_reference(job.metadata.name, job.metadata.uid)
        owned = {"data": spec_map["data"], "metadata": {"ownerReferences": [owner]}}
        await self._call(partial(core.patch_namespaced_config_map, name, self._namespace, owned))
        log.info("created Job %s with %d workers", name, count, extra={"job_id": launch.job_id})

    async def update_job_spec(self, job_id: str, job_spec: dict[str, Any]) -> None:
        core = await self._core()
        patch = {"data": {manifests.SPEC_FILE: manifests.spec_json(job_spec)}}
        for name in await self._names(core.list_namespaced_config_map, job_id):
            await self._call(partial(core.patch_namespaced_config_map, name, self._namespace, patch), missing_ok=True)

    async def workers(self, job_id: str) -> list[WorkerState]:
        await self._started()
        now, stalled_after_s = time.time(), self._config.kubernetes.stalled_after_s
        pods = self._jobs.get(job_id, {}).values()
        return [worker_state(p.pod, p.deleted, now, stalled_after_s, p.unschedulable_since) for p in pods]

    async def stop_workers(self, job_id: str, grace_s: float) -> None:
        """Delete the job's Job (foreground: its pods go first, each with its grace period) and its ConfigMap;
        returns once no pod of the job is left, forcing those still there after the grace period."""
        await self._started()
        batch, core = await self._batch(), await self._core()
        for name in await self._names(batch.list_namespaced_job, job_id):
            delete = partial(batch.delete_namespaced_job, name, self._namespace, propagation_policy="Foreground")
            await self._call(delete, missing_ok=True)
        if not await self._until_no_pod(job_id, time.monotonic() + grace_s + STOP_MARGIN_S):
            log.warning("pods of job %s outlived their grace period; deleting them now", job_id)
            for name in self._live_pods(job_id):
                kill = partial(core.delete_namespaced_pod, name, self._namespace, grace_period_seconds=0)
                await self._call(kill, missing_ok=True)
            if not await self._until_no_pod(job_id, time.monotonic() + STOP_MARGIN_S):
                raise Unavailable(f"pods of job {job_id} are still there: {', '.join(self._live_pods(job_id))}")
        for name in await self._names(core.list_namespaced_config_map, job_id):  # normally gone with its Job
            await self._call(partial(core.delete_namespaced_config_map, name, self._namespace), missing_ok=True)
        self._jobs.pop(job_id, None)  # scale to zero: nothing of the job is kept, not even in memory

    # --- watching the worker pods ---------------------------------------------------------------

    async def _started(self) -> None:
        """Start the watch on first use and wait for its first list of pods."""
        if self._watch is None or self._watch.done():
            self._watch = create_guarded_task(self._watch_forever(), "watch worker pods")
        try:
            await asyncio.wait_for(self._synced.wait(), SYNC_TIMEOUT_S)
        except TimeoutError:
            raise Unavailable(f"cannot list the worker pods of namespace {self._namespace}") from None

    async def _watch_forever(self) -> None:
        failures = 0
        while True:
            try:
                version = await self._relist()
                failures = 0
                while True:  # a watch ends every WATCH_TIMEOUT_S; go on from where it was
                    version = await self._follow(version)
            except (k8s.ApiException, *_TRANSIENT, ValueError) as e:
                delay_s = RETRY_BACKOFF_S[min(failures, len(RETRY_BACKOFF_S) - 1)]
                failures += 1
                log.warning("watching worker pods failed (%s); listing them again in %g s", _describe(e), delay_s)
                await asyncio.sleep(delay_s)

    async def _relist(self) -> str:
        """Replace the known state with a fresh list; pods gone meanwhile are marked deleted."""
        core = await self._core()
        selector = f"{manifests.LABEL_ROLE}={manifests.ROLE_WORKER}"
        listing = await self._raw(
            core.list_namespaced_pod_without_preload_content(self._namespace, label_selector=selector)
        )
        present = set()
        for pod in listing.get("items") or []:
            present.add(pod["metadata"]["name"])
            self._seen(pod, deleted=False)
        for pods in self._jobs.values():
            for name, known in pods.items():
                if name not in present:
                    known.deleted = True
        self._synced.set()
        await self._notify()
        return str((listing.get("metadata") or {}).get("resourceVersion") or "")

    async def _follow(self, version: str) -> str:
        """Apply the watch's events until the server ends it; returns the last resourceVersion."""
        core = await self._core()
        selector = f"{manifests.LABEL_ROLE}={manifests.ROLE_WORKER}"
        response = await core.list_namespaced_pod_without_preload_content(
            self._namespace,
            label_selector=selector,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=version or None,
            timeout_seconds=WATCH_TIMEOUT_S,
            _request_timeout=WATCH_TIMEOUT_S + 30,
        )
        try:
            _check(response.status, "watch pods")
            async for line in response.content:
                if line.strip():
                    version = self._apply(json.loads(line)) or version
                    await self._notify()
        finally:
            response.release()
        return version

    def _apply(self, event: dict[str, Any]) -> str | None:
        kind, pod = event.get("type"), event.get("object") or {}
        if kind == "ERROR":  # e.g. 410 Gone: our resourceVersion is too old; list again
            raise k8s.ApiException(status=pod.get("code"), reason=pod.get("message"))
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._seen(pod, deleted=kind == "DELETED")
        return (pod.get("metadata") or {}).get("resourceVersion")

    def _seen(self, pod: dict[str, Any], deleted: bool) -> None:
        meta = pod.get("metadata") or {}
        job_id = (meta.get("labels") or {}).get(manifests.LABEL_JOB)
        if not job_id or (meta.get("labels") or {}).get(manifests.LABEL_ROLE) != manifests.ROLE_WORKER:
            return  # the API server filters by label; this guards against one that does not
        known = self._jobs.setdefault(job_id, {}).get(meta["name"])
        if known is None:
            known = self._jobs[job_id][meta["name"]] = _Pod(pod)
        known.pod, known.deleted = pod, deleted
        if unschedulable_message(pod) is None:
            known.unschedulable_since = None
        elif known.unschedulable_since is None:
            known.unschedulable_since = unschedulable_since_from(pod) or time.time()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _live_pods(self, job_id: str) -> list[str]:
        return [name for name, pod in self._jobs.get(job_id, {}).items() if not pod.deleted]

    async def _until_no_pod(self, job_id: str, deadline: float) -> bool:
        """Wait until the watch has seen every pod of the job go, then make sure with a list (a watch may lag)."""
        core = await self._core()
        while time.monotonic() < deadline:
            try:
                async with self._changed:
                    no_pod = self._changed.wait_for(lambda: not self._live_pods(job_id))
                    await asyncio.wait_for(no_pod, deadline - time.monotonic())
            except TimeoutError:
                return False
            listing = await self._raw(
                core.list_namespaced_pod_without_preload_content(
                    self._namespace, label_selector=manifests.job_selector(job_id)
                )
            )
            for pod in listing.get("items") or []:
                self._seen(pod, deleted=False)
            if not listing.get("items"):
                return True
        return False

    # --- API calls ------------------------------------------------------------------------------

    async def _client(self) -> k8s.ApiClient:
        if self._api is None:
            self._api = await _connect(self._config.kubernetes.kubeconfig)
        return self._api

    async def _core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(await self._client())

    async def _batch(self) -> k8s.BatchV1Api:
        return k8s.BatchV1Api(await self._client())

    async def _names(self, list_call: Callable[..., Awaitable[Any]], job_id: str) -> list[str]:
        """Names of the job's objects of one kind, found by label (they outlive a scheduler restart)."""
        found = await self._call(partial(list_call, self._namespace, label_selector=manifests.job_selector(job_id)))
        return [
            item.metadata.name
            for item in found.items
            if (item.metadata.labels or {}).get(manifests.LABEL_JOB) == job_id
        ]

    async def _raw(self, request: Awaitable[Any]) -> dict[str, Any]:
        response = await request
        try:
            _check(response.status, "list pods")
            return dict(json.loads(await response.read()))
        finally:
            response.release()

    async def _call(self, call: Callable[[], Awaitable[T]], missing_ok: bool = False, exists_ok: bool = False) -> Any:
        """One API call, tried again on transient failures; Kubernetes errors become Thresher errors."""
        for attempt, delay_s in enumerate((*RETRY_BACKOFF_S[:3], None)):
            try:
                return await call()
            except k8s.ApiException as e:
                if (missing_ok and e.status == 404) or (exists_ok and e.status == 409):
                    return None
                if delay_s is None or e.status not in (429, 500, 502, 503, 504):
                    raise _translate(e) from e
            except _TRANSIENT as e:
                if delay_s is None:
                    raise Unavailable(f"the Kubernetes API cannot be reached: {_describe(e)}") from e
            log.info("Kubernetes API call failed (attempt %d); trying again in %g s", attempt + 1, delay_s)
            await asyncio.sleep(delay_s)
        raise AssertionError("unreachable")


def _finished(job: Any) -> bool:
    conditions = (job.status.conditions if job.status else None) or []
    return any(c.type == "Complete" and c.status == "True" for c in conditions)


def _check(status: int, what: str) -> None:
    if status >= 400:
        raise k8s.ApiException(status=status, reason=f"{what}: HTTP {status}")


def _translate(e: k8s.ApiException) -> ThresherError:
    message = _describe(e)
    if e.status in (400, 422):
        return InvalidRequest(f"Kubernetes rejected a worker object: {message}")
    if e.status in (401, 403):
        return ThresherError(f"the scheduler may not manage workers (check its RBAC): {message}")
    return Unavailable(f"the Kubernetes API failed: {message}")


def _describe(e: BaseException) -> str:
    if isinstance(e, k8s.ApiException):
        try:
            return f"{e.status}: {json.loads(e.body or '')['message']}"
        except (ValueError, KeyError, TypeError):
            return f"{e.status}: {e.reason}"
    return str(e) or type(e).__name__


def _own_namespace() -> str:
    """In a pod: the namespace the pod runs in; elsewhere: default."""
    try:
        return IN_CLUSTER_NAMESPACE.read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return "default"


async def _connect(kubeconfig: str) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    try:
        if kubeconfig:
            await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        elif IN_CLUSTER_NAMESPACE.exists():
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            await k8s_config.load_kube_config(client_configuration=configuration)
    except (k8s_config.ConfigException, OSError) as e:
        raise Unavailable(f"no Kubernetes credentials (kubernetes.kubeconfig={kubeconfig!r}): {e}") from e
    return k8s.ApiClient(configuration)
