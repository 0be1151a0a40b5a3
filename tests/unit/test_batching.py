"""Cutting inline items into batches."""

from __future__ import annotations

import json

import pytest

from services.enqueuer.batching import batch_count, check_items, chunked, cut_batches
from thresher.core.errors import InvalidRequest
from thresher.core.ids import batch_id, index_width


def items_of(values: list[object]) -> list[bytes]:
    return [json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode() for v in values]


def test_items_are_cut_in_order_with_a_partial_last_batch() -> None:
    batches = list(cut_batches("job", items_of(list(range(7))), 3))

    assert [b.batch_id for b in batches] == ["job-000000", "job-000001", "job-000002"]
    assert [json.loads(b.body) for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]


def test_a_batch_size_larger_than_the_items_makes_one_batch() -> None:
    batches = list(cut_batches("job", items_of(["a", "b"]), 100))

    assert [(b.batch_id, b.body) for b in batches] == [("job-000000", b'["a","b"]')]


def test_no_items_make_no_batches() -> None:
    assert list(cut_batches("job", [], 10)) == []
    assert batch_count(0, 10) == 0


def test_items_are_kept_byte_for_byte() -> None:
    # Whitespace, key order and number spelling that a JSON round trip would change.
    items = [b'{"b": 1,  "a":2}', b"1.50", b"1e3", b'"\\u00e9"', b" [ ] "]

    (batch,) = cut_batches("job", items, 5)

    assert batch.body == b'[{"b": 1,  "a":2},1.50,1e3,"\\u00e9", [ ] ]'
    assert json.loads(batch.body) == [{"b": 1, "a": 2}, 1.5, 1000.0, "é", []]


def test_unicode_items_keep_their_utf8_bytes() -> None:
    items = items_of(["héllo", "日本語", {"emoji": "🙂"}])

    (first, second) = cut_batches("job", items, 2)

    assert first.body == '["héllo","日本語"]'.encode()
    assert json.loads(second.body) == [{"emoji": "🙂"}]


def test_cutting_the_same_items_again_gives_the_same_batches() -> None:
    items = items_of(list(range(25)))

    assert list(cut_batches("j1", items, 4)) == list(cut_batches("j1", items, 4))


def test_batch_ids_sort_in_batch_order_beyond_a_million_batches() -> None:
    width = index_width(1_000_001)
    ids = [batch_id("job", i, width) for i in (0, 9, 999_999, 1_000_000)]

    assert width == 7
    assert ids == ["job-0000000", "job-0000009", "job-0999999", "job-1000000"]
    assert sorted(ids) == ids


def test_a_job_of_a_million_batches_still_uses_six_digits() -> None:
    assert index_width(1_000_000) == 6
    assert index_width(0) == 6


class CountingItems(list[bytes]):
    """A list of items that counts the slices taken of it."""

    slices = 0

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, slice):
            self.slices += 1
        return super().__getitem__(key)


def test_batches_are_made_lazily_one_at_a_time() -> None:
    items = CountingItems(items_of(list(range(100_000))))
    batches = cut_batches("job", items, 1)

    assert next(batches).body == b"[0]"
    assert next(batches).batch_id == "job-000001"
    assert items.slices == 2


@pytest.mark.parametrize("batch_size", [0, -1])
def test_a_batch_size_below_one_is_refused(batch_size: int) -> None:
    with pytest.raises(InvalidRequest, match="batch_size"):
        batch_count(3, batch_size)


def test_an_empty_item_is_refused() -> None:
    with pytest.raises(InvalidRequest, match=r"items\[1\] is empty"):
        check_items([b"1", b"  ", b"2"])


def test_chunks_hold_the_given_number_of_elements_and_the_rest_last() -> None:
    assert list(chunked(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunked([], 3)) == []
