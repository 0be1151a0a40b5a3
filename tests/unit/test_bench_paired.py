"""bench/paired.py's own logic: the old code's tree, its APIs file, and the pairs' arithmetic (running the stacks is
the bench's job, not a test's)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from bench.paired import ROOT, export, report, with_env


def test_an_exported_commit_is_its_tree_with_its_protobuf_code_generated_and_compiled(tmp_path: Path) -> None:
    dest = tmp_path / "old"

    export("HEAD", dest)

    committed = subprocess.run(
        ["git", "-C", str(ROOT), "show", "HEAD:services/dequeuer/loop.py"], check=True, capture_output=True
    ).stdout
    assert (dest / "services" / "dequeuer" / "loop.py").read_bytes() == committed
    assert (dest / "thresher" / "v1" / "monitor_pb2.py").exists()
    assert (dest / "thresher" / "v1" / "monitor_pb2_grpc.py").exists()
    assert list((dest / "services" / "dequeuer" / "__pycache__").glob("loop.*.pyc"))


def test_the_old_apis_file_gives_every_container_the_variables_and_keeps_the_rest(tmp_path: Path) -> None:
    apis = tmp_path / "apis.yaml"
    apis.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "bench",
                    "kind": "BatchAPI",
                    "pod": {
                        "port": 8080,
                        "containers": [
                            {"name": "api", "command": ["python", "w.py"], "env": {"A": "1"}},
                            {"name": "side", "command": ["python", "s.py"]},
                        ],
                    },
                }
            ]
        )
    )
    out = tmp_path / "apis-paired.yaml"

    with_env(apis, out, {"PYTHONPATH": "/old"})

    (api,) = yaml.safe_load(out.read_text())
    assert api["name"] == "bench" and api["pod"]["port"] == 8080
    assert [c["env"] for c in api["pod"]["containers"]] == [{"A": "1", "PYTHONPATH": "/old"}, {"PYTHONPATH": "/old"}]
    assert [c["command"] for c in api["pod"]["containers"]] == [["python", "w.py"], ["python", "s.py"]]


def test_the_report_gives_medians_and_the_median_difference_over_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    runs = {
        "old": [{"dequeuer": 0.30, "worker": 0.10}, {"dequeuer": 0.20, "worker": 0.12}, {"dequeuer": 0.40}],
        "new": [{"dequeuer": 0.25, "worker": 0.08}, {"dequeuer": 0.22, "worker": 0.10}, {"dequeuer": 0.30}],
    }

    report(runs)

    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["dequeuer"].split() == [
        "dequeuer",
        "0.300",
        "→",
        "0.250",
        "-0.050",
        "(2",
        "of",
        "3",
        "pairs",
        "lower)",
    ]
    # A process missing from a job (a worker that never started) counts as 0 there.
    assert lines["worker"].split()[1:5] == ["0.100", "→", "0.080", "-0.020"]
    assert lines["total"].split()[1:5] == ["0.400", "→", "0.320", "-0.070"]
