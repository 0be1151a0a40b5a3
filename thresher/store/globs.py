"""Globs matched against a file's full path with "/" as separator, as Cortex's (gobwas/glob) are.

`*` is any run of characters but "/", `**` any run at all, `?` one character but "/", `[abc]`, `[a-z]` and
`[!abc]` one character of (or not of) a set, `{a,b}` any of the alternatives (which may hold wildcards), and
`\\` takes the next character literally.
"""

from __future__ import annotations

import re


def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression matching what `pattern` matches; ValueError saying why when it is malformed."""
    regex, end = _translate(pattern, 0, in_braces=False)
    if end != len(pattern):  # pragma: no cover - _translate reads to the end outside braces
        raise ValueError(f"unexpected {pattern[end]!r} at {end}")
    return re.compile(regex, re.DOTALL)


def _translate(pattern: str, i: int, in_braces: bool) -> tuple[str, int]:
    out: list[str] = []
    while i < len(pattern):
        c = pattern[i]
        if in_braces and c in ",}":
            break
        if c == "\\":
            if i + 1 == len(pattern):
                raise ValueError("a pattern cannot end with a lone \\")
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif c == "*":
            stars = len(pattern[i:]) - len(pattern[i:].lstrip("*"))
            out.append(".*" if stars > 1 else "[^/]*")
            i += stars
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            chars, i = _char_class(pattern, i)
            out.append(chars)
        elif c == "{":
            alternatives, i = _alternatives(pattern, i)
            out.append(alternatives)
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out), i


def _char_class(pattern: str, i: int) -> tuple[str, int]:
    start = i + 1
    negate = pattern[start : start + 1] in ("!", "^")
    if negate:
        start += 1
    end = pattern.find("]", start)
    if end < 0:
        raise ValueError(f"unclosed [ at {i}")
    if end == start:
        raise ValueError(f"empty [] at {i}")
    body = "".join("\\" + ch if ch in "\\^[]" else ch for ch in pattern[start:end])
    try:
        re.compile(f"[{body}]")
    except re.error as e:
        raise ValueError(f"bad character range at {i}: {e}") from e
    return f"[{'^' if negate else ''}{body}]", end + 1


def _alternatives(pattern: str, i: int) -> tuple[str, int]:
    options: list[str] = []
    position = i + 1
    while True:
        option, position = _translate(pattern, position, in_braces=True)
        options.append(option)
        if position >= len(pattern):
            raise ValueError(f"unclosed {{ at {i}")
        position += 1
        if pattern[position - 1] == "}":
            return "(?:" + "|".join(options) + ")", position
