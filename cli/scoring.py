"""Scoring and evidence: `andon score|score-sensor|serve`, `andon explain`, `andon audit`,
`andon predictions compact`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    pass

from andon.cli.common import make_console, progress_bar, terminal_safe, time_window
from andon.cli.root import app


@app.command()
def score(
    batch: Annotated[str, typer.Argument(help="raw batch prefix, e.g. plant-b/line-1/raw/<date>/<batch-id>")],
    plant: Annotated[str, typer.Option(help="plant id")],
    explain: Annotated[bool, typer.Option(help="log a saliency map for every flagged part")] = True,
) -> None:
    """Score a raw batch with the plant's champion; every part goes to the prediction log. Only a
    batch the data gate accepted is scored (a quarantined or never validated one: exit 1).

    Example: andon score --plant plant-b plant-b/line-1/raw/2026-11-26/20261126T060000Z-s0-35470b3f
    """
    from andon.config import load_plant
    from andon.data.batches import parquet_to_frame, read_plant_batch
    from andon.scoring.batch import require_accepted, score_batch
    from andon.storage import open_store

    store, cfg = open_store(), load_plant(plant)
    require_accepted(store, cfg, batch)
    total = len(parquet_to_frame(store.get(read_plant_batch(store, cfg.id, batch).metadata_key)))
    with progress_bar(make_console()) as bar:
        task = bar.add_task(f"scoring {cfg.id}", total=total)
        s = score_batch(store, cfg, batch, explain=explain, progress=lambda n: bar.advance(task, n), gated=True)
    make_console().print(
        f"{s.scored} of {s.parts} parts scored by {s.model} v{s.version} ({s.parts_per_s:.0f} parts/s); "
        f"{s.defects} predicted defects, {s.explained} explained; {s.errors} error row(s); "
        f"logged to {len(s.log_keys)} file(s)"
    )


@app.command("score-sensor")
def score_sensor(
    table: Annotated[Path, typer.Argument(help="CSV of process readings (AI4I 2020 columns)", exists=True)],
    plant: Annotated[str, typer.Option(help="plant id")],
    explain: Annotated[bool, typer.Option(help="SHAP values for every predicted failure")] = True,
) -> None:
    """Score process readings with the plant's sensor champion (<plant>.machine-failure).

    Example: andon score-sensor --plant plant-a ../shared/data/ai4i2020/ai4i2020.csv
    """
    import pandas as pd

    from andon.config import load_plant
    from andon.scoring.sensor import score_sensor_table
    from andon.storage import open_store

    try:
        frame = pd.read_csv(table, encoding="utf-8-sig")
    except (ValueError, UnicodeDecodeError) as exc:
        from andon.errors import DataError

        raise DataError(f"{table}: not a readable CSV ({exc})") from None
    s = score_sensor_table(open_store(), load_plant(plant), frame, explain=explain)
    make_console().print(
        f"{s.scored} of {s.rows} readings scored by {s.model} v{s.version} in {s.seconds:.1f} s; "
        f"{s.failures} predicted failures ({s.explained} with SHAP values); {s.errors} error row(s)"
    )


predictions_app = typer.Typer(no_args_is_help=True, help="The prediction log: compaction and retention.")
app.add_typer(predictions_app, name="predictions")


@predictions_app.command("compact")
def predictions_compact(
    plant: Annotated[str, typer.Option(help="plant id")],
    since: Annotated[str | None, typer.Option(help="first hour to compact (ISO date/time; default 48 h ago)")] = None,
    retention: Annotated[bool, typer.Option(help="also remove hours past ANDON_PREDICTIONS_RETENTION_DAYS")] = True,
) -> None:
    """Merge each complete hour's micro-batch files into one file (andon serve writes one a
    second); safe to interrupt at any instant and to run again. `andon serve` does it hourly.

    Example: andon predictions compact --plant plant-a --since 2026-11-01T00:00:00+00:00
    """
    from datetime import UTC, datetime, timedelta

    from andon.cli.common import andon_settings, parse_time
    from andon.config import load_plant
    from andon.scoring.predlog import PredictionLog
    from andon.storage import open_store

    cfg = load_plant(plant)
    log = PredictionLog(open_store(), cfg.id)
    now = datetime.now(UTC)
    start = parse_time(since, "--since") or now - timedelta(hours=48)
    hours = max(0, int((now - start).total_seconds() // 3600))
    with progress_bar(make_console()) as bar:
        task = bar.add_task(f"compacting {cfg.id}", total=hours)
        r = log.compact(now, after=start, progress=lambda n: bar.advance(task, n))
    expired = 0
    days = andon_settings().predictions_retention_days
    if retention and days:
        expired = log.expire(now - timedelta(days=days))
    make_console().print(
        f"{cfg.id}: {r.hours} hour(s) compacted ({r.files_in} files -> {r.hours}, {r.rows} rows), "
        f"{r.deleted} merged file(s) removed; {expired} file(s) past the {days}-day retention removed"
    )


@app.command()
def serve(
    plant: Annotated[str, typer.Option(help="plant id")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    reload_seconds: Annotated[float, typer.Option(min=0.1, help="how often the champion alias is re-read")] = 2.0,
    max_upload_mb: Annotated[float, typer.Option(min=0.01, help="larger requests get 413")] = 4.0,
    explain: Annotated[bool, typer.Option(help="saliency maps for flagged parts (in the background)")] = True,
    max_in_flight: Annotated[int, typer.Option(min=1, help="requests at once; past it: 429 + Retry-After")] = 64,
    batch_wait_ms: Annotated[
        float, typer.Option(min=0, max=1000, help="how long a forward pass waits for requests still decoding")
    ] = 4.0,
    compact_minutes: Annotated[
        float, typer.Option(min=0, help="compact the prediction log's complete hours this often (0: never)")
    ] = 60.0,
    processes: Annotated[
        int, typer.Option(min=1, max=64, help="serving processes sharing the port (one per core at line rate)")
    ] = 1,
) -> None:
    """Online scoring for one plant: POST /v1/score (an image, or JSON with an object_key), GET /healthz,
    GET /metrics (Prometheus).

    Example: andon serve --plant plant-a --port 8000 --processes 2
             curl -H 'Content-Type: image/png' --data-binary @part.png 'localhost:8000/v1/score?part_id=P1'
    """
    from andon.config import load_plant
    from andon.scoring.online import serve as run_service
    from andon.storage import open_store

    cfg = load_plant(plant)
    sys.stderr.write(f"andon: serving {cfg.id} on http://{host}:{port} (POST /v1/score, GET /healthz, GET /metrics)\n")
    run_service(
        cfg,
        open_store(),
        host,
        port,
        reload_seconds=reload_seconds,
        max_bytes=int(max_upload_mb * 1024 * 1024),
        explain=explain,
        max_in_flight=max_in_flight,
        batch_wait_ms=batch_wait_ms,
        compact_seconds=compact_minutes * 60,
        processes=processes,
    )


@app.command()
def explain(
    part_id: Annotated[str, typer.Argument(help="the part id as logged")],
    plant: Annotated[str, typer.Option(help="plant id")],
    start: Annotated[str | None, typer.Option("--from", help="ISO time (default: 30 days ago)")] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO time (default: now)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the record as JSON on stdout")] = False,
) -> None:
    """Why part X? The logged prediction, the model version and its lineage, and the explanation.

    Example: andon explain --plant plant-a plant-a-line-1-000123
    """
    import json

    from rich.table import Table
    from rich.text import Text

    from andon.config import load_plant
    from andon.explain.audit import find_part
    from andon.storage import open_store

    lo, hi = time_window(start, end, 30)
    rec = find_part(open_store(), load_plant(plant), part_id, lo, hi)
    if as_json:  # json.dumps escapes every control character (\u001b), so the terminal gets none
        sys.stdout.write(json.dumps(rec, indent=1, default=str) + "\n")
        return

    # what was logged came from the line (SKU, part id, error text): shown as plain Text (never
    # parsed as Rich markup, so `[/]` is just text) with control characters made visible
    table = Table(title=Text(terminal_safe(f"{part_id}: {rec['predicted_class']}")), show_header=False)
    probs = rec.get("probabilities") or []
    fields = [
        ("scored at", rec.get("scored_at")),
        ("line / SKU", f"{rec.get('line')} / {rec.get('sku') or '-'}"),
        ("prediction", rec["predicted_class"] + (f"  (error: {rec['error']})" if rec.get("error") else "")),
        ("probabilities", ", ".join(f"{p:.4f}" for p in probs)),
        ("uncertainty", f"entropy {rec.get('entropy')}, margin {rec.get('margin')}"),
        ("model", f"{rec['model_name']} v{rec['model_version']} ({rec.get('model_alias')})"),
        ("training data manifest", rec.get("data_manifest_sha256")),
        ("code commit", f"{rec.get('code_commit')} (dirty: {rec.get('code_dirty')})"),
        ("input", f"{rec.get('image')}  sha256 {rec.get('sha256')}"),
        ("explanation", rec.get("explanation_method") or "none logged (not flagged, not sampled)"),
        ("top regions / features", json.dumps(rec.get("explanation_top")) if rec.get("explanation_top") else "-"),
        ("overlay", rec.get("overlay") or "-"),
    ]
    for k, v in fields:
        table.add_row(k, Text(terminal_safe(str(v))))
    make_console().print(table)


@app.command()
def audit(
    plant: Annotated[str, typer.Option(help="plant id")],
    start: Annotated[str, typer.Option("--from", help="ISO time, e.g. 2026-11-20T00:00:00+00:00")],
    end: Annotated[str, typer.Option("--to", help="ISO time")],
    only_defects: Annotated[bool, typer.Option("--only-defects", help="rejected parts only")] = False,
    out: Annotated[Path | None, typer.Option(help="folder for audit.html and audit.csv")] = None,
) -> None:
    """An audit report of a time window: one row per part with image, saliency overlay, decision,
    defect score against the version's threshold, the reviewed label and whether the decision was an
    escape or an overkill, model version and lineage (HTML and CSV).

    Example: andon audit --plant plant-a --from 2026-11-20T00:00:00+00:00 --to 2026-11-27T00:00:00+00:00 --only-defects
    """
    from andon.config import load_plant
    from andon.explain.audit import audit_report
    from andon.storage import open_store

    lo, hi = time_window(start, end, 30)
    cfg = load_plant(plant)
    out = out or Path(f"audit-{cfg.id}-{lo:%Y%m%dT%H%M}-{hi:%Y%m%dT%H%M}")
    with progress_bar(make_console()) as bar:
        task = bar.add_task("rendering parts", total=None)
        r = audit_report(
            open_store(), cfg, lo, hi, out, only_defects=only_defects, progress=lambda n: bar.advance(task, n)
        )
    if r.floor.get("reviewed"):
        make_console().print(f"reviewed parts: {r.floor['reviewed']}; escapes {r.floor['escapes']}; "
                         f"overkills {r.floor['overkills']}")  # fmt: skip
    make_console().print(
        f"{r.rows} parts in {r.seconds:.1f} s: {r.html_path} and {r.csv_path} (copy in the store: {r.report_key})"
    )
