import os
import threading
from pathlib import Path

import pytest

from andon.errors import InvalidKeyError, ObjectNotFoundError, StorageError
from andon.settings import reset_settings
from andon.storage import LocalObjectStore, ObjectStore, join_key, open_store, validate_key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "a/../b",
        "../x",
        "a//b",
        "a/./b",
        "a/",
        "C:/x",
        "a\\b",
        "a/\x00b",
        "x" * 1100,
        "a/.andon-tmp-123",
    ],
)
def test_bad_keys_are_refused(key: str, local_store: LocalObjectStore) -> None:
    with pytest.raises(InvalidKeyError):
        local_store.put(key, b"x")
    with pytest.raises(InvalidKeyError):
        validate_key(key)


def test_good_keys() -> None:
    for key in (
        "a",
        "plant-a/line-1/raw/2026-11-26/b/images/p-1.png",
        "datasets/plant-a/ab12.json",
        "a/b..c",
    ):
        assert validate_key(key) == key
    assert join_key("plant-a/", "/line-1", "raw") == "plant-a/line-1/raw"


def test_put_get_list_exists_copy(local_store: LocalObjectStore) -> None:
    assert isinstance(local_store, ObjectStore)
    info = local_store.put("p/l/raw/d/b/images/x.png", b"\x89PNG")
    assert info.size == 4
    local_store.put("p/l/raw/d/b/metadata.parquet", b"meta")
    local_store.put("p/l2/raw/d/b/metadata.parquet", b"other")
    local_store.put("plant-other/x", b"no")
    assert local_store.get("p/l/raw/d/b/images/x.png") == b"\x89PNG"
    assert [o.key for o in local_store.list("p/l/")] == [
        "p/l/raw/d/b/images/x.png",
        "p/l/raw/d/b/metadata.parquet",
    ]
    assert [o.key for o in local_store.list("p/l")] == [
        "p/l/raw/d/b/images/x.png",
        "p/l/raw/d/b/metadata.parquet",
        "p/l2/raw/d/b/metadata.parquet",
    ]
    assert len(list(local_store.list("p/"))) == 3
    assert len(list(local_store.list(""))) == 4
    assert list(local_store.list("nothing/here/")) == []
    assert local_store.exists("p/l/raw/d/b/metadata.parquet")
    assert not local_store.exists("p/l/raw/d/b")  # a folder is not an object
    local_store.copy("p/l/raw/d/b/metadata.parquet", "p/l/quarantine/b/metadata.parquet")
    assert local_store.get("p/l/quarantine/b/metadata.parquet") == b"meta"
    assert local_store.get("p/l/raw/d/b/metadata.parquet") == b"meta", "copy must leave the source"
    assert local_store.presigned_url("plant-other/x").startswith("file:///")


def test_missing_objects(local_store: LocalObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError, match="no object 'nope'"):
        local_store.get("nope")
    with pytest.raises(FileNotFoundError):  # also the builtin
        local_store.copy("nope", "x")
    with pytest.raises(ObjectNotFoundError):
        local_store.download("nope", Path("/tmp/never"))


def test_overwrite_is_atomic_for_readers(local_store: LocalObjectStore) -> None:
    """A reader racing a writer sees the old or the new object, never a mix or a partial file."""
    old, new = b"A" * 2_000_000, b"B" * 3_000_000
    local_store.put("k/obj", old)
    seen: set[bytes] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            data = local_store.get("k/obj")
            seen.add(data[:1] + str(len(data)).encode())

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(20):
        local_store.put("k/obj", new if i % 2 == 0 else old)
    stop.set()
    reader.join()
    assert seen <= {b"A2000000", b"B3000000"}
    assert not [p for p in os.listdir(local_store.root / "k") if p.startswith(".andon-tmp-")]


def test_failed_write_is_a_storage_error(local_store: LocalObjectStore) -> None:
    local_store.put("d/one", b"1")
    with pytest.raises(StorageError, match="cannot write d/one/two"):
        local_store.put("d/one/two", b"2")  # 'd/one' is an object, not a folder
    assert local_store.get("d/one") == b"1"
    assert [o.key for o in local_store.list("d/")] == ["d/one"]


def test_open_store_by_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(f"file://{tmp_path}/objs")
    assert isinstance(store, LocalObjectStore) and store.root == (tmp_path / "objs").resolve()
    with pytest.raises(StorageError, match="unsupported object store URL"):
        open_store("gs://bucket")
    with pytest.raises(StorageError, match="needs a bucket"):
        open_store("s3://")
    with pytest.raises(StorageError, match="absolute paths"):
        open_store("file://relative/path")
    monkeypatch.setenv("ANDON_OBJECT_STORE_URL", f"file://{tmp_path}/default")
    reset_settings()
    assert open_store().url == f"file://{(tmp_path / 'default').resolve()}"


def test_put_new_stores_only_where_nothing_is_and_one_racer_wins(local_store: LocalObjectStore) -> None:
    """Write-once evidence across processes: ``put_new`` refuses a taken key (a hard link, which
    the file system refuses atomically), and of eight threads racing for one key exactly one
    stores, its bytes whole; no temporary file is left behind."""
    from concurrent.futures import ThreadPoolExecutor

    assert local_store.put_new("e/p1.png", b"first") is True
    assert local_store.put_new("e/p1.png", b"second") is False
    assert local_store.get("e/p1.png") == b"first"
    start = threading.Barrier(8)

    def race(i: int) -> bool:
        start.wait()
        return local_store.put_new("e/p2.png", bytes([i]) * 100_000)

    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(race, range(8)))
    assert won.count(True) == 1
    assert local_store.get("e/p2.png") == bytes([won.index(True)]) * 100_000
    assert sorted(p.name for p in (local_store.root / "e").iterdir()) == ["p1.png", "p2.png"]


def test_put_new_on_a_file_system_without_hard_links_still_refuses_a_taken_key(
    local_store: LocalObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAT, exFAT and some FUSE or SMB mounts refuse ``os.link`` (EPERM / EOPNOTSUPP): the file is
    then created with O_EXCL, still refused when the name is taken."""
    import errno

    import andon.storage

    def no_links(src: str, dst: str) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(andon.storage.os, "link", no_links)
    assert local_store.put_new("e/p1.png", b"first") is True
    assert local_store.put_new("e/p1.png", b"second") is False
    assert local_store.get("e/p1.png") == b"first"
    assert [p.name for p in (local_store.root / "e").iterdir()] == ["p1.png"]
