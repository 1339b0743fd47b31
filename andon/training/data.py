"""Images for training, from dataset manifests: a local cache keyed by content sha256, a
held-out split fixed by the manifest, decoding to the recipe's size.

The split of an object depends only on its key and the recipe seed, so it never changes when
the dataset grows: a part that was in the test split stays there in every later version.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from andon.errors import DataError
from andon.storage import ObjectStore

if TYPE_CHECKING:
    import numpy as np

SPLITS = ("train", "val", "test")


def split_of(key: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """``train`` / ``val`` / ``test`` from a hash of the key: stable as datasets grow."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64
    if h < test_fraction:
        return "test"
    if h < test_fraction + val_fraction:
        return "val"
    return "train"


class ImageCache:
    """Object bytes on local disk under their sha256: downloaded once, verified, shared by runs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def get(self, store: ObjectStore, key: str, sha256: str) -> bytes:
        path = self.path(sha256)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        data = store.get(key)
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise DataError(
                f"{key}: content changed since the dataset was made (sha256 {actual[:12]} != {sha256[:12]})"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return data


def decode_grey(data: bytes, size: int, transform: str = "resize") -> np.ndarray:
    """``uint8 (size, size)`` grey model input: :func:`andon.imaging.model_input`, the one transform."""
    from andon.imaging import model_input

    return model_input(data, size, transform)


@dataclass
class ImageSet:
    """Decoded images of one split, with their manifest rows."""

    images: np.ndarray  # uint8 (N, size, size)
    labels: np.ndarray  # int64 (N,)
    keys: list[str]
    objects: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.keys)


def load_split(
    store: ObjectStore,
    objects: list[dict[str, Any]],
    classes: tuple[str, ...],
    size: int,
    cache: ImageCache,
    workers: int = 4,
    progress: Callable[[int], None] | None = None,
    transform: str = "resize",
) -> ImageSet:
    import numpy as np

    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(o["label"]) for o in objects} - set(index))
    if unknown:
        raise DataError(f"labels {unknown} are not among the recipe's classes {list(classes)}")

    def one(obj: dict[str, Any]) -> np.ndarray:
        img = decode_grey(cache.get(store, obj["key"], obj["sha256"]), size, transform)
        if progress:
            progress(1)
        return img

    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(one, objects))
    return ImageSet(
        images=np.stack(images) if images else np.zeros((0, size, size), np.uint8),
        labels=np.array([index[str(o["label"])] for o in objects], dtype=np.int64),
        keys=[o["key"] for o in objects],
        objects=objects,
    )


def split_objects(
    objects: list[dict[str, Any]], seed: int, val_fraction: float, test_fraction: float
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for obj in objects:
        out[split_of(obj["key"], seed, val_fraction, test_fraction)].append(obj)
    return out
