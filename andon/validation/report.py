"""The HTML a quality engineer reads: verdict first, then each failed rule with example rows
and thumbnails of the offending images, then every rule that ran. Self-contained (thumbnails
inline), so it can be mailed or attached to a ticket."""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from andon.storage import ObjectStore
    from andon.validation.gate import GateResult

THUMBS_PER_RULE = 6
CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1100px}
h1{font-size:1.4rem} .ok{color:#176e2e} .bad{color:#b3261e}
table{border-collapse:collapse;margin:.5rem 0 1.2rem;font-size:.9rem}
td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f5f5f5} .thumbs img{height:96px;margin:2px;border:1px solid #ccc}
code{background:#f5f5f5;padding:0 .2rem}
"""


def _e(value: Any) -> str:
    from andon.validation.gx import jsonable

    value = jsonable(value)
    if isinstance(value, float):
        value = f"{value:.6g}"
    elif isinstance(value, list):
        value = ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in value)
    return html.escape(str(value))


def _thumb(store: ObjectStore, key: str) -> str | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(store.get(key))) as img:
            img.thumbnail((96, 96))
            buf = io.BytesIO()
            img.convert("L").save(buf, format="PNG")
    except Exception:  # a corrupt file has no thumbnail; the row still names it
        return None
    return base64.b64encode(buf.getvalue()).decode()


def render_html(result: GateResult, store: ObjectStore, stats: pd.DataFrame | None = None) -> str:
    verdict_cls = "ok" if result.accepted else "bad"
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(result.batch_id)}: {result.verdict}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Batch <code>{_e(result.batch_id)}</code> at {_e(result.plant)} / {_e(result.line)}: ",
        f"<span class='{verdict_cls}'>{result.verdict.upper()}</span></h1>",
        "<table>",
        f"<tr><th>raw batch</th><td><code>{_e(result.batch_prefix)}/</code> ({result.parts} parts)</td></tr>",
        f"<tr><th>validated</th><td>{_e(result.validated_at)}</td></tr>",
        f"<tr><th>learned profile</th><td>{_e(result.profile_version or 'none (config rules only)')}</td></tr>",
    ]
    if result.manifest_id:
        parts.append(f"<tr><th>dataset version</th><td><code>{_e(result.manifest_id)}</code></td></tr>")
    if result.quarantine_prefix:
        parts.append(f"<tr><th>quarantined copy</th><td><code>{_e(result.quarantine_prefix)}/</code></td></tr>")
    parts.append("</table>")

    failed = result.failed()
    parts.append(f"<h2>{len(failed)} failed rule(s)</h2>")
    for table, rule in failed:
        parts.append(f"<h3 class='bad'>{_e(table)}: {_e(rule.rule)}</h3><p>")
        if rule.unexpected_count is not None:
            pct = f" ({rule.unexpected_percent:.2f} %)" if rule.unexpected_percent is not None else ""
            parts.append(f"{rule.unexpected_count} row(s) fail{pct}. ")
        if rule.observed is not None:
            parts.append(f"Observed: <code>{_e(rule.observed)}</code>. ")
        if rule.error:
            parts.append(f"<span class='bad'>{_e(rule.error)}</span>")
        parts.append(f"</p><p>GX expectation: <code>{_e(rule.expectation)}</code></p>")
        if rule.examples:
            cols = list(dict.fromkeys(k for e in rule.examples for k in e))
            parts.append("<table><tr>" + "".join(f"<th>{_e(c)}</th>" for c in cols) + "</tr>")
            for ex in rule.examples:
                parts.append("<tr>" + "".join(f"<td>{_e(ex.get(c, ''))}</td>" for c in cols) + "</tr>")
            parts.append("</table>")
            # only the batch's own images (a crafted metadata row may name any key, even one that walks out)
            inside = f"{result.batch_prefix}/images/"
            named = [str(e.get("image_key", "")) for e in rule.examples]
            keys = [k for k in named if _is_key_inside(k, inside)][:THUMBS_PER_RULE]
            thumbs = [(k, _thumb(store, k)) for k in keys if store.exists(k)]
            if any(t for _, t in thumbs):
                parts.append("<div class='thumbs'>")
                parts += [f"<img title='{_e(k)}' src='data:image/png;base64,{t}'>" for k, t in thumbs if t]
                parts.append("</div>")

    parts.append("<h2>Every rule</h2>")
    for report in result.reports:
        ok = sum(r.success for r in report.results)
        parts.append(f"<h3>{_e(report.table)}: {ok}/{len(report.results)} passed, {report.rows} rows</h3><table>")
        parts.append("<tr><th>rule</th><th>result</th><th>observed</th><th>failing rows</th></tr>")
        for r in report.results:
            mark = "<span class='ok'>pass</span>" if r.success else "<span class='bad'>FAIL</span>"
            obs = "" if r.observed is None else _e(r.observed)
            parts.append(
                f"<tr><td>{_e(r.rule)}</td><td>{mark}</td><td>{obs}</td><td>{_e(r.unexpected_count or '')}</td></tr>"
            )
        parts.append("</table>")
    if stats is not None and len(stats):
        decoded = stats[stats["decodes"].astype(bool)]
        if len(decoded):
            parts.append(
                "<h2>Image statistics</h2><table><tr><th>statistic</th><th>mean</th><th>min</th><th>max</th></tr>"
            )
            for col in ("brightness", "contrast", "sharpness"):
                v = decoded[col].astype(float)
                parts.append(
                    f"<tr><td>{col}</td><td>{v.mean():.4g}</td><td>{v.min():.4g}</td><td>{v.max():.4g}</td></tr>"
                )
            parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)


def _is_key_inside(key: str, prefix: str) -> bool:
    from andon.errors import InvalidKeyError
    from andon.storage import validate_key

    try:
        return key.startswith(prefix) and validate_key(key) == key
    except InvalidKeyError:
        return False
