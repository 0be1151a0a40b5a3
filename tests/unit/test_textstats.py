"""The textstats example worker: its functions on a tiny corpus, and the worker process as the runtime starts it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from examples.textstats.make_corpus import job_submission, make_corpus
from examples.textstats.worker import WORD, handle_batch, most_frequent, on_job_complete
from tests.helpers import listening_port
from thresher.core import names
from thresher.core.apis import load_api_file
from thresher.worker import BatchContext, JobContext

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "textstats"
JOB_ID = "job1"


def batch_ctx(config: dict[str, Any], index: int = 0, job_id: str = JOB_ID) -> BatchContext:
    return BatchContext(job_id=job_id, batch_id=f"{job_id}-{index:06d}", attempt=1, config=config)


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    return {"input_dir": str(tmp_path / "in"), "output_dir": str(tmp_path / "out")}


def test_a_batch_writes_one_line_per_document_with_its_stats(tmp_path: Path, config: dict[str, Any]) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("The cat sat.\nThe CAT ran, café!\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("one_two 3 three\n", encoding="utf-8")

    handle_batch(["a.txt", str(tmp_path / "b.txt")], batch_ctx(config))

    a, b = read_lines(tmp_path / "out" / "batches" / "job1-000000.jsonl")
    assert (a["path"], a["words"], a["lines"]) == ("a.txt", 7, 2)
    assert list(a["top_words"].items()) == [("cat", 2), ("the", 2), ("café", 1), ("ran", 1), ("sat", 1)]
    assert (b["words"], b["top_words"]) == (4, {"3": 1, "one": 1, "three": 1, "two": 1})


def test_a_retried_batch_replaces_its_own_output(tmp_path: Path, config: dict[str, Any]) -> None:
    paths = make_corpus(tmp_path / "in", count=5)
    handle_batch(paths, batch_ctx(config))
    first = (tmp_path / "out" / "batches" / "job1-000000.jsonl").read_bytes()

    handle_batch(paths, batch_ctx(config))

    assert os.listdir(tmp_path / "out" / "batches") == ["job1-000000.jsonl"]
    assert (tmp_path / "out" / "batches" / "job1-000000.jsonl").read_bytes() == first
    assert len(read_lines(tmp_path / "out" / "batches" / "job1-000000.jsonl")) == 5


def test_a_missing_document_fails_the_batch_and_writes_nothing(tmp_path: Path, config: dict[str, Any]) -> None:
    paths = make_corpus(tmp_path / "in", count=2)

    with pytest.raises(FileNotFoundError):
        handle_batch([*paths, "missing.txt"], batch_ctx(config))

    assert not (tmp_path / "out" / "batches").exists() or not os.listdir(tmp_path / "out" / "batches")


@pytest.mark.parametrize(
    ("config", "items", "error"),
    [
        ({"output_dir": "out"}, ["/a.txt"], "must be an absolute path"),
        ({}, ["/a.txt"], "needs 'output_dir'"),
        ({"output_dir": "/tmp/x"}, ["a.txt"], "no 'input_dir'"),
        ({"output_dir": "/tmp/x"}, [{"path": "a"}], "must be a document path"),
    ],
)
def test_bad_jobs_fail_with_a_clear_error(config: dict[str, Any], items: list[Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        handle_batch(items, batch_ctx(config))


def test_the_hook_merges_this_jobs_batches_into_a_summary(tmp_path: Path, config: dict[str, Any]) -> None:
    paths = make_corpus(tmp_path / "in", count=25)
    for index in range(3):
        handle_batch(paths[index * 10 : (index + 1) * 10], batch_ctx(config, index))
    handle_batch(paths[:4], batch_ctx(config, 0, job_id="otherjob"))
    hook_summary = {"total_batch_count": 3, "batches": {"succeeded": 3}, "dead_lettered_batch_ids": []}

    on_job_complete(hook_summary, JobContext(job_id=JOB_ID, config=config))

    texts = [(tmp_path / "in" / p).read_text(encoding="utf-8") for p in paths]
    expected = Counter(w for text in texts for w in WORD.findall(text.lower()))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["documents"] == 25 and summary["batch_files"] == 3
    assert summary["words"] == sum(expected.values())
    assert summary["lines"] == sum(len(t.splitlines()) for t in texts)
    assert list(summary["top_words"].items()) == list(most_frequent(expected, 20).items())
    assert len(summary["top_words"]) == 20
    assert summary["hook_summary"] == hook_summary
    assert [f for f in os.listdir(tmp_path / "out") if f.endswith(".tmp")] == []


def test_the_corpus_is_the_same_for_the_same_seed(tmp_path: Path) -> None:
    paths = make_corpus(tmp_path / "a", count=120, seed=3)
    make_corpus(tmp_path / "b", count=120, seed=3)
    make_corpus(tmp_path / "c", count=120, seed=4)

    assert paths[0] == "part-000/doc-000000.txt" and paths[-1] == "part-001/doc-000119.txt"
    assert all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes() for p in paths)
    assert any((tmp_path / "a" / p).read_bytes() != (tmp_path / "c" / p).read_bytes() for p in paths)


def test_the_job_submission_names_the_corpus_and_absolute_folders(tmp_path: Path) -> None:
    job = job_submission(["x.txt"], tmp_path / "in", tmp_path / "out", batch_size=5, workers=3)

    assert job == {
        "workers": 3,
        "item_list": {"items": ["x.txt"], "batch_size": 5},
        "config": {"input_dir": str(tmp_path / "in"), "output_dir": str(tmp_path / "out")},
    }


def test_the_api_file_runs_worker_py_with_a_healthz_readiness_check() -> None:
    (api,) = load_api_file(EXAMPLE / "apis.yaml")

    assert (api.name, list(api.containers[0].command), api.readiness_path) == (
        "textstats",
        ["python", "worker.py"],
        "/healthz",
    )
    assert api.working_dir == str(EXAMPLE)


def test_the_worker_process_serves_batches_and_the_hook(tmp_path: Path, config: dict[str, Any]) -> None:
    paths = make_corpus(tmp_path / "in", count=3)
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({"job_id": JOB_ID, "api_name": "textstats", "config": config}))
    env = os.environ | {names.ENV_PORT: "0", names.ENV_JOB_SPEC: str(spec)}
    command = [sys.executable, "worker.py"]
    with subprocess.Popen(command, cwd=EXAMPLE, env=env, stderr=subprocess.PIPE) as proc:
        try:
            port = listening_port(proc)
            headers = {names.HEADER_JOB_ID: JOB_ID, names.HEADER_BATCH_ID: "job1-000000", names.HEADER_ATTEMPT: "1"}

            assert _call(port, "GET", "/healthz") == 200
            assert _call(port, "POST", "/", paths, headers) == 200
            assert _call(port, "POST", names.HOOK_PATH, {"total_batch_count": 1}) == 200

            summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
            assert summary["documents"] == 3 and summary["job_id"] == JOB_ID
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        finally:
            proc.kill()


def _call(port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()
