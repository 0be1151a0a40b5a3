"""Reading a delimited file as a stream of JSON values, range by range, never loading it whole.

Values may be of any JSON type and are separated by any whitespace (JSON Lines, or values spanning lines).
A value cut at a range boundary is carried into the next range; each value is kept byte for byte as written.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from thresher.core.errors import InvalidRequest
from thresher.core.store import ObjectInfo, ObjectStore

MAX_ITEM_BYTES = 250 * 1024  # Cortex's limit: SQS's 256 KiB message less room for attributes

_SPACE = re.compile(r"[ \t\r\n]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
# Inside an array or object: whole strings (skipped), brackets (counted), or a lone quote (a string not ended yet).
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|"|[\[\]{}]', re.DOTALL)
_SCALAR_END = re.compile(r'[ \t\r\n\[\]{}",]')
_SCALAR_ENDS = ' \t\r\n[]{}",'  # the same characters, for a membership test


async def json_values(
    store: ObjectStore, info: ObjectInfo, chunk_bytes: int, max_item_bytes: int = MAX_ITEM_BYTES
) -> AsyncIterator[bytes]:
    """Each JSON value of the file, as its UTF-8 bytes; InvalidRequest naming the file and item on bad content."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()  # a leading byte order mark is not content
    buffer, offset, index, final = "", 0, 0, False
    while not final:
        data = await store.read_range(info.path, offset, chunk_bytes) if offset < info.size else b""
        offset += len(data)
        final = not data or offset >= info.size
        try:
            buffer += decoder.decode(data, final=final)
        except UnicodeDecodeError as e:
            raise InvalidRequest(f"{info.path}: not UTF-8 text (near byte {offset - len(data) + e.start})") from e
        position = 0
        while (found := _whole_value(buffer, position, final)) is not None:
            start, position, checked = found
            yield _item(buffer[start:position], checked, info.path, index, max_item_bytes)
            index += 1
        buffer = buffer[position:].lstrip(" \t\r\n")
        if len(buffer) > max_item_bytes:  # characters: each is at least one byte
            raise InvalidRequest(_too_large(info.path, index, f"more than {max_item_bytes}", max_item_bytes))
    if buffer:
        raise InvalidRequest(f"{info.path}: item {index}: the file ends inside this JSON value")


def _whole_value(buffer: str, position: int, final: bool) -> tuple[int, int, bool] | None:
    """(start, end, whether it is known to be valid JSON) of the next whole value from `position`; None when there
    is none, or it is not all here yet.

    The common case is one call of the C decoder, which finds where a valid value ends. Anything else (a value cut
    by the end of the buffer, invalid JSON) goes the slow way, which tells the two apart.
    """
    start = _SPACE.match(buffer, position).end()  # type: ignore[union-attr] # matches the empty string at worst
    try:
        _, end = _DECODER.raw_decode(buffer, start)
    except ValueError:
        end = 0
    # Not at the end of a range (a number may go on in the next one); and a number or literal must end where the slow
    # way ends it ("12ab" is one invalid value, not 12 then "ab").
    if end < len(buffer):
        if end and (buffer[end] in _SCALAR_ENDS or buffer[start] in '[{"'):
            return start, end, True
    elif end and final:
        return start, end, True
    found = _next_value(buffer, position, final)
    return None if found is None else (*found, False)


def _next_value(buffer: str, position: int, final: bool) -> tuple[int, int] | None:
    """(start, end) of the next whole value from `position`; None when there is none, or it is not all here yet."""
    start = _SPACE.match(buffer, position).end()  # type: ignore[union-attr] # matches the empty string at worst
    if start == len(buffer):
        return None
    first = buffer[start]
    if first in "[{":
        depth = 0
        for token in _TOKEN.finditer(buffer, start):
            text = token.group()
            if text == '"':
                return None
            if text[0] != '"':
                depth += 1 if text in "[{" else -1
                if depth == 0:
                    return start, token.end()
        return None
    if first == '"':
        match = _STRING.match(buffer, start)
        return (start, match.end()) if match else None
    # A number, true, false or null ends at whitespace or punctuation; anything else is caught by the decoder.
    end = _SCALAR_END.search(buffer, start + 1)
    if end is not None:
        return start, end.start()
    return (start, len(buffer)) if final else None


_DECODER: json.JSONDecoder  # set below, once: json.loads would build a decoder per item


def _item(text: str, checked: bool, path: str, index: int, max_item_bytes: int) -> bytes:
    item = text.encode("utf-8")
    if len(item) > max_item_bytes:
        raise InvalidRequest(_too_large(path, index, str(len(item)), max_item_bytes))
    if not checked:
        try:
            _DECODER.decode(text)
        except ValueError as e:
            raise InvalidRequest(f"{path}: item {index}: not valid JSON: {e}") from e
    return item


def _too_large(path: str, index: int, size: str, limit: int) -> str:
    return (
        f"{path}: item {index}: cannot enqueue message because its size of {size} bytes exceeds the {limit} bytes"
        " limit; use a smaller batch size or reduce the size of each of item in the batch"
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
