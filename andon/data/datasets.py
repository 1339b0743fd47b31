"""Content-addressed dataset versions: a manifest lists objects (key, sha256, label, metadata);
the sha256 of its canonical JSON is the dataset version id, stored at
``datasets/<plant>/<id>.json``. The same objects always give the same id, whatever order they
were listed in or when the manifest was written.

Example:
    >>> from andon.data.datasets import build_manifest
    >>> m = build_manifest("plant-a", [{"key": "a.png", "sha256": "00", "label": "ok"}], sources=["b1"])
    >>> len(m.id)
    64
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from andon.errors import DataError, ObjectNotFoundError
from andon.storage import ObjectStore, join_key

CONTENT_FIELDS = ("key", "sha256", "label")


@dataclass(frozen=True)
class Manifest:
    plant: str
    id: str
    objects: list[dict[str, Any]]
    sources: list[str]
    created: str = ""
    parents: list[str] = field(default_factory=list)
    # "curated": a training set enriched on purpose (its defect share is not the line's); recorded so
    # that no one mistakes its rates for production's
    purpose: str = "production"

    @property
    def key(self) -> str:
        return manifest_key(self.plant, self.id)

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(str(o.get("label")) for o in self.objects).items()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "plant": self.plant,
            "id": self.id,
            "created": self.created,
            "sources": self.sources,
            "parents": self.parents,
            "purpose": self.purpose,
            "counts": self.counts(),
            "objects": self.objects,
        }


def manifest_key(plant: str, manifest_id: str) -> str:
    return join_key("datasets", plant, f"{manifest_id}.json")


def _canonical(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    clean = []
    for obj in objects:
        missing = [f for f in CONTENT_FIELDS if f not in obj]
        if missing:
            raise DataError(f"manifest object {obj.get('key', '?')} lacks {missing}")
        clean.append({k: _plain(v) for k, v in sorted(obj.items())})
    keys = [o["key"] for o in clean]
    dupes = sorted({k for k in keys if keys.count(k) > 1}) if len(set(keys)) != len(keys) else []
    if dupes:
        raise DataError(f"manifest lists these objects twice: {dupes[:5]}")
    return sorted(clean, key=lambda o: o["key"])


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return value


def build_manifest(
    plant: str,
    objects: list[dict[str, Any]],
    sources: list[str],
    parents: list[str] | None = None,
    purpose: str = "production",
) -> Manifest:
    """The manifest of ``objects``; its id depends on the objects' content fields and metadata only."""
    canonical = _canonical(objects)
    payload = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(payload.encode()).hexdigest()
    return Manifest(
        plant=plant,
        id=digest,
        objects=canonical,
        sources=sorted(sources),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        parents=sorted(parents or []),
        purpose=purpose,
    )


def save_manifest(store: ObjectStore, manifest: Manifest) -> str:
    """Write once: an existing manifest with this id is the same content and is left alone."""
    if not store.exists(manifest.key):
        store.put(manifest.key, json.dumps(manifest.as_dict(), indent=1, default=str).encode(), "application/json")
    return manifest.key


def load_manifest(store: ObjectStore, plant: str, manifest_id: str) -> Manifest:
    try:
        raw = json.loads(store.get(manifest_key(plant, manifest_id)))
    except ObjectNotFoundError:
        raise DataError(
            f"no dataset {manifest_id!r} at plant {plant}; list them with `andon datasets list --plant {plant}`"
        ) from None
    return Manifest(
        plant=raw["plant"],
        id=raw["id"],
        objects=raw["objects"],
        sources=raw.get("sources", []),
        created=raw.get("created", ""),
        parents=raw.get("parents", []),
        purpose=raw.get("purpose", "production"),
    )


