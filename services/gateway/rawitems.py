"""The items of a submission's `item_list` as the client wrote them.

Cortex kept each item as raw JSON (Go's json.RawMessage), so `3.50` reached workers as `3.50`, `1e2` as `1e2` and
`"\\u00e9"` as written, where decoding and encoding again gives `3.5`, `100.0` and `"é"`. Each item keeps its tokens
exactly; only the whitespace between them goes, as Go's encoder compacts a RawMessage.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from json.scanner import make_scanner
from typing import Any, cast

ITEM_LIST, ITEMS = "item_list", "items"
# (value, end) of the JSON value at an index: the decoder's own scanner, without raw_decode's wrapping. Its stub wants
# a scanner as its context where it takes any decoder, hence the cast.
_SCAN = make_scanner(cast(Any, json.JSONDecoder()))
_WHITESPACE = " \t\n\r"
_SPACE = re.compile(r"[ \t\n\r]*")
_ANY_SPACE = re.compile(r"[ \t\n\r]")
# A string (kept whole, whatever it holds) or a run of anything else but whitespace: joined, a compacted value.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[^ \t\n\r"]+')


def raw_items(body: str) -> list[str] | None:
    """Each element of `body["item_list"]["items"]` as written, compacted; None when there is no such array.

    `body` must be valid JSON (parse it first): nothing here reports errors. As JSON decoders do, the last of two
    equal keys wins.
    """
    found: list[str] | None = None

    def item_list_member(key: str, start: int) -> int:
        nonlocal found
        if key != ITEMS:
            return _value_end(body, start)
        found = None
        if body[start] != "[":
            return _value_end(body, start)
        found, end = _elements(body, start)
        return end

    def top_member(key: str, start: int) -> int:
        nonlocal found
        if key != ITEM_LIST:
            return _value_end(body, start)
        found = None
        return _members(body, start, item_list_member) if body[start] == "{" else _value_end(body, start)

    start = _skip(body, 0)
    if body[start] == "{":
        _members(body, start, top_member)
    return found


def _members(text: str, pos: int, on_member: Callable[[str, int], int]) -> int:
    """Walk the object at text[pos] (`{`): on_member(key, value start) returns where its value ends. The object's
    end."""
    pos = _skip(text, pos + 1)
    if text[pos] == "}":
        return pos + 1
    while True:
        key, pos = _SCAN(text, pos)
        pos = _skip(text, _skip(text, pos) + 1)  # past the colon
        pos = _skip(text, on_member(key, pos))
        if text[pos] == "}":
            return pos + 1
        pos = _skip(text, pos + 1)  # past the comma


def _elements(text: str, pos: int) -> tuple[list[str], int]:
    """Each element of the array at text[pos] (`[`), compacted, and the array's end. The loop of a large submission:
    a scan per element, and a look for whitespace only inside arrays and objects (nowhere else can it be)."""
    elements: list[str] = []
    append, scan = elements.append, _SCAN
    pos = _skip(text, pos + 1)
    if text[pos] == "]":
        return elements, pos + 1
    while True:
        end = scan(text, pos)[1]
        append(compact(text[pos:end]))
        if text[end] in _WHITESPACE:
            end = _skip(text, end)
        if text[end] == "]":
            return elements, end + 1
        pos = end + 1  # past the comma
        if text[pos] == " ":  # most often one space (json.dumps's separator): no call for it
            pos += 1
        if text[pos] in _WHITESPACE:
            pos = _skip(text, pos)


def compact(element: str) -> str:
    """One JSON value as written (valid, without whitespace around it) less the whitespace between its tokens."""
    if element[0] in "[{" and _ANY_SPACE.search(element):
        return "".join(_TOKENS.findall(element))
    return element


def _value_end(text: str, pos: int) -> int:
    return int(_SCAN(text, pos)[1])


def _skip(text: str, pos: int) -> int:
    return _SPACE.match(text, pos).end()  # type: ignore[union-attr]  # matches everywhere, if only ""
