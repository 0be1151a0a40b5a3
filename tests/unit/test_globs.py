"""Globs on full paths with "/" as separator, as Cortex's file sources match them (gobwas/glob)."""

from __future__ import annotations

import re

import pytest

from thresher.core.store.globs import compile_glob


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("s3://b/*.json", ["s3://b/a.json", "s3://b/.json"], ["s3://b/in/a.json", "s3://b/a.jsonl"]),
        ("s3://b/**.json", ["s3://b/a.json", "s3://b/in/deep/a.json"], ["s3://c/a.json"]),
        ("**/part-?.csv", ["/d/part-1.csv"], ["/d/part-10.csv", "/d/part-/.csv"]),
        ("**/[abc].txt", ["/a.txt", "/x/c.txt"], ["/d.txt", "/ab.txt"]),
        ("**/[!abc].txt", ["/d.txt"], ["/a.txt"]),
        ("**/[a-c]*", ["/x/b-file"], ["/x/d-file"]),
        ("**.{json,jsonl}", ["/a.json", "/b/c.jsonl"], ["/a.txt"]),
        ("/in/{*.json,sub/**}", ["/in/a.json", "/in/sub/x/y.txt"], ["/in/x/a.json"]),
        ("/in/{a,{b,c}d}", ["/in/a", "/in/bd", "/in/cd"], ["/in/b"]),
        (r"/in/\*.json", ["/in/*.json"], ["/in/a.json"]),
        ("/in/a}b,c", ["/in/a}b,c"], []),
        ("/in/a.(x)+", ["/in/a.(x)+"], ["/in/a.xx"]),
    ],
)
def test_a_glob_matches_the_whole_path(pattern: str, matches: list[str], misses: list[str]) -> None:
    regex = compile_glob(pattern)
    assert [p for p in matches if regex.fullmatch(p)] == matches
    assert [p for p in misses if regex.fullmatch(p)] == []


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("**/[abc", "unclosed ["),
        ("a[]", "empty []"),
        ("{a,b", "unclosed {"),
        ("a\\", "lone \\"),
        ("[z-a]", "range"),
        ("*" * 1001, "longer than 1000 characters"),
    ],
)
def test_a_malformed_glob_says_what_is_wrong(pattern: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        compile_glob(pattern)


@pytest.mark.parametrize("wildcards", [8, 40])
def test_a_glob_that_makes_a_regex_backtrack_is_matched_in_one_pass(wildcards: int) -> None:
    # Given the glob that held the scheduler's event loop 23-30 s as a backtracking regex (each extra "?*" about 6x
    # longer): here it must end within the test's timeout however many wildcards it has
    glob = compile_glob("**" + "?*" * wildcards + "Q")

    # When it is matched against names that fail only at their last character, and one that matches
    names = ["a" * 45, "/".join(["abcdefgh"] * 30), "a" * (wildcards + 1) + "Q"]

    # Then the answers are right
    assert [glob.fullmatch(name) for name in names] == [False, False, True]


def test_a_glob_keeps_the_path_separator_rules_in_one_pass() -> None:
    glob = compile_glob("/in/*/{a,b*}?.json")
    assert [glob.fullmatch(p) for p in ("/in/x/a1.json", "/in/x/bzz2.json", "/in/x/y/a1.json", "/in/x/b/.json")] == [
        True,
        True,
        False,
        False,
    ]
