"""The object-store seam's contract, for every store: local files in tmp_path, and S3 on moto's server over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.conftest import AWS_ENV, moto_client
from thresher.core.config import InputSettings
from thresher.core.errors import InvalidRequest
from thresher.core.store import ObjectInfo, ObjectStore, ObjectStores
from thresher.core.store.local import LocalStore
from thresher.core.store.s3 import S3Store
from thresher.core.store.select import FileQuery, matching_files

FILES = {
    "in/a.json": b'{"n": 1}\n',
    "in/b/c.json": b"[1, 2, 3]\n",
    "in/b/d.txt": b"text",
    "input.json": b"0123456789",
    "other/e.json": b"{}",
}


def s3_settings(endpoint: str) -> InputSettings:
    return InputSettings(
        s3_endpoint_url=endpoint,
        s3_region=AWS_ENV["AWS_DEFAULT_REGION"],
        s3_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        s3_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )


class Tree:
    """Where a test's files live (`root` + relative name) and how to add one."""

    def __init__(self, root: str, put: Callable[[str, bytes], None]) -> None:
        self.root = root
        self.put = put

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"


def local_tree(base: Path) -> Tree:
    def put(name: str, data: bytes) -> None:
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    base.mkdir(parents=True, exist_ok=True)
    return Tree(str(base), put)


def s3_tree(endpoint: str, bucket: str = "inputs") -> Tree:
    client = moto_client("s3", endpoint)
    client.create_bucket(Bucket=bucket)
    return Tree(f"s3://{bucket}", lambda name, data: client.put_object(Bucket=bucket, Key=name, Body=data))


@pytest.fixture(params=["local", "s3"])
def store_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(store_name: str, request: pytest.FixtureRequest) -> InputSettings:
    if store_name == "s3":
        return s3_settings(request.getfixturevalue("aws_endpoint"))
    return InputSettings(local_roots="/")  # the trees are in tmp_path


