"""``andon demo``: Andon's main job on the embedded defaults, as far as it is built.

Today: start the embedded stack, produce a synthetic day at plant-a through the Prefect
``synthesize-plant`` flow, ingest a slice of the real casting images through ``ingest-folder``,
validate every batch through ``validate-batch`` (a copy with planted faults is quarantined),
and print where everything is. Idempotent: the stack is reused, part timestamps are fixed to
06:00 UTC today, so a re-run writes the same keys with the same bytes.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def run_demo(console: Console, casting: Path, parts: int = 2000, casting_images: int = 300) -> None:
    from rich.markup import escape
    from rich.table import Table

    from andon import stack
    from andon.settings import get_settings
    from andon.storage import open_store

    settings = get_settings()
    console.rule("[bold]1. the embedded stack")
    statuses = stack.up(settings, on_event=lambda m: console.print(f"  {m}"))
    # flows below report to the embedded server, so their runs and artifacts show in its UI
    os.environ["PREFECT_API_URL"] = settings.prefect_api_url
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

    from flows.ingest import ingest_folder_flow, synthesize_plant_flow

    start = datetime.now(UTC).replace(hour=6, minute=0, second=0, microsecond=0)
    console.rule(f"[bold]2. synthetic production at plant-a: {parts} parts")
    with console.status("rendering parts in the synthesize-plant flow..."):
        synth_batches = synthesize_plant_flow(plant="plant-a", parts=parts, seed=0, start=start)
    console.print(
        f"  {sum(b['parts'] for b in synth_batches)} parts in {len(synth_batches)} raw batches, "
        f"{sum(b['defects'] for b in synth_batches)} defective"
    )

    console.rule(f"[bold]3. real casting images into plant-a: {casting_images}")
    ingested: list[dict[str, Any]] = []
    if (casting / "train").is_dir():
        source = (casting / "train").resolve()
        with console.status(f"uploading {source} in the ingest-folder flow..."):
            ingested = ingest_folder_flow(
                plant="plant-a", path=str(source), limit=casting_images, start=start.replace(hour=12)
            )
        console.print(f"  {sum(b['parts'] for b in ingested)} images in {len(ingested)} raw batch(es) from {source}")
    else:
        console.print(f"  [yellow]skipped[/]: {casting} not found (the public casting set; see README)")

    console.rule("[bold]4. the data gate: every batch is validated before it can reach training")
    from andon.synth.faults import plant_faults
    from flows.validate import validate_batch_flow

    store = open_store()
    faulty = plant_faults(store, synth_batches[0]["prefix"])
    console.print(f"  planted faults in a copy of one batch: {', '.join(faulty.details['planted_faults'])}")
    gate = Table(box=None, padding=(0, 2))
    gate.add_column("batch", no_wrap=True)
    for col in ("parts", "verdict", "dataset"):
        gate.add_column(col, no_wrap=True)
    verdicts = []
    prefixes = [str(b["prefix"]) for b in synth_batches + ingested] + [faulty.prefix]
    with console.status(f"validating {len(prefixes)} batches in the validate-batch flow..."):
        for prefix in prefixes:
            result = validate_batch_flow(plant="plant-a", batch=prefix)
            verdicts.append(result)
    for r in verdicts:
        colour = "green" if r["verdict"] == "accepted" else "red"
        detail = r["manifest_id"][:12] if r["manifest_id"] else f"{len(r['failed_rules'])} failed"
        gate.add_row(r["batch_id"], str(r["parts"]), f"[{colour}]{r['verdict']}[/]", detail)
    console.print(gate)
    quarantined = [r for r in verdicts if r["verdict"] != "accepted"]
    for r in quarantined:
        console.print(f"  {r['line']} / {r['batch_id']}:")
        for rule in r["failed_rules"]:
            console.print(f"    [red]x[/] {escape(rule)}")

    console.rule("[bold]where things are")
    ui = settings.prefect_api_url.removesuffix("/api")
    day = start.strftime("%Y-%m-%d")
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column("what", style="bold")
    table.add_column("where", overflow="fold")
    for s in statuses:
        table.add_row(f"{s.name} UI", s.url)
    table.add_row("flow runs", f"{ui}/runs")
    table.add_row("object store", store.url)
    lines = sorted({str(b["line"]) for b in synth_batches + ingested})
    table.add_row("plant-a raw data", ", ".join(f"plant-a/{ln}/raw/{day}/" for ln in lines))
    table.add_row("list it", f"andon store ls plant-a/{lines[0]}/raw/{day}/")
    table.add_row("dataset versions", "andon datasets list --plant plant-a")
    for r in quarantined:
        table.add_row("quarantined batch", f"{r['quarantine_prefix']}/")
        table.add_row("its report", store.uri(r["report_key"]))
    table.add_row("logs", str(settings.home / "logs"))
    table.add_row("stop the stack", "andon down")
    console.print(table)
