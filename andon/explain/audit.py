"""The audit trail: "why part X?" for one part, and a report over a time window an auditor can
read (a customer disputes 847 rejected parts: one row per part with its image, its saliency
overlay, the prediction, the confidence, the model version and that version's lineage).

Everything comes from what was logged at prediction time (the prediction log and the overlay
PNG in the object store) plus the registry's lineage tags of the version that decided; nothing is
recomputed, so the report shows what the line saw, not what today's model would say.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from andon.config import PlantConfig
from andon.errors import AndonError, DataError
from andon.scoring.predlog import PredictionLog
from andon.storage import ObjectStore, join_key

THUMB_PX = 96
OVERLAY_PX = 220


@lru_cache(maxsize=256)
def lineage(name: str, version: int) -> dict[str, str]:
    """What the registry says made ``name`` version ``version`` (empty values when unknown)."""
    from andon.lifecycle.registry import version_info

    try:
        tags = version_info(name, int(version)).tags
    except AndonError as exc:
        return {"lineage_error": str(exc)}
    return {
        "data_manifest_sha256": tags.get("data.manifest_sha256", ""),
        "code_commit": tags.get("code.commit", ""),
        "code_dirty": tags.get("code.dirty", ""),
        "config_sha256": tags.get("config.sha256", ""),
        "recipe": tags.get("recipe", ""),
        "parent_version": tags.get("parent_version", ""),
    }


def jsonable(value: Any) -> Any:
    import numpy as np
    import pandas as pd

    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value


def find_part(store: ObjectStore, cfg: PlantConfig, part_id: str, start: datetime, end: datetime) -> dict[str, Any]:
    """The logged record of ``part_id`` (the latest one if it was scored twice) with its model's
    lineage, the overlay's location and the explanation's top regions decoded."""
    rows = PredictionLog(store, cfg.id).read(start, end, where="part_id = ?", params=[part_id])
    if rows.empty:
        raise DataError(
            f"no prediction for part {part_id!r} of {cfg.id} between {start:%Y-%m-%d %H:%M} and "
            f"{end:%Y-%m-%d %H:%M} UTC (widen the window with --from / --to)"
        )
    rec = {k: jsonable(v) for k, v in rows.iloc[-1].to_dict().items()}
    rec["scored_times"] = len(rows)
    rec.update(lineage(rec["model_name"], int(rec["model_version"])))
    top = rec.get("explanation_top")
    rec["explanation_top"] = json.loads(top) if top else None
    key = rec.get("explanation_key")
    rec["overlay"] = store.uri(key) if key else None
    rec["image"] = store.uri(rec["object_key"]) if rec.get("object_key") else None
    return rec


def _thumb(data: bytes, px: int) -> str:
    """A grey JPEG at most ``px`` wide, as a data URI."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.draft("L", (px, px))
        small = img.convert("L")
        small.thumbnail((px, px))
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _images(store: ObjectStore, row: dict[str, Any]) -> tuple[str, str]:
    """(thumbnail, overlay) as data URIs; empty when the object is missing or unreadable."""
    out = []
    for key, px in ((row.get("object_key"), THUMB_PX), (row.get("explanation_key"), OVERLAY_PX)):
        try:
            out.append(_thumb(store.get(key), px) if key else "")
        except Exception:  # a missing image must not stop the report; the row says so
            out.append("")
    return out[0], out[1]


