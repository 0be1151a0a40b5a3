"""The services `thresher up` runs are declared once (thresher/tools/services.py), and the declarations match the
tree: every service's program, every address in the settings, every credential a service may be given."""

from __future__ import annotations

import importlib.util
from dataclasses import fields
from pathlib import Path

import pytest

from thresher.core.config import Addresses, Config, InputSettings, QueueSettings, config_env
from thresher.core.dequeuer_args import DEQUEUER_MODULE
from thresher.tools.services import CREDENTIALS, GATEWAY, HTTP, SCHEDULER, SERVICES, Service, service_named
from thresher.tools.supervisor import service_env

ROOT = Path(__file__).resolve().parents[2]


def test_every_service_program_but_the_dequeuer_is_declared_and_each_declared_one_runs() -> None:
    programs = {f"services.{path.parent.name}" for path in (ROOT / "services").glob("*/__main__.py")}
    assert {service.module for service in SERVICES} == programs - {DEQUEUER_MODULE}  # the runtimes start dequeuers
    assert all(importlib.util.find_spec(f"{service.module}.__main__") for service in SERVICES)


def test_every_address_in_the_settings_belongs_to_one_service() -> None:
    # thresher up picks a free port for each address its services declare: one left out would stay at port 0.
    declared = [name for service in SERVICES for name in (service.address, service.metrics_address)]
    assert sorted(declared) == sorted(f.name for f in fields(Addresses))


def test_the_credentials_are_the_variables_of_the_settings_secrets() -> None:
    config = Config(
        queue=QueueSettings(sqs_access_key_id="queue-id", sqs_secret_access_key="queue-secret"),
        inputs=InputSettings(s3_access_key_id="inputs-id", s3_secret_access_key="inputs-secret"),
    )
    secrets = {name for name, value in config_env(config).items() if value.startswith(("queue-", "inputs-"))}
    assert {variable for variables in CREDENTIALS.values() for variable in variables} == secrets
    assert {section for service in SERVICES for section in service.credentials} == set(CREDENTIALS)


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.name)
def test_a_service_is_given_the_credentials_it_declares_and_no_other(service: Service) -> None:
    config = Config(
        queue=QueueSettings(sqs_access_key_id="q", sqs_secret_access_key="queue-secret"),
        inputs=InputSettings(s3_access_key_id="i", s3_secret_access_key="inputs-secret"),
    )
    env = service_env(service, config)
    given = {section for section, variables in CREDENTIALS.items() if all(v in env for v in variables)}
    assert given == set(service.credentials)


def test_the_gateway_is_given_the_inputs_credentials_only_when_it_stages_item_lists_in_s3() -> None:
    config = Config(inputs=InputSettings(s3_access_key_id="i", s3_secret_access_key="inputs-secret"))
    assert "THRESHER_INPUTS_S3_SECRET_ACCESS_KEY" not in service_env(GATEWAY, config)

    config.inputs.staging_s3_prefix = "s3://bucket/staged"

    assert service_env(GATEWAY, config)["THRESHER_INPUTS_S3_SECRET_ACCESS_KEY"] == "inputs-secret"


def test_endpoints_say_where_each_service_serves_and_where_its_metrics_are() -> None:
    config = Config(addresses=Addresses(gateway="127.0.0.1:8888", scheduler="127.0.0.1:7001"))
    config.addresses.scheduler_metrics = "127.0.0.1:7005"
    assert GATEWAY.protocol == HTTP
    # The gateway serves /metrics on its own port unless given one.
    assert GATEWAY.endpoints(config) == {"http": "http://127.0.0.1:8888", "metrics": "http://127.0.0.1:8888/metrics"}
    assert SCHEDULER.endpoints(config) == {"grpc": "127.0.0.1:7001", "metrics": "http://127.0.0.1:7005/metrics"}


def test_an_unknown_service_name_says_which_ones_exist() -> None:
    assert service_named("monitor").module == "services.monitor"
    with pytest.raises(LookupError, match="no service 'dequeuer' \\(known: monitor, enqueuer, scheduler, gateway\\)"):
        service_named("dequeuer")
