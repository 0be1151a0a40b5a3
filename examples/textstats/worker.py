"""textstats: a Thresher worker that computes word statistics of local UTF-8 text documents.

Each item is a document path (relative ones are resolved against the job config's `input_dir`). A batch
writes one JSON line per document to `<output_dir>/batches/<batch_id>.jsonl`; the completion hook merges
this job's batch files into `<output_dir>/summary.json`. Both files are written to a temporary name and
renamed, so a retried batch replaces its own output whole: the worker is idempotent.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from thresher.worker import BatchContext, JobContext, serve

WORD = re.compile(r"[^\W_]+")  # runs of letters and digits, any script
TOP_PER_DOCUMENT = 10
TOP_OVERALL = 20
BATCHES_DIR = "batches"
SUMMARY_FILE = "summary.json"
SAFE_BATCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # it names a file: no separators, no dot files


def document_stats(path: str, text: str) -> dict[str, Any]:
    """Word and line counts of one document, its most frequent words, and every word's count (for merging)."""
    counts = Counter(WORD.findall(text.lower()))
    return {
        "path": path,
        "words": sum(counts.values()),
        "lines": len(text.splitlines()),
        "top_words": most_frequent(counts, TOP_PER_DOCUMENT),
        "word_counts": dict(counts),
    }


def most_frequent(counts: Counter[str], n: int) -> dict[str, int]:
    """The `n` most frequent words and their counts, most frequent first, ties in alphabetical order."""
    return dict(sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:n])


def handle_batch(items: list[Any], ctx: BatchContext) -> list[dict[str, Any]]:
    """Compute the stats of every document of the batch, then write them as one file named after the batch; return
    each document's path, words, lines and top words (the batch's result, which Thresher keeps)."""
    if not SAFE_BATCH_ID.fullmatch(ctx.batch_id):
        raise ValueError(f"cannot name an output file after batch id {ctx.batch_id!r}")
    input_dir = _optional_folder(ctx.config, "input_dir")
    output_dir = _folder(ctx.config, "output_dir")
    lines, result = [], []
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise ValueError(f"item {index} must be a document path (a string), got {type(item).__name__}")
        stats = document_stats(item, _document_path(item, input_dir).read_text(encoding="utf-8"))
        lines.append(json.dumps(stats, ensure_ascii=False) + "\n")
        result.append({key: stats[key] for key in ("path", "words", "lines", "top_words")})
    write_atomic(output_dir / BATCHES_DIR / f"{ctx.batch_id}.jsonl", "".join(lines))
    return result


def on_job_complete(summary: dict[str, Any], ctx: JobContext) -> None:
    """Merge this job's batch files into summary.json, with the counts of the completion hook's summary."""
    output_dir = _folder(ctx.config, "output_dir")
    totals = merge_batches(output_dir / BATCHES_DIR, job_id=ctx.job_id)
    result = {"job_id": ctx.job_id, **totals, "hook_summary": summary}
    write_atomic(output_dir / SUMMARY_FILE, json.dumps(result, ensure_ascii=False, indent=2) + "\n")


def merge_batches(folder: Path, job_id: str = "") -> dict[str, Any]:
    """Totals over the batch files of `job_id` (batch ids start with the job id) or, without one, over all."""
    files = sorted(folder.glob(f"{job_id}-*.jsonl" if job_id else "*.jsonl"))
    documents = words = lines = 0
    counts: Counter[str] = Counter()
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            documents += 1
            words += record["words"]
            lines += record["lines"]
            counts.update(record["word_counts"])
    return {
        "documents": documents,
        "words": words,
        "lines": lines,
        "distinct_words": len(counts),
        "top_words": most_frequent(counts, TOP_OVERALL),
        "batch_files": len(files),
    }


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _optional_folder(config: dict[str, Any], key: str) -> Path | None:
    return None if config.get(key) is None else _folder(config, key)


def _folder(config: dict[str, Any], key: str) -> Path:
    value = config.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"the job config needs {key!r}: an absolute folder path")
    if not os.path.isabs(value):
        # The worker runs in its own folder, not the submitter's: a relative path would point elsewhere.
        raise ValueError(f"the job config's {key!r} must be an absolute path, got {value!r}")
    return Path(value)


def _document_path(item: str, input_dir: Path | None) -> Path:
    path = Path(item)
    if path.is_absolute():
        return path
    if input_dir is None:
        raise ValueError(f"document {item!r} is a relative path but the job config has no 'input_dir'")
    return input_dir / path


if __name__ == "__main__":
    serve(handle_batch, on_job_complete=on_job_complete)