@pytest.fixture
def tree(store_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Tree:
    if store_name == "s3":
        tree = s3_tree(request.getfixturevalue("aws_endpoint"))
    else:
        tree = local_tree(tmp_path / "inputs")
    for name, data in FILES.items():
        tree.put(name, data)
    return tree


@pytest.fixture
async def stores(settings: InputSettings) -> AsyncIterator[ObjectStores]:
    stores = ObjectStores(settings)
    yield stores
    await stores.close()


@pytest.fixture
def store(stores: ObjectStores, tree: Tree) -> ObjectStore:
    return stores.for_path(tree.root)


async def listed(store: ObjectStore, prefix: str) -> list[ObjectInfo]:
    return [info async for info in store.list(prefix)]


async def test_a_prefix_lists_every_file_that_starts_with_it_in_name_order(store: ObjectStore, tree: Tree) -> None:
    assert await listed(store, tree.path("in")) == [
        ObjectInfo(tree.path("in/a.json"), 9),
        ObjectInfo(tree.path("in/b/c.json"), 10),
        ObjectInfo(tree.path("in/b/d.txt"), 4),
        ObjectInfo(tree.path("input.json"), 10),
    ]
    assert [i.path for i in await listed(store, tree.path("in/"))] == [tree.path(n) for n in FILES if n[:3] == "in/"]
    assert [i.path for i in await listed(store, tree.path("in/b/c"))] == [tree.path("in/b/c.json")]
    assert [i.path for i in await listed(store, tree.path("other/e.json"))] == [tree.path("other/e.json")]


async def test_the_whole_store_is_listed_from_its_root(store: ObjectStore, tree: Tree) -> None:
    assert [i.path for i in await listed(store, tree.root + "/")] == [tree.path(name) for name in sorted(FILES)]


async def test_a_prefix_matching_nothing_lists_nothing(store: ObjectStore, tree: Tree) -> None:
    assert await listed(store, tree.path("nothing-here")) == []
    assert await listed(store, tree.path("no/such/dir/")) == []


async def test_a_range_reads_those_bytes_and_less_at_the_end(store: ObjectStore, tree: Tree) -> None:
    path = tree.path("input.json")
    assert await store.read_range(path, 0, 4) == b"0123"
    assert await store.read_range(path, 4, 4) == b"4567"
    assert await store.read_range(path, 8, 4) == b"89"
    assert await store.read_range(path, 10, 4) == b""


async def test_reading_a_missing_file_is_invalid_and_names_it(store: ObjectStore, tree: Tree) -> None:
    with pytest.raises(InvalidRequest, match="in/gone.json"):
        await store.read_range(tree.path("in/gone.json"), 0, 10)


async def test_globs_match_the_full_path_with_slash_as_separator(stores: ObjectStores, tree: Tree) -> None:
    def matching(includes: list[str], excludes: list[str]) -> FileQuery:
        return FileQuery.parse([tree.path("in")], includes, excludes, "file_path_lister")

    async def paths(query: FileQuery) -> list[str]:
        return [info.path async for info in matching_files(stores, query)]

    assert await paths(matching(["**.json"], [])) == [tree.path(n) for n in ("in/a.json", "in/b/c.json", "input.json")]
    assert await paths(matching([f"{tree.root}/in/*.json"], [])) == [tree.path("in/a.json")]
    assert await paths(matching([], ["**/b/**"])) == [tree.path("in/a.json"), tree.path("input.json")]
    assert await paths(matching(["**.{txt,json}"], ["**input*", "**/a.*"])) == [
        tree.path("in/b/c.json"),
        tree.path("in/b/d.txt"),
    ]


async def test_paths_are_listed_in_the_order_given_overlaps_included(stores: ObjectStores, tree: Tree) -> None:
    query = FileQuery.parse([tree.path("other"), tree.path("in/b/"), tree.path("in/b/c")], [], [], "delimited_files")
    assert [info.path async for info in matching_files(stores, query)] == [
        tree.path("other/e.json"),
        tree.path("in/b/c.json"),
        tree.path("in/b/d.txt"),
        tree.path("in/b/c.json"),
    ]


# --- S3 only ------------------------------------------------------------------------------------------------


async def test_s3_folder_markers_are_not_files_and_listing_crosses_pages(aws_endpoint: str) -> None:
    tree = s3_tree(aws_endpoint, "paged")
    tree.put("in/", b"")
    for i in range(7):
        tree.put(f"in/{i}.json", b"{}")
    store = S3Store(s3_settings(aws_endpoint), list_page=3)
    try:
        assert [i.path for i in await listed(store, "s3://paged/in")] == [f"s3://paged/in/{i}.json" for i in range(7)]
    finally:
        await store.close()


async def test_a_missing_bucket_is_invalid_and_named(aws_endpoint: str) -> None:
    store = S3Store(s3_settings(aws_endpoint))
    try:
        with pytest.raises(InvalidRequest, match="s3://no-such-bucket/in: not found in S3"):
            await listed(store, "s3://no-such-bucket/in")
    finally:
        await store.close()


# --- local only -----------------------------------------------------------------------------------------------


async def test_file_urls_list_as_file_urls(tmp_path: Path) -> None:
    tree = local_tree(tmp_path / "t")
    tree.put("a.json", b"1")
    store = LocalStore(["/"])
    assert await listed(store, f"file://{tmp_path}/t/") == [ObjectInfo(f"file://{tmp_path}/t/a.json", 1)]
    assert await store.read_range(f"file://{tmp_path}/t/a.json", 0, 5) == b"1"


@pytest.mark.parametrize("path", ["relative/dir", "file://host/dir", "file:relative"])
async def test_a_local_path_must_be_absolute(path: str) -> None:
    with pytest.raises(InvalidRequest, match="absolute"):
        await listed(LocalStore(["/"]), path)


async def test_local_roots_keep_inputs_inside_them(tmp_path: Path) -> None:
    allowed, secret = local_tree(tmp_path / "allowed"), local_tree(tmp_path / "secret")
    allowed.put("a.json", b"1")
    secret.put("key.json", b"2")
    (tmp_path / "allowed" / "link.json").symlink_to(tmp_path / "secret" / "key.json")
    store = LocalStore([str(tmp_path / "allowed")])

    assert [i.path for i in await listed(store, f"{tmp_path}/")] == [allowed.path("a.json")]
    with pytest.raises(InvalidRequest, match="outside the directories that inputs may read"):
        await listed(store, secret.root)
    with pytest.raises(InvalidRequest, match="outside"):
        await store.read_range(allowed.path("link.json"), 0, 10)


async def test_without_local_roots_no_local_path_is_listed_or_read(tmp_path: Path) -> None:
    # Given the default settings (no inputs.local_roots) and a file any process of this user could read
    tree = local_tree(tmp_path / "t")
    tree.put("a.json", b"1")
    store = ObjectStores(InputSettings()).for_path(tree.root)

    # Then a file source can neither list nor read it, and says how to allow it
    for attempt in (listed(store, tree.root), store.read_range(tree.path("a.json"), 0, 9)):
        with pytest.raises(InvalidRequest, match="local paths are not read here: inputs.local_roots names no"):
            await attempt
