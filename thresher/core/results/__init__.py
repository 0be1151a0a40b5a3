"""Results: what each batch's worker answered, kept once per batch, read back in batch order (base.py).

The embedded default keeps them under `<data_dir>/results`; with `results.s3_prefix`, in S3 (boto3 is imported only
then). Dequeuers write them, so they must reach the store: an S3 prefix is what workers on other hosts reach.
"""

from __future__ import annotations

from pathlib import Path

from thresher.core.config import Config
from thresher.core.results.base import ResultsSize, ResultStore, StoredResult, batch_index

__all__ = ["ResultStore", "ResultsSize", "StoredResult", "batch_index", "dequeuer_env_prefixes", "open_result_store"]


def open_result_store(config: Config, s3_path: str = "") -> ResultStore:
    """The store of results that go to `s3_path` (a job's own: `"results": {"s3_path": ...}`), else where the
    settings say."""
    if s3_path or config.results.s3_prefix:
        from thresher.core.results.s3 import S3ResultStore

        return S3ResultStore(config.results, s3_path or config.results.s3_prefix)
    from thresher.core.results.local import LocalResultStore

    return LocalResultStore(Path(config.data_dir) / "results")


def dequeuer_env_prefixes(config: Config) -> tuple[str, ...]:
    """The environment variables a dequeuer needs to write results (S3's credentials), when they may go to S3."""
    return ("AWS_",) if config.results.s3_prefix or config.results.job_s3_paths else ()