def resolve_manifest_id(store: ObjectStore, plant: str, prefix: str) -> str:
    """A full id from a unique prefix (at least 6 characters), like git."""
    if len(prefix) == 64:
        return prefix
    if len(prefix) < 6:
        raise DataError(f"dataset id prefix {prefix!r} is too short: give at least 6 characters")
    matches = [o.key.rsplit("/", 1)[1][:-5] for o in store.list(f"datasets/{plant}/{prefix}")]
    if not matches:
        raise DataError(f"no dataset starting with {prefix!r} at plant {plant}")
    if len(matches) > 1:
        raise DataError(f"dataset id prefix {prefix!r} is ambiguous: {', '.join(m[:12] for m in matches)}")
    return matches[0]


def list_manifests(store: ObjectStore, plant: str) -> list[Manifest]:
    out = [load_manifest(store, plant, o.key.rsplit("/", 1)[1][:-5]) for o in store.list(f"datasets/{plant}/")]
    return sorted(out, key=lambda m: (m.created, m.id))


def status_key(source: str) -> str | None:
    """``<prefix>/<line>/validation/<batch-id>.json`` for a raw batch prefix, else None."""
    head, sep, tail = source.partition("/raw/")
    return f"{head}/validation/{tail.rsplit('/', 1)[-1]}.json" if sep else None


def revoked_sources(store: ObjectStore, manifest: Manifest) -> list[str]:
    """Source batches whose latest gate verdict is no longer "accepted" (re-validated and
    quarantined since): their dataset versions must not train a model."""
    out = []
    for source in manifest.sources:
        key = status_key(source)
        if key and store.exists(key) and json.loads(store.get(key)).get("verdict") != "accepted":
            out.append(source)
    return out


def require_usable(store: ObjectStore, manifest: Manifest) -> Manifest:
    revoked = revoked_sources(store, manifest)
    if revoked:
        raise DataError(
            f"dataset {manifest.id[:12]} includes batch(es) quarantined since it was made: {', '.join(revoked)}; "
            "re-validate or build the training set without them"
        )
    return manifest


def combine(store: ObjectStore, plant: str, manifest_ids: list[str]) -> Manifest:
    """The union of several datasets as a new version (same object twice with two labels: an error)."""
    if not manifest_ids:
        raise DataError("combine needs at least one dataset id")
    merged: dict[str, dict[str, Any]] = {}
    sources: set[str] = set()
    purpose = "production"
    for mid in manifest_ids:
        m = require_usable(store, load_manifest(store, plant, mid))
        sources.update(m.sources)
        purpose = "curated" if m.purpose == "curated" else purpose  # enrichment anywhere: the union is curated
        for obj in m.objects:
            prior = merged.get(obj["key"])
            if prior and (prior["sha256"], prior["label"]) != (obj["sha256"], obj["label"]):
                raise DataError(
                    f"{obj['key']} differs between datasets ({prior['label']} vs {obj['label']}); relabel first"
                )
            merged[obj["key"]] = obj
    manifest = build_manifest(plant, list(merged.values()), sorted(sources), parents=manifest_ids, purpose=purpose)
    save_manifest(store, manifest)
    return manifest


@dataclass
class DatasetDiff:
    added: list[str]
    removed: list[str]
    relabelled: list[tuple[str, str, str]]  # key, old label, new label
    changed_content: list[str]
    counts_a: dict[str, int]
    counts_b: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "removed": self.removed,
            "relabelled": [{"key": k, "from": a, "to": b} for k, a, b in self.relabelled],
            "changed_content": self.changed_content,
            "counts_a": self.counts_a,
            "counts_b": self.counts_b,
        }


def diff(a: Manifest, b: Manifest) -> DatasetDiff:
    ia = {o["key"]: o for o in a.objects}
    ib = {o["key"]: o for o in b.objects}
    both = sorted(set(ia) & set(ib))
    return DatasetDiff(
        added=sorted(set(ib) - set(ia)),
        removed=sorted(set(ia) - set(ib)),
        relabelled=[(k, ia[k]["label"], ib[k]["label"]) for k in both if ia[k]["label"] != ib[k]["label"]],
        changed_content=[k for k in both if ia[k]["sha256"] != ib[k]["sha256"]],
        counts_a=a.counts(),
        counts_b=b.counts(),
    )
