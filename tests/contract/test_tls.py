"""Mutual TLS on gRPC (`tls.*`): a throwaway CA and certificates, real servers, channels and a service process.

Every server asks its clients for a certificate the CA signed; every client checks the server's the same way. Kubelet
probes cannot show a certificate, so a plaintext port answers the health service, and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests import pki
from tests.helpers import TEST_TRUST, assert_eventually, write_test_secret
from thresher.core import rpc
from thresher.core.config import Config, TlsSettings
from thresher.core.errors import InvalidRequest
from thresher.v1 import enqueuer_pb2, enqueuer_pb2_grpc

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING


class Authority(pki.Authority):
    """The tests' CA, issuing a service's TLS settings: a certificate good as a server and as a client."""

    def settings(self, name: str, trusted_ca: str = "", health_address: str = "") -> TlsSettings:
        cert_file, key_file = self.issue(name)
        return TlsSettings(trusted_ca or str(self.ca_file), str(cert_file), str(key_file), health_address)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("pki"), "thresher-test-ca")


@pytest.fixture(scope="module")
def rogue(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("rogue"), "someone-else-ca")


async def check_health(address: str, tls: TlsSettings, service: str = "") -> int:
    async with rpc.channel(address, tls) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        return int(reply.status)


async def refused(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call()  # type: ignore[misc]
    return caught.value.code()


# --- servers and channels ------------------------------------------------------------------------------------------


async def test_a_client_with_a_certificate_from_the_ca_is_served(ca: Authority) -> None:
    server, port = await rpc.start_server("127.0.0.1:0", [], TEST_TRUST, tls=ca.settings("server"))
    try:
        assert await check_health(f"127.0.0.1:{port}", ca.settings("client")) == SERVING
    finally:
        await server.stop(None)


async def test_a_client_without_a_certificate_from_the_ca_is_refused(ca: Authority, rogue: Authority) -> None:
    server, port = await rpc.start_server("127.0.0.1:0", [], TEST_TRUST, tls=ca.settings("server"))
    address = f"127.0.0.1:{port}"
    try:
        # Without TLS at all
        assert await refused(lambda: check_health(address, TlsSettings())) is grpc.StatusCode.UNAVAILABLE
        # With TLS that trusts the server but shows no certificate of its own
        ca_only = grpc.ssl_channel_credentials(root_certificates=Path(ca.ca_file).read_bytes())
        async with grpc.aio.secure_channel(address, ca_only) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert await refused(lambda: check) is grpc.StatusCode.UNAVAILABLE
        # With a certificate that another CA signed
        intruder = rogue.settings("intruder", trusted_ca=str(ca.ca_file))
        assert await refused(lambda: check_health(address, intruder)) is grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)


async def test_a_client_refuses_a_server_whose_certificate_another_ca_signed(ca: Authority, rogue: Authority) -> None:
    server, port = await rpc.start_server(
        "127.0.0.1:0", [], TEST_TRUST, tls=rogue.settings("impostor", trusted_ca=str(ca.ca_file))
    )
    try:
        code = await refused(lambda: check_health(f"127.0.0.1:{port}", ca.settings("client")))
        assert code is grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)


async def test_probes_get_the_health_service_in_plaintext_on_its_own_port_and_nothing_else(
    ca: Authority, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="thresher.core.rpc")
    server, port = await rpc.start_server(
        "127.0.0.1:0", [], TEST_TRUST, tls=ca.settings("server", health_address="127.0.0.1:0")
    )
    try:
        [health_port] = re.findall(r"plaintext gRPC health checks on port (\d+)", caplog.text)
        probe = f"127.0.0.1:{health_port}"
        assert await check_health(probe, TlsSettings()) == SERVING
        async with rpc.channel(probe, TlsSettings()) as channel:  # reflection is served on the TLS port only
            listing = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
            assert await refused(lambda: listing.read()) is grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(None)

    async def closed_with_its_server() -> None:
        assert await refused(lambda: check_health(probe, TlsSettings())) is grpc.StatusCode.UNAVAILABLE

    await assert_eventually(closed_with_its_server)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (TlsSettings(ca_file="/x/ca.crt"), "cert_file, key_file missing"),
        (TlsSettings("/no/such/ca.crt", "/no/such/tls.crt", "/no/such/tls.key"), "cannot read /no/such/ca.crt"),
    ],
)
def test_incomplete_or_unreadable_tls_settings_are_named(settings: TlsSettings, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        rpc.channel("127.0.0.1:1", settings)


# --- a service process configured by its thresher.yaml ---------------------------------------------------------------


async def test_a_service_configured_for_tls_serves_only_clients_with_a_certificate(
    ca: Authority, tmp_path: Path
) -> None:
    # Given the enqueuer as a process whose thresher.yaml turns TLS on
    server = ca.settings("enqueuer")
    settings = tmp_path / "thresher.yaml"
    settings.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "addresses: {enqueuer: '127.0.0.1:0', enqueuer_metrics: '127.0.0.1:0'}\n"
        f"tls: {{ca_file: {server.ca_file}, cert_file: {server.cert_file}, key_file: {server.key_file},"
        " health_address: '127.0.0.1:0'}\n"
    )
    (tmp_path / "data").mkdir()
    write_test_secret(Config(data_dir=tmp_path / "data"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("THRESHER_")} | {"THRESHER_CONFIG": str(settings)}
    log_path = tmp_path / "enqueuer.log"
    with open(log_path, "wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.enqueuer", cwd=ROOT, env=env, stdout=log, stderr=log
        )
    try:

        def ports() -> tuple[str, str]:
            text = log_path.read_text()
            served, health = re.search(r"listening on [\d.]+:(\d+)", text), re.search(r"checks on port (\d+)", text)
            assert served and health, text
            return served[1], health[1]

        grpc_port, health_port = await assert_eventually(ports, timeout_s=20)
        address = f"127.0.0.1:{grpc_port}"
        # Then a client with a certificate of the CA is served
        client = ca.settings("scheduler")
        async with rpc.channel(address, client) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            reply = await check(health_pb2.HealthCheckRequest(service="thresher.v1.Enqueuer"), timeout=5)
            assert reply.status == SERVING
            # A certificate is not a token: the call itself still needs one
            enqueue = enqueuer_pb2_grpc.EnqueuerStub(channel).Enqueue(
                enqueuer_pb2.EnqueueRequest(job_id="j"), timeout=5
            )
            assert await refused(lambda: enqueue.read()) is grpc.StatusCode.UNAUTHENTICATED
        # And a client without one is not, while probes get its health in plaintext
        assert await refused(lambda: check_health(address, TlsSettings())) is grpc.StatusCode.UNAVAILABLE
        assert await check_health(f"127.0.0.1:{health_port}", TlsSettings(), "thresher.v1.Enqueuer") == SERVING
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 20)
