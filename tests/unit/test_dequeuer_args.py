"""The dequeuer's command line is declared once (thresher/core/dequeuer_args.py): what the runtimes write is what the
dequeuer reads, option by option, and the flags on the wire stay those deployed manifests already carry."""

from __future__ import annotations

from dataclasses import fields

import pytest

from services.dequeuer.settings import Settings, parse_args
from thresher.core.config import Config
from thresher.core.dequeuer_args import DEQUEUER_MODULE, DequeuerArgs, flag
from thresher.core.runtime.base import WorkerLaunch, dequeuer_argv
from thresher.v1 import jobs_pb2

# Every option away from its default, so that each one has to travel.
EVERY_OPTION = DequeuerArgs(
    job_id="job-1",
    api_name="api",
    worker_id="job-1-w3",
    queue_name="thresher-job-1",
    worker_port=8123,
    readiness_path="/healthz",
    batch_timeout_s=12.5,
    max_receive_count=4,
    grace_s=7.0,
    results_s3_path="s3://bucket/results",
    idle_s=3.5,
    exit_file="/tmp/w3.exit",
    on_failure="bisect",
)


def test_the_example_sets_every_option_away_from_its_default() -> None:
    # A new option must be added to EVERY_OPTION, so that the tests below carry it too.
    assert [f.name for f in fields(DequeuerArgs) if getattr(EVERY_OPTION, f.name) == f.default] == []


def test_every_option_goes_through_the_command_line_and_back() -> None:
    argv = EVERY_OPTION.to_argv()
    assert [argv[i] for i in range(0, len(argv), 2)] == [flag(f) for f in fields(DequeuerArgs)]
    assert DequeuerArgs.parse(argv) == EVERY_OPTION


def test_the_flags_on_the_wire_are_those_deployed_manifests_carry() -> None:
    assert EVERY_OPTION.to_argv() == [
        "--job-id", "job-1", "--api-name", "api", "--worker-id", "job-1-w3", "--queue", "thresher-job-1",
        "--worker-port", "8123", "--readiness-path", "/healthz", "--batch-timeout-s", "12.5",
        "--max-receive-count", "4", "--grace-s", "7.0", "--results-s3-path", "s3://bucket/results",
        "--idle-s", "3.5", "--exit-file", "/tmp/w3.exit",
        "--on-failure", "bisect",
    ]  # fmt: skip


def test_options_at_their_default_are_left_off_and_read_back_as_the_default() -> None:
    required = DequeuerArgs(job_id="j", api_name="a", worker_id="w", queue_name="q", worker_port=1)
    assert required.to_argv() == [
        "--job-id", "j", "--api-name", "a", "--worker-id", "w", "--queue", "q", "--worker-port", "1",
    ]  # fmt: skip
    assert DequeuerArgs.parse(required.to_argv()) == required


def test_the_dequeuer_s_settings_hold_every_option_it_was_given() -> None:
    settings = parse_args(EVERY_OPTION.to_argv(), Config())
    assert {f.name: getattr(settings, f.name) for f in fields(DequeuerArgs)} == {
        f.name: getattr(EVERY_OPTION, f.name) for f in fields(DequeuerArgs)
    }


def test_options_left_off_take_the_config_s_values() -> None:
    config = Config()
    config.dequeuer.batch_timeout_s, config.queue.max_receive_count = 42.0, 9
    settings = Settings.create(config, job_id="j", api_name="a", worker_id="w", queue_name="q", worker_port=1)
    assert (settings.batch_timeout_s, settings.max_receive_count, settings.readiness_path) == (42.0, 9, None)


def test_a_runtime_s_command_line_is_read_back_as_the_launch_says() -> None:
    api = jobs_pb2.ApiSpec(name="api", readiness_path="/ready")
    launch = WorkerLaunch(
        "job-1", api, "thresher-job-1", {}, max_receive_count=4, batch_timeout_s=12.5, results_s3_path="s3://b/r"
    )
    argv = dequeuer_argv(launch, "job-1-w3", 8123, python="python")
    assert argv[:3] == ["python", "-m", DEQUEUER_MODULE]
    expected = DequeuerArgs(
        "job-1", "api", "job-1-w3", "thresher-job-1", 8123, "/ready", 12.5, 4, results_s3_path="s3://b/r"
    )
    assert DequeuerArgs.parse(argv[3:]) == expected


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--job-id", " ", "argument --job-id: must not be empty"),
        ("--worker-id", "", "argument --worker-id: must not be empty"),
        ("--queue", "", "argument --queue: must not be empty"),
        ("--worker-port", "70000", "argument --worker-port: 70000 is not a TCP port (1-65535)"),
        ("--readiness-path", "healthz", "argument --readiness-path: 'healthz' must start with '/'"),
        ("--batch-timeout-s", "0", "argument --batch-timeout-s: 0 must be greater than 0"),
        ("--max-receive-count", "two", "argument --max-receive-count: invalid int value: 'two'"),
        ("--grace-s", "-1", "argument --grace-s: -1 must not be negative"),
        ("--results-s3-path", "/out", "argument --results-s3-path: '/out' must start with 's3://'"),
    ],
)
def test_a_bad_option_exits_2_naming_it(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = EVERY_OPTION.to_argv()
    argv[argv.index(option) + 1] = value
    with pytest.raises(SystemExit) as exited:
        DequeuerArgs.parse(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
