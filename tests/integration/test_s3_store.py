"""The s3:// store over real HTTP against moto's ThreadedMotoServer on 127.0.0.1."""

from __future__ import annotations

import http.client
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from andon.config import load_plant
from andon.data.batches import list_raw_batches, parquet_to_frame, sha256_bytes
from andon.errors import InvalidKeyError, ObjectNotFoundError, StorageError
from andon.settings import reset_settings
from andon.storage import ObjectStore, S3ObjectStore, open_store
from andon.synth.plant import synthesize_plant


def test_put_get_list_exists_copy_presign(s3_store: S3ObjectStore) -> None:
    assert isinstance(s3_store, ObjectStore)
    s3_store.put("plant-a/line-1/raw/d/b/images/p1.png", b"png-bytes", "image/png")
    s3_store.put("plant-a/line-1/raw/d/b/metadata.parquet", b"meta")
    s3_store.put("plant-a/line-2/raw/d/b/metadata.parquet", b"other")
    assert s3_store.get("plant-a/line-1/raw/d/b/images/p1.png") == b"png-bytes"
    assert [o.key for o in s3_store.list("plant-a/line-1/")] == [
        "plant-a/line-1/raw/d/b/images/p1.png",
        "plant-a/line-1/raw/d/b/metadata.parquet",
    ]
    assert s3_store.exists("plant-a/line-2/raw/d/b/metadata.parquet")
    assert not s3_store.exists("plant-a/line-3/nothing")
    info = s3_store.copy("plant-a/line-1/raw/d/b/metadata.parquet", "plant-a/line-1/quarantine/b/metadata.parquet")
    assert info.size == 4 and s3_store.get("plant-a/line-1/raw/d/b/metadata.parquet") == b"meta"
    url = s3_store.presigned_url("plant-a/line-1/raw/d/b/images/p1.png", expires_s=60)
    assert "X-Amz-Signature" in url
    with urllib.request.urlopen(url, timeout=5) as resp:  # a plain HTTP client, no credentials
        assert resp.read() == b"png-bytes"


def test_put_new_is_a_conditional_write(s3_store: S3ObjectStore) -> None:
    """``If-None-Match: *`` over real HTTP: a taken key is refused (412) and left as it was. (That
    two racing writers cannot both win is the store's promise for a conditional write; moto's
    server checks and stores in two steps, so a race against it would test moto.)"""
    assert s3_store.put_new("e/p1.png", b"first", "image/png") is True
    assert s3_store.put_new("e/p1.png", b"second", "image/png") is False
    assert s3_store.get("e/p1.png") == b"first"
    assert s3_store.put_new("e/p2.png", b"other") is True


def test_errors_are_clear(s3_store: S3ObjectStore, s3_endpoint: str) -> None:
    with pytest.raises(ObjectNotFoundError, match="no object 'missing/key'"):
        s3_store.get("missing/key")
    with pytest.raises(ObjectNotFoundError):
        s3_store.copy("missing/key", "x")
    with pytest.raises(InvalidKeyError):
        s3_store.put("../escape", b"x")
    nobucket = S3ObjectStore("no-such-bucket-here", endpoint_url=s3_endpoint, max_attempts=1)
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        nobucket.put("a", b"x")


def test_prefix_and_pagination(s3_endpoint: str) -> None:
    store = S3ObjectStore("paged", prefix="tenant-1", endpoint_url=s3_endpoint)
    store.ensure_bucket()
    for i in range(1105):  # more than one page of list_objects_v2
        store.put(f"p/{i:05d}", b"x")
    keys = [o.key for o in store.list("p/")]
    assert len(keys) == 1105 and keys[0] == "p/00000" and keys[-1] == "p/01104"
    assert store.uri("p/00001") == "s3://paged/tenant-1/p/00001"


class _FlakyProxy(BaseHTTPRequestHandler):
    """Forwards to moto, but answers 503 to the first ``failures`` requests."""

    target: tuple[str, int]
    failures = 0
    seen: list[int]

    def _forward(self) -> None:
        type(self).seen.append(1)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if type(self).failures > 0:
            type(self).failures -= 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        conn = http.client.HTTPConnection(*self.target, timeout=10)
        conn.request(self.command, self.path, body=body, headers=dict(self.headers))
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky_endpoint(s3_endpoint: str) -> Iterator[type[_FlakyProxy]]:
    host, port = s3_endpoint.removeprefix("http://").split(":")
    handler = type("Handler", (_FlakyProxy,), {"target": (host, int(port)), "failures": 0, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()


def test_transient_errors_are_retried_with_backoff(flaky_endpoint: type[_FlakyProxy], s3_endpoint: str) -> None:
    S3ObjectStore("flaky", endpoint_url=s3_endpoint).ensure_bucket()
    store = S3ObjectStore("flaky", endpoint_url=flaky_endpoint.url, max_attempts=4)  # type: ignore[attr-defined]
    flaky_endpoint.failures = 2
    store.put("k", b"survives two 503s")
    assert len(flaky_endpoint.seen) == 3, "two failures, then success"
    assert store.get("k") == b"survives two 503s"

    impatient = S3ObjectStore("flaky", endpoint_url=flaky_endpoint.url, max_attempts=2)  # type: ignore[attr-defined]
    flaky_endpoint.failures = 5
    with pytest.raises(StorageError, match="S3 get 'k' in s3://flaky failed"):
        impatient.get("k")


def test_synthetic_plant_into_s3_through_settings(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The production configuration: ANDON_OBJECT_STORE_URL=s3://... with an endpoint URL."""
    monkeypatch.setenv("ANDON_OBJECT_STORE_URL", "s3://factory/andon")
    monkeypatch.setenv("ANDON_S3_ENDPOINT_URL", s3_endpoint)
    reset_settings()
    store = open_store()
    assert isinstance(store, S3ObjectStore)
    store.ensure_bucket()
    cfg = load_plant("plant-c")
    batches = synthesize_plant(cfg, store, 40, seed=2, start=datetime(2026, 11, 4, tzinfo=UTC), workers=1)
    assert list(list_raw_batches(store, cfg)) == batches
    meta = parquet_to_frame(store.get(batches[0].metadata_key))
    assert len(meta) == 40
    assert sha256_bytes(store.get(meta.image_key.iloc[0])) == meta.sha256.iloc[0]