CSV_COLUMNS = (
    "part_id",
    "line",
    "sku",
    "captured_at",
    "scored_at",
    "predicted_class",
    "defect_score",
    "threshold",
    "reviewed_label",
    "outcome",
    "confidence",
    "probabilities",
    "model_name",
    "model_version",
    "data_manifest_sha256",
    "code_commit",
    "code_dirty",
    "explanation_method",
    "explanation_top",
    "object_key",
    "sha256",
    "explanation_key",
    "error",
)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run: text that starts like a formula (``=``, ``+``, ``-``,
    ``@``, tab, carriage return) gets a leading single quote (OWASP's CSV injection advice).
    Numbers stay numbers; a SKU or part id from the line is text and is never trusted."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


@dataclass
class AuditResult:
    html_path: Path
    csv_path: Path
    report_key: str
    rows: int
    by_class: dict[str, int]
    by_version: dict[str, int]
    seconds: float
    floor: dict[str, Any] = field(default_factory=dict)  # escapes / overkills among the reviewed parts


def audit_report(
    store: ObjectStore,
    cfg: PlantConfig,
    start: datetime,
    end: datetime,
    out_dir: Path,
    *,
    only_defects: bool = False,
    progress: Callable[[int], None] | None = None,
    workers: int = 8,
) -> AuditResult:
    """Write ``audit.html`` (self-contained: images inline) and ``audit.csv`` to ``out_dir``
    and keep a copy of the HTML at ``reports/<plant>/audit/<timestamp>.html`` in the store."""
    import time

    t0 = time.perf_counter()
    where = "error is null and predicted_class <> ?" if only_defects else ""
    params = [cfg.recipe.classes[0]] if only_defects else None
    frame = PredictionLog(store, cfg.id).read(start, end, where=where, params=params)
    records = [{k: jsonable(v) for k, v in r.items()} for r in frame.to_dict(orient="records")]
    reviewed = _reviewed_labels(store, cfg, start, end)
    ok_class = cfg.recipe.classes[0]
    for r in records:
        r.update(lineage(r["model_name"], int(r["model_version"])))
        probs = r.get("probabilities") or []
        r["confidence"] = round(max(probs), 4) if probs else None
        r["reviewed_label"] = reviewed.get(str(r["part_id"]))
        r["outcome"] = outcome(str(r["predicted_class"]), r["reviewed_label"], ok_class)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = []
        for pair in pool.map(lambda r: _images(store, r), records):
            images.append(pair)
            if progress:
                progress(1)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "audit.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow({k: csv_cell(json.dumps(r[k]) if isinstance(r.get(k), list) else r.get(k)) for k in CSV_COLUMNS})
    by_class = dict(Counter(str(r["predicted_class"]) for r in records))
    floor = floor_summary(records, ok_class)
    by_version = dict(Counter(f"{r['model_name']} v{r['model_version']}" for r in records))
    page = _html(cfg, start, end, only_defects, records, images, floor | by_class, by_version)
    html_path = out_dir / "audit.html"
    html_path.write_text(page)
    report_key = join_key("reports", cfg.id, "audit", f"{datetime.now(UTC):%Y%m%dT%H%M%S}.html")
    store.put(report_key, page.encode(), "text/html")
    took = time.perf_counter() - t0
    return AuditResult(html_path, csv_path, report_key, len(records), by_class, by_version, took, floor)


STYLE = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 4px} .meta{color:#555;margin-bottom:12px}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:4px 6px;vertical-align:top;text-align:left}
th{background:#f4f4f4;position:sticky;top:0} td.num{text-align:right;font-variant-numeric:tabular-nums}
.defect{color:#b00020;font-weight:600} .ok{color:#1b5e20} .error{color:#e65100}
code{font-size:12px} .chips span{display:inline-block;background:#eef;border-radius:8px;padding:1px 8px;margin:2px}
img{display:block}
"""


def _html(
    cfg: PlantConfig,
    start: datetime,
    end: datetime,
    only_defects: bool,
    records: list[dict[str, Any]],
    images: list[tuple[str, str]],
    by_class: dict[str, Any],
    by_version: dict[str, int],
) -> str:
    e = html.escape
    ok = cfg.recipe.classes[0]
    rows = []
    for r, (thumb, overlay) in zip(records, images, strict=True):
        cls = str(r["predicted_class"])
        css = "error" if r.get("error") else ("ok" if cls == ok else "defect")
        top = json.loads(r["explanation_top"]) if r.get("explanation_top") else []
        regions = ", ".join(f"({t['x']:.2f},{t['y']:.2f}) {t['share']:.0%}" for t in top if "x" in t)
        err = f"<br><small>{e(str(r['error']))}</small>" if r.get("error") else ""
        conf = f"{r['confidence']:.3f}" if r.get("confidence") is not None else ""
        if r.get("defect_score") is not None and r.get("threshold") is not None:
            conf = f"score {r['defect_score']:.3f} vs {r['threshold']:.3f}"
        verdict = ""
        if r.get("outcome"):
            verdict = f"<br><small>reviewed {e(str(r['reviewed_label']))}: <b>{e(str(r['outcome']))}</b></small>"
        thumb_html = f'<img src="{thumb}" alt="part" width="{THUMB_PX}">' if thumb else "<em>image missing</em>"
        overlay_html = f'<img src="{overlay}" alt="saliency" loading="lazy">' if overlay else ""
        rows.append(
            "<tr>"
            f"<td><code>{e(str(r['part_id']))}</code><br>{e(str(r.get('line') or ''))} {e(str(r.get('sku') or ''))}"
            f"<br><small>{e(str(r.get('captured_at') or '')[:19])}</small></td>"
            f"<td>{thumb_html}</td><td>{overlay_html}<small>{e(regions)}</small></td>"
            f'<td class="{css}">{e(cls)}{err}{verdict}</td>'
            f'<td class="num">{conf}</td>'
            f"<td>{e(str(r['model_name']))} <b>v{r['model_version']}</b></td>"
            f"<td><code>data {e(str(r.get('data_manifest_sha256', ''))[:12])}</code><br>"
            f"<code>code {e(str(r.get('code_commit', ''))[:10])}</code>"
            f"{' (dirty)' if r.get('code_dirty') == 'true' else ''}</td>"
            "</tr>"
        )
    chips = "".join(f"<span>{e(k)}: {e(str(v))}</span>" for k, v in by_class.items())
    chips += "".join(f"<span>{e(k)}: {v}</span>" for k, v in sorted(by_version.items()))
    title = f"Audit: {cfg.id}{' (rejected parts only)' if only_defects else ''}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{e(title)}</h1><div class='meta'>{e(cfg.name)} · scored {start.isoformat()} to "
        f"{end.isoformat()} · {len(records)} parts · generated {datetime.now(UTC).isoformat(timespec='seconds')} "
        f"from the prediction log and the registry's lineage tags</div><div class='chips'>{chips}</div>"
        "<table><thead><tr><th>part</th><th>image</th><th>saliency (what the model looked at)</th>"
        "<th>decision</th><th>defect score vs the version's threshold</th><th>model version</th><th>lineage</th>"
        "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></body></html>"
    )


def outcome(predicted: str, reviewed: str | None, ok: str) -> str | None:
    """What a person's review says of the decision: ``escape`` (a defect passed), ``overkill`` (a
    good part rejected), ``correct``; None when the part was not reviewed (or failed to score)."""
    if reviewed is None or predicted == "error":
        return None
    if reviewed != ok and predicted == ok:
        return "escape"
    if reviewed == ok and predicted != ok:
        return "overkill"
    return "correct"


def floor_summary(records: list[dict[str, Any]], ok: str) -> dict[str, Any]:
    """Escapes and overkills among the reviewed parts of the report (the floor's numbers first)."""
    from andon.quality import fmt_rate

    rev = [r for r in records if r.get("outcome")]
    if not rev:
        return {"reviewed": 0}
    defects = [r for r in rev if r["reviewed_label"] != ok]
    goods = [r for r in rev if r["reviewed_label"] == ok]
    esc = sum(r["outcome"] == "escape" for r in defects)
    ovk = sum(r["outcome"] == "overkill" for r in goods)
    return {
        "reviewed": len(rev),
        "escapes": f"{esc} of {len(defects)} reviewed defects ({fmt_rate(esc / len(defects)) if defects else 'n/a'})",
        "overkills": f"{ovk} of {len(goods)} reviewed good parts ({fmt_rate(ovk / len(goods)) if goods else 'n/a'})",
    }


def _reviewed_labels(store: ObjectStore, cfg: PlantConfig, start: datetime, end: datetime) -> dict[str, str]:
    """The latest reviewed label per part, from the window's start to a week after its end (reviews follow)."""
    from andon.labeling.labels import ReviewLog

    frame = ReviewLog(store, cfg.id).read(start, end + timedelta(days=7))
    return dict(zip(frame["part_id"].astype(str), frame["label"].astype(str), strict=True))


def default_window(days: int = 30) -> tuple[datetime, datetime]:
    end = datetime.now(UTC) + timedelta(minutes=1)
    return end - timedelta(days=days), end
