"""The bench's reading of a py-spy profile (bench/profiling.py): the one piece of the bench with logic to check."""

from __future__ import annotations

from pathlib import Path

from bench.profiling import Hotspot, Profile, read_samples

UP = 'process 1:"python -m thresher.tools.cli up --data-dir /tmp/x"'
MONITOR = 'process 2:"python -m services.monitor"'
DEQUEUER = 'process 3:"python -m services.dequeuer --job-id j"'


def test_samples_are_grouped_by_process_and_innermost_thresher_function_leaving_waits_and_imports_apart(
    tmp_path: Path,
) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        f"{UP};{MONITOR};main (services/monitor/__main__.py:12);Ledger.apply (services/monitor/ledger.py:162);"
        "transaction (thresher/core/sqlite.py:46) 30\n"
        f"{UP};{DEQUEUER};main (services/dequeuer/__main__.py:50);EpollSelector.select (selectors.py:468) 50\n"
        f"{UP};{DEQUEUER};<module> (services/dequeuer/__init__.py:3);"
        "_find_and_load (<frozen importlib._bootstrap>:1176) 20\n"
    )
    profile = Profile(batches=10, seconds=1.0)

    read_samples(raw, profile)

    assert (profile.total, profile.waiting) == (100, 50)
    assert profile.by_process == {"monitor": 30, "dequeuer": 20}
    assert profile.hotspots == [
        Hotspot("monitor", "thresher/core/sqlite.py transaction", 30, "thresher/core/sqlite.py:46 transaction"),
        Hotspot("dequeuer", "(start-up: importing modules)", 20, "<frozen importlib._bootstrap>:1176 _find_and_load"),
    ]
    assert profile.ms_per_batch(30) == 30.0  # 30 samples at 100 Hz over 10 batches
