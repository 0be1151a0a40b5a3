"""YAML files with bounds: an alias bomb or a deeply nested file is refused at once, in one line, by `thresher deploy`
as by every reader of YAML (API definitions, settings)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from thresher.core.errors import InvalidRequest
from thresher.core.yamlfile import load_yaml

pytestmark = pytest.mark.timeout(30)


def alias_bomb(anchors: int = 9, width: int = 9) -> str:
    """Nine anchors nine deep: a few lines whose value has 9^9 strings once each alias is expanded."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, anchors)]
    return "\n".join(lines) + "\n"


def deeply_nested(depth: int = 5000) -> str:
    return "".join(f"{'  ' * i}- \n" if i < depth - 1 else f"{'  ' * i}- x\n" for i in range(depth))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (alias_bomb(), "more than 100000 values once aliases are expanded"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper than 100"),
        (deeply_nested(), "nested deeper than 100"),
        ("&a [1, *a]", "an alias within its own anchor"),
    ],
    ids=["alias bomb", "100,000 nested brackets", "5,000 nested lists", "recursive alias"],
)
def test_a_yaml_bomb_is_refused_in_one_line(text: str, problem: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        load_yaml(text, "apis.yaml")
    assert refused.value.message.startswith("apis.yaml: ") and problem in refused.value.message
    assert "\n" not in refused.value.message


def test_aliases_and_nesting_within_the_bounds_are_read() -> None:
    text = "base: &base {cpu: 1, env: {A: '1'}}\napis: [*base, *base]\ndeep: " + "[" * 50 + "]" * 50
    value = load_yaml(text, "apis.yaml")
    assert value["apis"] == [{"cpu": 1, "env": {"A": "1"}}] * 2


@pytest.mark.parametrize("text", [alias_bomb(), deeply_nested()], ids=["alias bomb", "5,000 nested lists"])
def test_thresher_deploy_refuses_a_yaml_bomb_with_one_line(tmp_path: Path, text: str) -> None:
    # Given an APIs file that is a bomb (the gateway is never reached: nothing listens on port 9)
    path = tmp_path / "apis.yaml"
    path.write_text(text)

    # When `thresher deploy` reads it
    result = subprocess.run(
        [sys.executable, "-m", "thresher.tools.cli", "--url", "http://127.0.0.1:9", "deploy", str(path)],
        capture_output=True,
        text=True,
        timeout=20,
    )

    # Then it stops at once with a one-line error
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error (invalid): {path}: ") and result.stderr.count("\n") == 1, result.stderr
