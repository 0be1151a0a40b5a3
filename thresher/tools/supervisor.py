"""`thresher up`: the embedded stack. Each service is its own process on loopback; one that dies is restarted.

Addresses are chosen once at start (port 0 means: pick a free one) and kept across restarts of a service, so
its peers find it again. They are written to <data_dir>/endpoints.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from thresher.core import rpc, trust
from thresher.core.aiotasks import on_stop_signal
from thresher.core.config import Config, config_env
from thresher.core.ports import free_port
from thresher.core.runtime import open_runtime

log = logging.getLogger(__name__)

# Start order: the gateway last, so that it answers only once what it calls is there.
SERVICES = ("monitor", "enqueuer", "scheduler", "gateway")
READY_TIMEOUT_S = 30.0
RESTART_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # after the n-th quick death in a row
STABLE_AFTER_S = 10.0  # a service that ran this long resets its backoff
STOP_GRACE_S = 35.0  # above the scheduler's worker stop grace, so workers are drained first
# The credentials in the settings, by section, and the services that use them (AWS_* variables go to each service
# that uses any: boto3's chain reads them for SQS and S3 alike). The gateway calls only the scheduler.
_CREDENTIALS = {
    "queue": ("THRESHER_QUEUE_SQS_ACCESS_KEY_ID", "THRESHER_QUEUE_SQS_SECRET_ACCESS_KEY"),
    "inputs": ("THRESHER_INPUTS_S3_ACCESS_KEY_ID", "THRESHER_INPUTS_S3_SECRET_ACCESS_KEY"),
}
CREDENTIALS_USED = {
    "monitor": ("queue",),
    "enqueuer": ("queue", "inputs"),
    "scheduler": ("queue", "inputs"),  # and it hands the queue's to the dequeuers it starts
    "gateway": (),
}
PRIVATE_UMASK = 0o077  # what the stack creates (job store, logs, job specs, keys) is its user's alone: 0600, 0700


def make_data_dir_private(data_dir: Path) -> None:
    """The data dir 0700 and everything the stack (and its workers) creates 0600/0700, whatever the caller's umask:
    the umask is inherited by every service and worker. An existing data dir is made private too."""
    os.umask(PRIVATE_UMASK)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)


@dataclass
class _Service:
    name: str
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_deaths: int = 0
    log_file: IO[bytes] | None = field(default=None, repr=False)


class Stack:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.data_dir = Path(config.data_dir).resolve()
        config.data_dir = self.data_dir
        self._services = {name: _Service(name) for name in SERVICES}
        self._stopping = False

    def endpoints(self) -> dict[str, dict[str, str]]:
        a = self.config.addresses
        return {
            "gateway": {"http": f"http://{a.gateway}", "metrics": f"http://{a.gateway_metrics or a.gateway}/metrics"},
            "scheduler": {"grpc": a.scheduler, "metrics": f"http://{a.scheduler_metrics}/metrics"},
            "enqueuer": {"grpc": a.enqueuer, "metrics": f"http://{a.enqueuer_metrics}/metrics"},
            "monitor": {"grpc": a.monitor, "metrics": f"http://{a.monitor_metrics}/metrics"},
        }

    async def start(self) -> None:
        """Make the stack secret at first start, pick addresses, start every service and wait until each answers its
        health check."""
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        trust.ensure_secret(self.config)
        a = self.config.addresses
        for name in (
            "gateway",
            "scheduler",
            "enqueuer",
            "monitor",
            "monitor_metrics",
            "scheduler_metrics",
            "enqueuer_metrics",
            "gateway_metrics",
        ):
            setattr(a, name, _with_free_port(getattr(a, name)))
        path = self.data_dir / "endpoints.json"
        path.write_text(json.dumps(self.endpoints(), indent=2) + "\n", encoding="utf-8")
        for service in self._services.values():
            self._spawn(service)
            await self._wait_ready(service)

    async def supervise(self) -> None:
        """Restart services that die, with a backoff for those that die again quickly, until stop()."""
        while not self._stopping:
            for service in self._services.values():
                code = service.process.poll() if service.process else None
                if code is None or self._stopping:
                    continue
                ran_s = time.monotonic() - service.started
                service.quick_deaths = 0 if ran_s > STABLE_AFTER_S else service.quick_deaths + 1
                delay = RESTART_BACKOFF_S[min(service.quick_deaths, len(RESTART_BACKOFF_S) - 1)]
                log.warning(
                    "%s exited with code %s after %.1f s; restarting in %.1f s", service.name, code, ran_s, delay
                )
                await asyncio.sleep(delay)
                if not self._stopping:
                    self._spawn(service)
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """SIGTERM the services in reverse order; the scheduler stops the workers of unfinished jobs first."""
        self._stopping = True
        for name in reversed(SERVICES):
            service = self._services[name]
            if service.process and service.process.poll() is None:
                service.process.terminate()
                await _wait_exit(service.process, STOP_GRACE_S)
            if service.log_file:
                service.log_file.close()
        if self.config.runtime.backend == "local":
            await self._stop_local_workers()

    async def _stop_local_workers(self) -> None:
        """Workers the scheduler could not stop (it was down, or being restarted, when the stack stopped)."""
        runtime = open_runtime(self.config)
        try:
            for workers in sorted((self.data_dir / "jobs").glob("*/workers.json")):
                await runtime.stop_workers(workers.parent.name, self.config.runtime.stop_grace_s)
        finally:
            await runtime.close()  # its fork server too: nothing outlives `thresher up`

    def _spawn(self, service: _Service) -> None:
        if service.log_file is None:
            service.log_file = open(self.data_dir / "logs" / f"{service.name}.log", "ab")
        service.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{service.name}"],
            env=service_env(service.name, self.config),
            stdin=subprocess.DEVNULL,
            stdout=service.log_file,
            stderr=subprocess.STDOUT,
        )
        service.started = time.monotonic()

    async def _wait_ready(self, service: _Service) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not await self._healthy(service.name):
            if service.process and service.process.poll() is not None:
                raise RuntimeError(f"{service.name} exited at start; see {self.data_dir}/logs/{service.name}.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service.name} did not become ready in {READY_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.05)

    async def _healthy(self, name: str) -> bool:
        if name == "gateway":
            try:
                async with aiohttp.ClientSession() as session:
                    async with session.get(f"http://{self.config.addresses.gateway}/healthz") as response:
                        return response.status == 200
            except aiohttp.ClientError:
                return False
        async with rpc.channel(getattr(self.config.addresses, name), self.config.tls) as channel:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING


def service_env(name: str, config: Config) -> dict[str, str]:
    """The environment of service `name`: this process's (but THRESHER_*), the config, and only the credentials it
    uses: AWS_* variables and the SQS and S3 keys. A service that is broken into holds no other secret."""
    uses = CREDENTIALS_USED[name]
    env = {k: v for k, v in os.environ.items() if not k.startswith("THRESHER_") and (uses or not k.startswith("AWS_"))}
    env.update(config_env(config))
    for section, variables in _CREDENTIALS.items():
        if section not in uses:
            for variable in variables:
                del env[variable]
    return env


def _with_free_port(address: str) -> str:
    """The address, with a free port in place of port 0 ("" stays "": not served apart)."""
    host, _, port = address.rpartition(":")
    if port != "0":
        return address
    return f"{host}:{free_port(host)}"


async def _wait_exit(process: subprocess.Popen[bytes], grace_s: float) -> None:
    deadline = time.monotonic() + grace_s
    while process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if process.poll() is None:
        process.kill()
        process.wait()


async def run_stack(config: Config, on_ready: object = None) -> None:
    """Start the stack, run `on_ready` (a coroutine function taking the Stack) if given, supervise until a signal."""
    stack = Stack(config)
    stop = asyncio.Event()
    on_stop_signal(stop.set)
    try:
        await stack.start()
        if callable(on_ready):
            await on_ready(stack)
        supervisor = asyncio.create_task(stack.supervise())
        await stop.wait()
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
    finally:
        await stack.stop()
