"""`thresher up`: the embedded stack. Each service (thresher/tools/services.py) is its own process on loopback; one
that dies is restarted.

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
from thresher.tools.services import CREDENTIALS, GRPC, HTTP, SERVICES, Service

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0
RESTART_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # after the n-th quick death in a row
STABLE_AFTER_S = 10.0  # a service that ran this long resets its backoff
STOP_GRACE_S = 35.0  # above the scheduler's worker stop grace, so workers are drained first
PRIVATE_UMASK = 0o077  # what the stack creates (job store, logs, job specs, keys) is its user's alone: 0600, 0700


def make_data_dir_private(data_dir: Path) -> None:
    """The data dir 0700 and everything the stack (and its workers) creates 0600/0700, whatever the caller's umask:
    the umask is inherited by every service and worker. An existing data dir is made private too."""
    os.umask(PRIVATE_UMASK)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)


@dataclass
class _Supervised:
    service: Service
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_deaths: int = 0
    log_file: IO[bytes] | None = field(default=None, repr=False)


class Stack:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.data_dir = Path(config.data_dir).resolve()
        config.data_dir = self.data_dir
        self._supervised = [_Supervised(service) for service in SERVICES]
        self._stopping = False

    def endpoints(self) -> dict[str, dict[str, str]]:
        """Each service's endpoints, the gateway (what users call) first."""
        return {service.name: service.endpoints(self.config) for service in reversed(SERVICES)}

    async def start(self) -> None:
        """Make the stack secret at first start, pick addresses, start every service and wait until each answers its
        health check."""
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        trust.ensure_secret(self.config)
        a = self.config.addresses
        for service in SERVICES:
            for name in (service.address, service.metrics_address):
                setattr(a, name, _with_free_port(getattr(a, name)))
        path = self.data_dir / "endpoints.json"
        path.write_text(json.dumps(self.endpoints(), indent=2) + "\n", encoding="utf-8")
        for supervised in self._supervised:
            self._spawn(supervised)
            await self._wait_ready(supervised)

    async def supervise(self) -> None:
        """Restart services that die, with a backoff for those that die again quickly, until stop()."""
        while not self._stopping:
            for supervised in self._supervised:
                code = supervised.process.poll() if supervised.process else None
                if code is None or self._stopping:
                    continue
                ran_s = time.monotonic() - supervised.started
                supervised.quick_deaths = 0 if ran_s > STABLE_AFTER_S else supervised.quick_deaths + 1
                delay = RESTART_BACKOFF_S[min(supervised.quick_deaths, len(RESTART_BACKOFF_S) - 1)]
                name = supervised.service.name
                log.warning("%s exited with code %s after %.1f s; restarting in %.1f s", name, code, ran_s, delay)
                await asyncio.sleep(delay)
                if not self._stopping:
                    self._spawn(supervised)
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """SIGTERM the services in reverse order; the scheduler stops the workers of unfinished jobs first."""
        self._stopping = True
        for supervised in reversed(self._supervised):
            if supervised.process and supervised.process.poll() is None:
                supervised.process.terminate()
                await _wait_exit(supervised.process, STOP_GRACE_S)
            if supervised.log_file:
                supervised.log_file.close()
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

    def _spawn(self, supervised: _Supervised) -> None:
        service = supervised.service
        if supervised.log_file is None:
            supervised.log_file = open(self.data_dir / "logs" / f"{service.name}.log", "ab")
        supervised.process = subprocess.Popen(
            [sys.executable, "-m", service.module],
            env=service_env(service, self.config),
            stdin=subprocess.DEVNULL,
            stdout=supervised.log_file,
            stderr=subprocess.STDOUT,
        )
        supervised.started = time.monotonic()

    async def _wait_ready(self, supervised: _Supervised) -> None:
        service = supervised.service
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not await _HEALTH_CHECKS[service.protocol](service.endpoint(self.config), self.config):
            if supervised.process and supervised.process.poll() is not None:
                raise RuntimeError(f"{service.name} exited at start; see {self.data_dir}/logs/{service.name}.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service.name} did not become ready in {READY_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.05)


async def _http_healthy(url: str, config: Config) -> bool:
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/healthz") as response:
                return response.status == 200
    except aiohttp.ClientError:
        return False


async def _grpc_healthy(address: str, config: Config) -> bool:
    async with rpc.channel(address, config.tls) as channel:
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            check = stub.Check  # type: ignore[attr-defined]  # the stubs of grpc_health give HealthStub no methods
            reply: health_pb2.HealthCheckResponse = await check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


_HEALTH_CHECKS = {HTTP: _http_healthy, GRPC: _grpc_healthy}  # by protocol: is the service at this endpoint serving?


def service_env(service: Service, config: Config) -> dict[str, str]:
    """The environment of `service`: this process's (but THRESHER_*), the config, and only the credentials it uses:
    AWS_* variables and the SQS and S3 keys. A service that is broken into holds no other secret."""
    uses = service.uses(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("THRESHER_") and (uses or not k.startswith("AWS_"))}
    env.update(config_env(config))
    for section, variables in CREDENTIALS.items():
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
