"""Write N deterministic text documents for the textstats example, and optionally the job that reads them.

    python make_corpus.py /tmp/corpus --count 200                 # prints the documents' relative paths
    python make_corpus.py /tmp/corpus --count 200 --job /tmp/out  # prints a job submission instead

The same folder, count and seed always give the same documents (random.Random(seed), a fixed word list);
nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

# Frequent words first: a Zipf-like weighting makes a few of them clearly the most frequent.
WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an they "
    "you were her she there one all we their has been if more when will would who so no data batch worker queue "
    "job river mountain forest harvest thresher grain field wheat barley mill wind stone bread farmer season "
    "autumn summer winter spring morning evening light shadow road village market cart horse barn rain sun "
    "cloud storm seed root leaf branch tree garden water well fire smoke iron copper silver gold 2024 1848 42 "
    "café naïve über façade jalapeño smörgåsbord"
).split()
WEIGHTS = [1 / (rank + 1) for rank in range(len(WORDS))]
DOCUMENTS_PER_FOLDER = 100


def make_corpus(folder: str | Path, count: int = 100, seed: int = 7) -> list[str]:
    """Write `count` documents under `folder` (in subfolders of 100); return their paths relative to `folder`."""
    if count < 0:
        raise ValueError(f"count must be at least 0, got {count}")
    rng = random.Random(seed)
    root = Path(folder)
    paths = []
    for index in range(count):
        relative = f"part-{index // DOCUMENTS_PER_FOLDER:03d}/doc-{index:06d}.txt"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_document(rng), encoding="utf-8", newline="\n")
        paths.append(relative)
    return paths


def job_submission(
    paths: list[str], input_dir: str | Path, output_dir: str | Path, batch_size: int = 10, workers: int = 2
) -> dict[str, Any]:
    """The body of `POST /batch/textstats` that processes `paths`."""
    return {
        "workers": workers,
        "item_list": {"items": paths, "batch_size": batch_size},
        "config": {"input_dir": str(Path(input_dir).resolve()), "output_dir": str(Path(output_dir).resolve())},
    }


def _document(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(3, 12)):
        sentences = []
        for _ in range(rng.randint(1, 3)):
            words = rng.choices(WORDS, weights=WEIGHTS, k=rng.randint(4, 12))
            sentences.append(" ".join(words).capitalize() + rng.choice([".", ".", "!", "?"]))
        lines.append(" ".join(sentences))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="where to write the documents")
    parser.add_argument("--count", type=int, default=100, help="number of documents (default 100)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--job", metavar="OUTPUT_DIR", help="print a job submission writing to OUTPUT_DIR")
    parser.add_argument("--batch-size", type=int, default=10, help="documents per batch in the job (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="workers in the job (default 2)")
    args = parser.parse_args(argv)
    paths = make_corpus(args.folder, args.count, args.seed)
    if args.job:
        json.dump(job_submission(paths, args.folder, args.job, args.batch_size, args.workers), sys.stdout, indent=2)
        print()
    else:
        print("\n".join(paths))


if __name__ == "__main__":
    main()
