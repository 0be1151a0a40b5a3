"""The pure parts of staged item lists: JSON Lines read piece by piece, the size rules item by item, the spool."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.enqueuer.sources import cut_input
from services.gateway.jsonlines import ItemLines
from thresher.core.config import Config
from thresher.core.errors import InvalidRequest, ItemSizeExceedsLimit
from thresher.core.itemlists import MAX_ITEM_BYTES, ItemSizes
from thresher.core.results.base import batch_index
from thresher.core.staging import STAGED_DIR, Staging
from thresher.core.store import ObjectStores
from thresher.v1 import jobs_pb2


def read(body: bytes, piece: int) -> tuple[bytes | None, list[bytes]]:
    lines = ItemLines(max_line_bytes=1000)
    items = [item for start in range(0, len(body), piece) for item in lines.feed(body[start : start + piece])]
    return lines.head, items + lines.feed(b"", final=True)


@pytest.mark.parametrize("piece", [1, 3, 1000])
def test_json_lines_give_the_head_then_each_item_as_written_compacted_whatever_the_pieces(piece: int) -> None:
    body = b'{"workers": 1}\n3.50\n\n  1e2 \r\n{"a": [1, "b  c"]}\n"\\u00e9"'  # the last line without its newline

    assert read(body, piece) == (b'{"workers": 1}', [b"3.50", b"1e2", b'{"a":[1,"b  c"]}', b'"\\u00e9"'])


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{}\n1\n2\n{bad\n", "line 4: malformed JSON"),
        (b"{}\n1, 2\n", "line 2: malformed JSON"),
        (b"{}\nNaN\n", "line 2: malformed JSON: NaN is not valid JSON"),
        (b"{}\n1\n" + b"7" * 1001, "line 3: longer than 1000 bytes"),
    ],
)
def test_a_bad_line_is_refused_by_its_number(body: bytes, error: str) -> None:
    with pytest.raises(InvalidRequest, match=error):
        read(body, 7)


def test_item_sizes_name_an_item_too_large_first_then_the_first_batch_over_the_message_limit() -> None:
    sizes = ItemSizes(batch_size=2, max_batch_bytes=10)
    for size in (1, 1, 4, 5, 9, 1):  # batches of 5, 12 and 13 bytes ("[", the items, a comma between, "]")
        sizes.add(size)
    with pytest.raises(InvalidRequest, match="the batch of items 2 to 3 is 12 bytes"):
        sizes.end()

    partial = ItemSizes(batch_size=2, max_batch_bytes=10)
    partial.add(9)
    with pytest.raises(InvalidRequest, match="the batch of items 0 to 0 is 11 bytes"):
        partial.end()

    over = ItemSizes(batch_size=1, max_batch_bytes=10)
    over.add(20)  # a batch over the limit, named only at the end: an item too large comes first
    with pytest.raises(ItemSizeExceedsLimit, match="item 1 has size"):
        over.add(MAX_ITEM_BYTES + 1)
    ItemSizes(batch_size=1, max_batch_bytes=None).add(MAX_ITEM_BYTES)


def test_a_spool_keeps_a_small_list_inline_and_stages_a_large_one_in_the_data_dir(tmp_path: Path) -> None:
    staging = Staging(Config(data_dir=tmp_path))
    small, large = jobs_pb2.ItemList(), jobs_pb2.ItemList()

    spool = staging.spool(ItemSizes(2, None), hold_bytes=6)
    spool.add([b"1", b"22"])  # 5 bytes with their newlines
    asyncio.run(spool.finish(small))
    spool = staging.spool(ItemSizes(2, None), hold_bytes=6)
    spool.add([b"1", b"22"])
    spool.add([b"333"])
    asyncio.run(spool.finish(large))

    assert list(small.items) == [b"1", b"22"] and not small.HasField("staged")
    assert not large.items and large.staged.count == 3 and large.staged.bytes == 9
    assert Path(large.staged.path).read_bytes() == b"1\n22\n333\n"
    assert staging.holds(large.staged.path) and [p.name for p in (tmp_path / STAGED_DIR).iterdir()] == [
        Path(large.staged.path).name
    ], "no part file left"
    assert not staging.holds(str(tmp_path / STAGED_DIR / "../x.jsonl")) and not staging.holds("/etc/passwd")

    asyncio.run(staging.delete(large.staged))
    assert list((tmp_path / STAGED_DIR).iterdir()) == []


def test_where_services_share_no_data_dir_and_no_s3_prefix_is_set_nothing_is_staged(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path)
    config.inputs.stage_in_data_dir = False
    staging = Staging(config)
    spool = staging.spool(ItemSizes(2, None), hold_bytes=0)
    spool.add([b"1", b"22"])
    item_list = jobs_pb2.ItemList()

    asyncio.run(spool.finish(item_list))

    assert list(item_list.items) == [b"1", b"22"] and not (tmp_path / STAGED_DIR).exists()
    assert not staging.holds(f"{staging.location}/{'0' * 32}.jsonl"), "no staged path is taken from a submission"


def test_a_spool_whose_batch_is_over_the_limit_leaves_no_file(tmp_path: Path) -> None:
    staging = Staging(Config(data_dir=tmp_path))
    spool = staging.spool(ItemSizes(2, max_batch_bytes=5), hold_bytes=0)
    spool.add([b"1", b"22", b"3"])

    with pytest.raises(InvalidRequest, match="the batch of items 0 to 1 is 6 bytes"):
        asyncio.run(spool.finish(jobs_pb2.ItemList()))
    assert list((tmp_path / STAGED_DIR).iterdir()) == []


def test_a_staged_list_of_more_than_a_million_batches_has_ids_of_one_width_that_sort_in_batch_order(
    tmp_path: Path,
) -> None:
    config = Config(data_dir=tmp_path)
    staging = Staging(config)
    spool = staging.spool(ItemSizes(1, None), hold_bytes=0)
    count = 1_000_001
    for start in range(0, count, 100_000):
        spool.add([b"%d" % i for i in range(start, min(count, start + 100_000))])
    submission = jobs_pb2.JobSubmission(api_name="a", workers=1, item_list=jobs_pb2.ItemList(batch_size=1))
    asyncio.run(spool.finish(submission.item_list))

    async def ids() -> list[str]:
        cuts = cut_input(submission, "job", ObjectStores(config.inputs), staging, config.inputs.read_chunk_bytes)
        return [cut.batch.batch_id async for cut in cuts]

    found = asyncio.run(ids())
    assert (len(found), found[0], found[-1]) == (count, "job-0000000", "job-1000000")
    assert found == sorted(found) and [batch_index(i) for i in found[:3]] == [0, 1, 2]
