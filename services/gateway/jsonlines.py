"""A JSON Lines body, piece by piece: its first line (the submission) and each later line's item, checked as JSON
(as strictly as a JSON body: submission.parse_json_body) and compacted as rawitems.py keeps an item. Blank lines are
skipped; a line is at most `max_line_bytes` (held whole until its end arrives)."""

from __future__ import annotations

from services.gateway.rawitems import compact
from services.gateway.submission import parse_json_body
from thresher.core.errors import InvalidRequest


class ItemLines:
    def __init__(self, max_line_bytes: int) -> None:
        self._max_line_bytes = max_line_bytes
        self._rest = b""  # a line whose end has not arrived yet
        self._line = 0  # number of the next line, from 1
        self.head: bytes | None = None

    def feed(self, data: bytes, final: bool = False) -> list[bytes]:
        """The items of the lines that `data` ends (with `final`: every line left)."""
        lines = (self._rest + data).split(b"\n")
        self._rest = b"" if final else lines.pop()
        if max(map(len, lines), default=0) > self._max_line_bytes or len(self._rest) > self._max_line_bytes:
            offset = next(i for i, line in enumerate([*lines, self._rest]) if len(line) > self._max_line_bytes)
            raise InvalidRequest(f"line {self._line + offset + 1}: longer than {self._max_line_bytes} bytes")
        first = self._line + 1
        self._line += len(lines)
        if self.head is None and lines:
            self.head = lines.pop(0)
            first += 1
        return _items(lines, first)


def _items(lines: list[bytes], first: int) -> list[bytes]:
    """The items of `lines` (numbered from `first`): one parse of them all, and a line at a time only to find the
    line that fails."""
    numbered = [(number, line.strip()) for number, line in enumerate(lines, first) if line.strip()]
    if not numbered:
        return []
    try:
        values = parse_json_body(b"[" + b",".join(line for _, line in numbered) + b"]")
        whole = len(values) == len(numbered)
    except InvalidRequest:
        whole = False
    if not whole:
        for number, line in numbered:
            try:
                parse_json_body(line)
            except InvalidRequest as e:
                raise InvalidRequest(f"line {number}: {e.message}") from None
    return [compact(line.decode()).encode() for _, line in numbered]
