"""Item lists into the scheduler's hands without copying them through gRPC: a large list is staged as a file
(thresher/core/staging.py) that the enqueuer reads. Two ways in: the items of a Cortex JSON submission (the body is
parsed whole, within gateway.max_body_bytes) and a job streamed as JSON Lines (POST /v1/apis/<api>/jobs), whose
items are checked and written as they arrive, within gateway.max_upload_bytes.

A submission whose items were staged and that is refused (or is a dry run) leaves no file behind.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from services.gateway.jsonlines import ItemLines
from services.gateway.submission import parse_submission
from thresher.core.config import Config
from thresher.core.errors import InvalidRequest, ItemSizeExceedsLimit, TooLarge
from thresher.core.itemlists import MAX_BATCH_BYTES, ItemSizes
from thresher.core.sources import FILE_SOURCES, SCHEMA_HINT
from thresher.core.staging import ItemSpool, Staging
from thresher.v1 import jobs_pb2

STAGING = web.AppKey("staging", Staging)
READ_BYTES = 256 * 1024  # an upload is read (and its items checked and written) in pieces of at most this size


def _spool(app: web.Application, item_list: jobs_pb2.ItemList, config: Config) -> ItemSpool:
    sizes = ItemSizes(item_list.batch_size, MAX_BATCH_BYTES.get(config.queue.backend))
    return app[STAGING].spool(sizes, config.gateway.stage_items_over_bytes)


async def stage_large_list(app: web.Application, config: Config, submission: jobs_pb2.JobSubmission) -> None:
    """A JSON submission's items: staged when they take more than gateway.stage_items_over_bytes, else kept."""
    item_list = submission.item_list
    small = sum(map(len, item_list.items)) + len(item_list.items) <= config.gateway.stage_items_over_bytes
    if small or not app[STAGING].available:
        return  # the scheduler checks them
    spool = _spool(app, item_list, config)
    items = list(item_list.items)
    item_list.ClearField("items")
    try:
        await asyncio.to_thread(_add, spool, items)
        await spool.finish(item_list)
    finally:
        spool.discard()  # after finish: nothing left to discard


async def read_upload(request: web.Request, config: Config, api_name: str) -> jobs_pb2.JobSubmission:
    """The submission of a JSON Lines body: the first line is a Cortex submission without items (`item_list`, if
    given, with `batch_size` only), each later line one item. Its items are staged as they arrive (or kept, when
    few); InvalidRequest naming the line of a bad item, TooLarge past gateway.max_upload_bytes."""
    upload = _Upload(request.app, config, api_name)
    limit, setting = config.gateway.max_upload_bytes, "gateway.max_upload_bytes"
    if not request.app[STAGING].available:  # the items will travel in messages: as a JSON body's
        limit, setting = config.gateway.max_body_bytes, "gateway.max_body_bytes: nowhere to stage items"
    received = 0
    try:
        while data := await _read(request, config.gateway.read_timeout_s):
            received += len(data)
            if received > limit:
                raise TooLarge(f"request body is larger than {limit} bytes ({setting})")
            await asyncio.to_thread(upload.add, data)
        await asyncio.to_thread(upload.add, b"", True)
        return await upload.finish()
    finally:
        upload.discard()  # after finish: nothing left to discard


def _add(spool: ItemSpool, items: list[bytes]) -> None:
    """As the scheduler says of an inline item too large: a schema error, which says where the schema is."""
    try:
        spool.add(items)
    except ItemSizeExceedsLimit as e:
        raise e.followed_by(SCHEMA_HINT) from e


async def drop_staged(app: web.Application, submission: jobs_pb2.JobSubmission) -> None:
    """Delete the submission's staged file, if any: for a submission refused, or a dry run."""
    if submission.item_list.HasField("staged"):
        await app[STAGING].delete(submission.item_list.staged)


async def _read(request: web.Request, timeout_s: float) -> bytes:
    try:
        async with asyncio.timeout(timeout_s):
            return await request.content.read(READ_BYTES)
    except TimeoutError:
        raise web.HTTPRequestTimeout(reason=f"no more of the request body arrived within {timeout_s:g} s") from None
    except web.RequestPayloadError as e:  # a gzip or deflate body that does not decode: the rest cannot be read
        reason = "the request body does not decode as its Content-Encoding says"
        raise web.HTTPBadRequest(reason=reason, headers={"Connection": "close"}) from e


class _Upload:
    """The state of one upload: its lines, then (once the first line is read) its submission and spool."""

    def __init__(self, app: web.Application, config: Config, api_name: str) -> None:
        self._app, self._config, self._api_name = app, config, api_name
        self._lines = ItemLines(config.gateway.max_body_bytes)
        self._submission: jobs_pb2.JobSubmission | None = None
        self._spool: ItemSpool | None = None

    def add(self, data: bytes, final: bool = False) -> None:
        items = self._lines.feed(data, final)
        if self._spool is None and self._lines.head is not None:
            self._submission = _head(self._api_name, self._lines.head)
            self._spool = _spool(self._app, self._submission.item_list, self._config)
        if self._spool is not None:
            _add(self._spool, items)

    async def finish(self) -> jobs_pb2.JobSubmission:
        if self._submission is None or self._spool is None:
            raise InvalidRequest("request body: empty; its first line is the submission, each later line an item")
        await self._spool.finish(self._submission.item_list)
        return self._submission

    def discard(self) -> None:
        if self._spool is not None:
            self._spool.discard()


def _head(api_name: str, line: bytes) -> jobs_pb2.JobSubmission:
    submission = parse_submission(api_name, line)
    if submission.item_list.items:
        raise InvalidRequest("item_list: items: each item goes on a line of its own, after the submission's line")
    if given := [source for source in FILE_SOURCES if submission.HasField(source)]:
        raise InvalidRequest(f"{given[0]}: a JSON Lines body gives items; submit a file source as JSON")
    submission.item_list.SetInParent()
    return submission
