"""The object store: one small interface over ``file://`` (embedded default) and ``s3://``.

Example:
    >>> from andon.storage import open_store
    >>> store = open_store("file:///tmp/andon-doc-objects")
    >>> store.put("plant-a/line-1/raw/2026-11-26/b1/metadata.json", b"{}").key
    'plant-a/line-1/raw/2026-11-26/b1/metadata.json'

Keys are ``/``-separated relative paths; :func:`validate_key` rejects anything that could
escape the store. Local writes are atomic (temp file + rename in the same folder), so a reader
never sees half an object. S3 calls go through botocore's standard retry mode (exponential
backoff with jitter on throttling, 5xx and connection errors); what still fails after the last
attempt becomes a :class:`~andon.errors.StorageError` naming the operation and key.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlparse

from andon.errors import InvalidKeyError, ObjectNotFoundError, StorageError

MULTIPART_BYTES = 16 * 1024 * 1024  # S3 objects past this move in parts, in parallel, never whole in memory

_TMP_PREFIX = ".andon-tmp-"
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
MAX_KEY_BYTES = 1024


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise :class:`InvalidKeyError`."""
    if not isinstance(key, str) or not key:
        raise InvalidKeyError("object key must be a non-empty string")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"object key longer than {MAX_KEY_BYTES} bytes: {key[:60]}...")
    if key.startswith("/") or re.match(r"^[A-Za-z]:", key):
        raise InvalidKeyError(f"object key must be relative, got {key!r}")
    if _BAD_CHARS.search(key):
        raise InvalidKeyError(f"object key contains a control character or backslash: {key!r}")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts[:-1]) or parts[-1] in ("", ".", ".."):
        raise InvalidKeyError(f"object key has an empty, '.' or '..' segment: {key!r}")
    if any(p.startswith(_TMP_PREFIX) for p in parts):
        raise InvalidKeyError(f"object key segment may not start with {_TMP_PREFIX!r}: {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """Like :func:`validate_key` but allows ``""`` and a trailing ``/``."""
    if prefix == "":
        return prefix
    validate_key(prefix.rstrip("/") or "x")
    return prefix


def join_key(*parts: str) -> str:
    """Join key parts with ``/`` and validate the result."""
    return validate_key("/".join(p.strip("/") for p in parts if p))


@runtime_checkable
class ObjectStore(Protocol):
    """What every store offers. Implementations: :class:`LocalObjectStore`, :class:`S3ObjectStore`."""

    url: str

    def put(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo: ...
    def put_new(self, key: str, data: bytes, content_type: str | None = None) -> bool: ...
    def put_file(self, key: str, path: Path, content_type: str | None = None) -> ObjectInfo: ...
    def get(self, key: str) -> bytes: ...
    def download(self, key: str, path: Path) -> Path: ...
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...
    def exists(self, key: str) -> bool: ...
    def copy(self, src: str, dst: str) -> ObjectInfo: ...
    def delete(self, key: str) -> None: ...
    def presigned_url(self, key: str, expires_s: int = 3600) -> str: ...
    def uri(self, key: str) -> str: ...


# a file system without hard links (FAT, exFAT, some FUSE and SMB mounts) answers os.link so
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}


def _create_exclusive(source: Path, target: Path) -> bool:
    """Copy ``source`` to a new file ``target`` (False when ``target`` exists): still refused when
    the name is taken, but a reader may see the file before it is whole."""
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_umask())
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    return True


class LocalObjectStore:
    """Objects as files under ``root``; the embedded default (``file://$ANDON_HOME/objects``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _write_atomic(self, key: str, write: Any, exclusive: bool = False) -> ObjectInfo | None:
        """Write to a temporary file, then move it into place in one step (a reader never sees half
        an object). ``exclusive``: link it into place instead, which fails when ``key`` exists:
        returns None then and nothing changes."""
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=target.parent)
            try:
                os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; objects are ordinary files
                with os.fdopen(fd, "wb") as fh:
                    write(fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                if not exclusive:
                    os.replace(tmp, target)
                else:
                    try:
                        os.link(tmp, target)  # atomic, and refused when the name is taken
                    except FileExistsError:
                        return None
                    except OSError as exc:
                        if exc.errno not in _NO_HARD_LINKS:
                            raise
                        if not _create_exclusive(Path(tmp), target):
                            return None
                    finally:
                        Path(tmp).unlink(missing_ok=True)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StorageError(f"cannot write {key} to {self.url}: {exc.strerror or exc}") from exc
        return ObjectInfo(key, target.stat().st_size)

    def put(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
        info = self._write_atomic(key, lambda fh: fh.write(data))
        assert info is not None
        return info

    def put_new(self, key: str, data: bytes, content_type: str | None = None) -> bool:
        """Store ``data`` at ``key`` only if nothing is there (write-once evidence): True when
        stored, False when ``key`` already held an object (left as it was). Two writers racing
        for one key: exactly one gets True."""
        return self._write_atomic(key, lambda fh: fh.write(data), exclusive=True) is not None

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> ObjectInfo:
        with open(path, "rb") as src:
            info = self._write_atomic(key, lambda fh: shutil.copyfileobj(src, fh, 1 << 20))
        assert info is not None
        return info

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(f"no object {key!r} in {self.url}") from None

    def download(self, key: str, path: Path) -> Path:
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFoundError(f"no object {key!r} in {self.url}")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, path)
        return path

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        # walk only the deepest folder the prefix names, then filter by the full prefix
        folder = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not folder.is_dir():
            return
        found = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(_TMP_PREFIX)]
            for name in filenames:
                if name.startswith(_TMP_PREFIX):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(ObjectInfo(key, full.stat().st_size))
        yield from sorted(found, key=lambda o: o.key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def copy(self, src: str, dst: str) -> ObjectInfo:
        source = self._path(src)
        if not source.is_file():
            raise ObjectNotFoundError(f"no object {src!r} in {self.url}")
        return self.put_file(dst, source)

    def presigned_url(self, key: str, expires_s: int = 3600) -> str:
        """A local store has no signing: the ``file://`` URL of the object."""
        if not self.exists(key):
            raise ObjectNotFoundError(f"no object {key!r} in {self.url}")
        return self._path(key).as_uri()

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def delete(self, key: str) -> None:
        """Remove an object (a missing one is fine). Only what rewrites objects without losing a
        row uses it: the prediction log's compaction and retention. Raw data is never deleted."""
        self._path(key).unlink(missing_ok=True)


class S3ObjectStore:
    """Objects in an S3-compatible bucket (AWS, MinIO, Ceph, moto), optionally under a prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        max_attempts: int = 5,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.url = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                config=Config(
                    retries={"max_attempts": max_attempts, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=60,
                    s3={"addressing_style": "path"},
                    signature_version="s3v4",
                ),
            )
        self.client = client

    def _full(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, op: str, key: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(op, key, exc) from exc

    def _error(self, op: str, key: str, exc: Exception) -> StorageError:
        """The Andon error for a failed S3 call (``ObjectNotFoundError`` for a missing key)."""
        from botocore.exceptions import ClientError

        if not isinstance(exc, ClientError):
            return StorageError(f"S3 {op} {key!r} in {self.url} failed after retries: {exc}")
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "404", "NotFound"):
            return ObjectNotFoundError(f"no object {key!r} in {self.url}")
        if code == "NoSuchBucket":
            return StorageError(f"bucket {self.bucket!r} does not exist at {self.endpoint_url or 'AWS'}")
        return StorageError(f"S3 {op} {key!r} in {self.url} failed: {code}: {exc}")

    def ensure_bucket(self) -> None:
        """Create the bucket when it is missing (embedded MinIO, tests)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self._call("create_bucket", "", self.client.create_bucket, Bucket=self.bucket)

    def put(self, key: str, data: bytes, content_type: str | None = None) -> ObjectInfo:
        extra = {"ContentType": content_type} if content_type else {}
        if len(data) > MULTIPART_BYTES:  # parts in parallel, each retried alone
            self._upload(key, lambda: self.client.upload_fileobj(io.BytesIO(data), **self._transfer(key, extra)))
            return ObjectInfo(key, len(data))
        self._call("put", key, self.client.put_object, Bucket=self.bucket, Key=self._full(key), Body=data, **extra)
        return ObjectInfo(key, len(data))

    def put_new(self, key: str, data: bytes, content_type: str | None = None) -> bool:
        """Store ``data`` at ``key`` only if nothing is there: one PUT with ``If-None-Match: *``
        (a conditional write: AWS S3, MinIO and moto refuse it with 412 when the key exists), so
        two writers racing for one key cannot both win. True when stored, False when ``key``
        already held an object (left as it was)."""
        import time

        from botocore.exceptions import BotoCoreError, ClientError

        extra = {"ContentType": content_type} if content_type else {}
        attempt = 0
        while True:
            try:
                self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data, IfNoneMatch="*", **extra)
                return True
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code == "PreconditionFailed":
                    return False
                attempt += 1
                if code != "ConditionalRequestConflict" or attempt == 5:  # 409: another write to it under way
                    raise self._error("put", key, exc) from exc
                time.sleep(0.05 * attempt)
            except BotoCoreError as exc:
                raise self._error("put", key, exc) from exc

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> ObjectInfo:
        """Upload a file streamed from disk (multipart past ``MULTIPART_BYTES``: never whole in memory)."""
        extra = {"ContentType": content_type} if content_type else {}
        size = Path(path).stat().st_size
        self._upload(key, lambda: self.client.upload_file(str(path), **self._transfer(key, extra)))
        return ObjectInfo(key, size)

    def _transfer(self, key: str, extra: dict[str, str]) -> dict[str, Any]:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES)
        return {"Bucket": self.bucket, "Key": self._full(key), "ExtraArgs": extra or None, "Config": config}

    def _upload(self, key: str, fn: Any) -> None:
        from boto3.exceptions import S3UploadFailedError

        try:
            self._call("put", key, fn)
        except S3UploadFailedError as exc:
            raise StorageError(f"S3 put {key!r} in {self.url} failed: {exc}") from exc

    def delete(self, key: str) -> None:
        """Remove an object (see :meth:`LocalObjectStore.delete`; a missing one is fine)."""
        self._call("delete", key, self.client.delete_object, Bucket=self.bucket, Key=self._full(key))

    def get(self, key: str) -> bytes:
        resp = self._call("get", key, self.client.get_object, Bucket=self.bucket, Key=self._full(key))
        body: bytes = resp["Body"].read()
        return body

    def download(self, key: str, path: Path) -> Path:
        """Stream an object to ``path`` (ranged parts in parallel past ``MULTIPART_BYTES``; never
        whole in memory), atomically: a failed transfer leaves no partial file."""
        from boto3.s3.transfer import TransferConfig

        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
        config = TransferConfig(multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES)
        try:
            with os.fdopen(fd, "wb") as fh:
                self._call(
                    "get", key, self.client.download_fileobj, Bucket=self.bucket, Key=self._full(key), Fileobj=fh,
                    Config=config,
                )  # fmt: skip
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        cut = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call("list", prefix, lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=full_prefix)))
        for page in pages:
            for obj in page.get("Contents", []):
                yield ObjectInfo(obj["Key"][cut:], int(obj["Size"]))

    def exists(self, key: str) -> bool:
        try:
            self._call("head", key, self.client.head_object, Bucket=self.bucket, Key=self._full(key))
        except ObjectNotFoundError:
            return False
        return True

    def copy(self, src: str, dst: str) -> ObjectInfo:
        if not self.exists(src):
            raise ObjectNotFoundError(f"no object {src!r} in {self.url}")
        self._call(
            "copy",
            src,
            self.client.copy_object,
            Bucket=self.bucket,
            Key=self._full(dst),
            CopySource={"Bucket": self.bucket, "Key": self._full(src)},
        )
        head = self._call("head", dst, self.client.head_object, Bucket=self.bucket, Key=self._full(dst))
        return ObjectInfo(dst, int(head["ContentLength"]))

    def presigned_url(self, key: str, expires_s: int = 3600) -> str:
        url: str = self._call(
            "presign",
            key,
            self.client.generate_presigned_url,
            ClientMethod="get_object",
            Params={"Bucket": self.bucket, "Key": self._full(key)},
            ExpiresIn=expires_s,
        )
        return url

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"


def open_store(url: str | None = None) -> ObjectStore:
    """The store named by ``url`` (default: the ``ANDON_OBJECT_STORE_URL`` setting)."""
    from andon.settings import get_settings

    settings = get_settings()
    url = url or settings.object_store_url
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"file:// URLs must be absolute paths (file:///...), got {url!r}")
        return LocalObjectStore(Path(parsed.path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StorageError(f"s3:// URL needs a bucket name, got {url!r}")
        return S3ObjectStore(
            parsed.netloc,
            parsed.path,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            max_attempts=settings.s3_max_attempts,
        )
    raise StorageError(f"unsupported object store URL {url!r}: use file:///path or s3://bucket[/prefix]")
