"""The gate in front of training and scoring: validate a raw batch, then accept it into a
content-addressed dataset version or quarantine it. Raw data is never modified or deleted.

Accept: ``datasets/<plant>/<sha256>.json`` (one row per image: key, sha256, label, metadata).
Quarantine: a copy of the batch under ``<prefix>/<line>/quarantine/<batch-id>/`` with
``result.json`` and ``report.html`` (each failed rule with example rows / files).
Either way a status record ``<prefix>/<line>/validation/<batch-id>.json`` marks the raw batch,
and the HTML report is also kept under ``reports/<plant>/validation/``.

``batch.json`` is input like any other: its line, date, batch id and prefix must be the folder it
lies in (``<prefix>/<line>/raw/<date>/<batch-id>``), and every key the gate writes is built from
that folder, never from the file. A batch.json that disagrees, cannot be read, or a batch id
already used by another batch of the line is quarantined with the reason recorded. A verdict
never overwrites another batch's status record or quarantine copy.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from andon.data.batches import BatchInfo, parquet_to_frame, read_batch_info
from andon.data.datasets import Manifest, build_manifest, save_manifest
from andon.errors import DataError, ObjectNotFoundError
from andon.storage import ObjectStore, join_key, validate_key
from andon.validation.gx import RuleResult
from andon.validation.images import camera_image_rules, image_stats, validate_images
from andon.validation.profile import ValidationProfile
from andon.validation.spec import metadata_spec, sensor_spec
from andon.validation.tables import TableReport, validate_table

if TYPE_CHECKING:
    import pandas as pd

    from andon.config import PlantConfig

ACCEPTED, QUARANTINED = "accepted", "quarantined"
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")  # a batch id or line id that may become a key


@dataclass
class GateResult:
    plant: str
    line: str
    batch_id: str
    batch_prefix: str
    verdict: str
    reports: list[TableReport]
    validated_at: str
    manifest_id: str | None = None
    quarantine_prefix: str | None = None
    report_key: str | None = None
    status_key: str | None = None
    parts: int = 0
    profile_version: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.verdict == ACCEPTED

    def failed(self) -> list[tuple[str, RuleResult]]:
        return [(r.table, x) for r in self.reports for x in r.failed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "plant": self.plant,
            "line": self.line,
            "batch_id": self.batch_id,
            "batch_prefix": self.batch_prefix,
            "verdict": self.verdict,
            "validated_at": self.validated_at,
            "manifest_id": self.manifest_id,
            "quarantine_prefix": self.quarantine_prefix,
            "report_key": self.report_key,
            "status_key": self.status_key,
            "parts": self.parts,
            "profile_version": self.profile_version,
            **self.extra,
            "failed_rules": [f"{t}: {r.rule}" for t, r in self.failed()],
            "reports": [r.as_dict() for r in self.reports],
        }


def batch_prefix_from_uri(store: ObjectStore, uri: str) -> str:
    """``plant-a/line-1/raw/<date>/<batch>`` from a key prefix or a full URI inside the store."""
    parsed = urlparse(uri)
    if parsed.scheme:
        base = store.url.rstrip("/") + "/"
        if not uri.startswith(base):
            raise DataError(f"{uri} is not inside the object store {store.url}")
        uri = uri[len(base) :]
    prefix = uri.strip("/")
    if prefix.endswith("/batch.json"):
        prefix = prefix[: -len("/batch.json")]
    validate_key(prefix)
    return prefix


def _unreadable(table: str, what: str, reason: str) -> TableReport:
    return TableReport(table, 0, [RuleResult(rule=f"{table}: {what}", expectation="read", success=False, error=reason)])


def _read_table(store: ObjectStore, key: str, table: str) -> tuple[pd.DataFrame | None, TableReport | None]:
    try:
        return parquet_to_frame(store.get(key)), None
    except ObjectNotFoundError:
        return None, _unreadable(table, "table present", f"{key} is missing")
    except Exception as exc:  # pyarrow raises several types for a corrupt file; all mean the same here
        return None, _unreadable(table, "readable parquet", f"{key}: {type(exc).__name__}: {exc}")


def check_batch(
    store: ObjectStore,
    cfg: PlantConfig,
    info: BatchInfo,
    profile: ValidationProfile | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[TableReport], pd.DataFrame | None, pd.DataFrame | None]:
    """Run every suite on one raw batch; returns (reports, metadata, image stats)."""
    reports: list[TableReport] = []
    tables = profile.tables if profile else {}
    metadata, problem = _read_table(store, info.metadata_key, "metadata")
    if problem:
        reports.append(problem)
    else:
        assert metadata is not None
        reports.append(validate_table(metadata, metadata_spec(cfg, info.purpose), tables.get("metadata")))
    if store.exists(info.sensors_key):
        sensors, problem = _read_table(store, info.sensors_key, "sensors")
        if problem:
            reports.append(problem)
        else:
            assert sensors is not None
            reports.append(validate_table(sensors, sensor_spec(cfg), tables.get("sensors")))
    image_keys = [o.key for o in store.list(f"{info.prefix}/images/")]
    camera = cfg.camera_for(info.line) if info.line in cfg.line_ids else cfg.camera
    rules = camera_image_rules(camera)  # the same per-image rules the scoring service refuses on
    stats = image_stats(store, image_keys, progress=progress, max_side=rules["size"][1])  # bombs: header only
    meta_keys = None
    if metadata is not None and "image_key" in metadata.columns:
        meta_keys = set(metadata["image_key"].dropna().astype(str))
        # content integrity: the file is the one the metadata row describes
        if "sha256" in metadata.columns:
            recorded = dict(zip(metadata["image_key"].astype(str), metadata["sha256"], strict=False))
            stats["sha256_matches"] = [
                recorded.get(k, s) == s for k, s in zip(stats.image_key, stats.sha256, strict=True)
            ]
    image_report = validate_images(
        stats,
        metadata_keys=meta_keys,
        **rules,
        profile=profile.images_for(cfg.camera_signature(info.line)) if profile and info.line in cfg.line_ids else None,
    )
    reports.append(image_report)
    return reports, metadata, stats


def manifest_objects(metadata: pd.DataFrame, stats: pd.DataFrame) -> list[dict[str, Any]]:
    """One manifest row per image: key, content sha256, label and the metadata worth keeping."""
    sha = dict(zip(stats["image_key"], stats["sha256"], strict=True))
    keep = [c for c in ("part_id", "line", "sku", "timestamp", "defect_type") if c in metadata.columns]
    out = []
    for row in metadata.to_dict(orient="records"):
        key = str(row["image_key"])
        out.append({"key": key, "sha256": sha[key], "label": row["label"], **{c: row[c] for c in keep}})
    return out


def _quarantine(store: ObjectStore, info: BatchInfo, target: str) -> str:
    for obj in store.list(f"{info.prefix}/"):
        store.copy(obj.key, target + obj.key[len(info.prefix) :])
    return target


def _share(info: BatchInfo) -> float | None:
    try:
        return round(info.defects / info.parts, 4) if info.parts else None
    except TypeError:
        return None


def _location_problems(
    cfg: PlantConfig, claimed: BatchInfo, prefix: str, line: str, date: str, batch_id: str
) -> list[tuple[str, str]]:
    """What batch.json claims that its folder does not say (each claim may become a key)."""
    problems = []
    for what, said, actual in (
        ("plant", claimed.plant, cfg.id),
        ("line", claimed.line, line),
        ("date", claimed.date, date),
        ("batch_id", claimed.batch_id, batch_id),
        ("prefix", claimed.prefix, prefix),
    ):
        if said != actual:
            problems.append((f"batch.json: {what} is its folder's", f"says {str(said)[:200]!r}, the folder {actual!r}"))
    if line not in cfg.line_ids:
        problems.append(("batch: line is known", f"{line!r} is not one of {cfg.line_ids}"))
    if not SAFE_ID.fullmatch(batch_id):
        problems.append(("batch: id is letters, digits, . _ -", f"{batch_id!r}"))
    return problems


def _batch_report(problems: list[tuple[str, str]]) -> TableReport:
    return TableReport(
        "batch",
        0,
        [RuleResult(rule=rule, expectation="batch.json", success=False, error=why) for rule, why in problems],
    )


def _verdict_keys(store: ObjectStore, cfg: PlantConfig, info: BatchInfo) -> tuple[str, str, str | None]:
    """(status key, quarantine prefix, the other batch already holding them or None).

    Verdicts are write-once per batch: when the line's ``<batch-id>`` record belongs to another
    batch (same id, another date or a crafted folder), this batch's verdict goes beside it under
    ``<batch-id>~<digest of its prefix>`` and the other record is left alone."""
    status = join_key(cfg.object_prefix, info.line, "validation", f"{info.batch_id}.json")
    quarantine = join_key(cfg.object_prefix, info.line, "quarantine", info.batch_id)
    owner = _owner(store, status) or _owner(store, f"{quarantine}/result.json")
    if owner is None or owner == info.prefix:
        return status, quarantine, None
    alt = f"{info.batch_id}~{hashlib.sha256(info.prefix.encode()).hexdigest()[:12]}"
    return (
        join_key(cfg.object_prefix, info.line, "validation", f"{alt}.json"),
        join_key(cfg.object_prefix, info.line, "quarantine", alt),
        owner,
    )


def _owner(store: ObjectStore, key: str) -> str | None:
    """The batch prefix a verdict record belongs to (a record that cannot be read: "unknown")."""
    try:
        return str(json.loads(store.get(key)).get("batch_prefix") or "unknown")
    except ObjectNotFoundError:
        return None
    except (ValueError, AttributeError):
        return "unknown"


def run_gate(
    store: ObjectStore,
    cfg: PlantConfig,
    batch_uri: str,
    profile: ValidationProfile | None = None,
    progress: Callable[[int], None] | None = None,
) -> GateResult:
    """Validate, then accept or quarantine. Raises :class:`DataError` when the batch cannot be
    validated at all (not found, incomplete, another plant's)."""
    from andon.validation.report import render_html

    prefix = batch_prefix_from_uri(store, batch_uri)
    if not prefix.startswith(cfg.object_prefix + "/"):
        raise DataError(f"{prefix} is not under plant {cfg.id}'s prefix {cfg.object_prefix}/")
    parts = prefix[len(cfg.object_prefix) + 1 :].split("/")
    if len(parts) != 4 or parts[1] != "raw":
        below = sorted(o.key[: -len("/batch.json")] for o in store.list(f"{prefix}/") if o.key.endswith("/batch.json"))
        hint = f"; batches below it: {', '.join(below[:5])}" if below and parts[1:2] == ["raw"] else ""
        raise DataError(
            f"{prefix} is not a raw batch: give {cfg.object_prefix}/<line>/raw/<date>/<batch-id> "
            f"(quarantined copies are not re-validated){hint}"
        )
    line, _, date, batch_id = parts
    claimed: BatchInfo | None = None
    try:
        read = read_batch_info(store, f"{prefix}/batch.json")
    except ObjectNotFoundError:
        if any(True for _ in store.list(f"{prefix}/")):
            raise DataError(f"{prefix} has no batch.json: the batch is incomplete (still uploading?)") from None
        raise DataError(f"no batch at {prefix} in {store.url}") from None
    except DataError as exc:
        problems = [("batch.json: readable", str(exc))]
    else:
        claimed = read
        problems = _location_problems(cfg, read, prefix, line, date, batch_id)
    # every key below comes from the folder (validated), never from what batch.json claims
    info = replace(
        claimed or BatchInfo(cfg.id, line, date, batch_id, prefix, 0, 0, "unknown", {}),
        plant=cfg.id,
        line=line,
        date=date,
        batch_id=batch_id,
        prefix=prefix,
    )
    status_key, quarantine_key, owner = _verdict_keys(store, cfg, info)
    if owner:
        problems.append(
            ("batch id: unique on its line", f"{batch_id} already names {owner} (its verdict is kept, not replaced)")
        )

    reports, metadata, stats = check_batch(store, cfg, info, profile, progress)
    if problems:
        reports.insert(0, _batch_report(problems))
    now = datetime.now(UTC)
    result = GateResult(
        plant=cfg.id,
        line=info.line,
        batch_id=info.batch_id,
        batch_prefix=prefix,
        verdict=ACCEPTED if all(r.success for r in reports) else QUARANTINED,
        reports=reports,
        validated_at=now.isoformat(timespec="seconds"),
        parts=info.parts,
        profile_version=profile.version if profile else None,
        extra={"purpose": info.purpose, "defect_share": _share(info)},
    )
    if result.accepted:
        assert metadata is not None and stats is not None
        manifest: Manifest = build_manifest(
            cfg.id, manifest_objects(metadata, stats), sources=[prefix], purpose=info.purpose
        )
        save_manifest(store, manifest)
        result.manifest_id = manifest.id
    else:
        result.quarantine_prefix = _quarantine(store, info, quarantine_key)

    html = render_html(result, store, stats).encode()
    result.report_key = join_key(
        "reports", cfg.id, "validation", f"{now:%Y%m%dT%H%M%SZ}-{info.line}-{info.batch_id}.html"
    )
    store.put(result.report_key, html, "text/html")
    if result.quarantine_prefix:
        store.put(f"{result.quarantine_prefix}/report.html", html, "text/html")
        store.put(f"{result.quarantine_prefix}/result.json", _json(result.as_dict()), "application/json")
    result.status_key = status_key
    status = {k: v for k, v in result.as_dict().items() if k != "reports"}
    store.put(result.status_key, _json(status), "application/json")
    return result


def _json(data: Any) -> bytes:
    from andon.validation.gx import jsonable

    return json.dumps(jsonable(data), indent=1).encode()


def batch_status(store: ObjectStore, cfg: PlantConfig, line: str, batch_id: str) -> dict[str, Any] | None:
    """The last gate verdict recorded for ``batch_id`` on ``line``, or None when none was."""
    key = join_key(cfg.object_prefix, line, "validation", f"{batch_id}.json")
    try:
        data: dict[str, Any] = json.loads(store.get(key))
    except ObjectNotFoundError:
        return None
    return data


def verdict_of(store: ObjectStore, cfg: PlantConfig, batch_prefix: str) -> dict[str, Any] | None:
    """The last gate verdict of the raw batch at ``batch_prefix`` (only a record that names this
    very batch counts), or None when it was never validated."""
    prefix = batch_prefix.strip("/")
    parts = prefix.split("/")
    if len(parts) < 4 or parts[-3] != "raw":
        return None
    line, batch_id = parts[-4], parts[-1]
    info = BatchInfo(cfg.id, line, parts[-2], batch_id, prefix, 0, 0, "unknown", {})
    key, _, _ = _verdict_keys(store, cfg, info)
    try:
        data: dict[str, Any] = json.loads(store.get(key))
    except (ObjectNotFoundError, ValueError):
        return None
    return data if data.get("batch_prefix") == prefix else None
