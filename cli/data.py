"""Data in: `andon synth`, `andon ingest` and `andon store` (the gate and dataset versions: ``cli.validate``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

from andon.cli.common import JsonOption, make_console, parse_time, print_json, progress_bar
from andon.cli.root import app
from andon.synth import DRIFT_LIMITS

store_app = typer.Typer(help="The object store (file:// or s3://).", no_args_is_help=True)
app.add_typer(store_app, name="store")


def _knob(name: str, help: str) -> Any:
    """A drift knob's option, its range the one in ``andon.synth.DRIFT_LIMITS``."""
    lo, hi = DRIFT_LIMITS[name]
    return typer.Option(min=lo, max=hi, help=help)


@app.command()
def synth(
    plant: Annotated[str, typer.Option(help="plant id, e.g. plant-b")],
    parts: Annotated[int, typer.Option(min=1, help="number of parts to produce")] = 2000,
    seed: Annotated[int, typer.Option(help="same seed, same bytes")] = 0,
    start: Annotated[str | None, typer.Option(help="time of the first part, ISO with timezone")] = None,
    line: Annotated[list[str] | None, typer.Option(help="only these lines (repeatable)")] = None,
    defect_rate: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="override the plant's rate")] = None,
    brightness: Annotated[float, _knob("brightness", "lighting gain drift (1 = none)")] = 1.0,
    gamma: Annotated[float, _knob("gamma", "gamma drift (1 = none)")] = 1.0,
    unevenness: Annotated[float, _knob("unevenness", "extra uneven illumination")] = 0.0,
    rotation: Annotated[float, _knob("rotation_deg", "camera rotation drift, degrees")] = 0.0,
    blur: Annotated[float, _knob("blur_sigma", "focus blur drift (sigma, px)")] = 0.0,
    noise: Annotated[float, _knob("noise_std", "extra sensor noise (grey levels)")] = 0.0,
    material: Annotated[str | None, typer.Option(help="new supplier material: standard|supplier-b|cast")] = None,
    new_sku: Annotated[str | None, typer.Option(help="add a new SKU geometry: disc|plate|ring|impeller")] = None,
    workers: Annotated[int, typer.Option(min=1, max=32, help="rendering processes")] = 2,
    curated: Annotated[
        bool, typer.Option("--curated", help="a training set made on purpose (with --defect-rate: enriched)")
    ] = False,
) -> None:
    """Write synthetic parts (images, metadata, sensors, MES events) as raw batches.

    Example: andon synth --plant plant-a --parts 2000
    Example: andon synth --plant plant-b --parts 1500 --defect-rate 0.3 --curated   (a defect-enriched training set)
    """
    from andon.config import Sku, load_plant
    from andon.errors import ConfigError
    from andon.storage import open_store
    from andon.synth.images import Drift
    from andon.synth.plant import synthesize_plant

    if material not in (None, "standard", "supplier-b", "cast"):
        raise ConfigError(f"--material: must be standard, supplier-b or cast, got {material!r}")
    if new_sku not in (None, "disc", "plate", "ring", "impeller"):
        raise ConfigError(f"--new-sku: must be disc, plate, ring or impeller, got {new_sku!r}")
    cfg = load_plant(plant)
    store = open_store()
    drift = Drift(
        brightness=brightness,
        gamma=gamma,
        unevenness=unevenness,
        rotation_deg=rotation,
        blur_sigma=blur,
        noise_std=noise,
        material=material,  # type: ignore[arg-type]
    )
    sku = Sku(code=f"NEW-{new_sku.upper()}", shape=new_sku, size=0.85, holes=3) if new_sku else None  # type: ignore[arg-type]
    console = make_console()
    with progress_bar(console) as bar:
        task = bar.add_task(f"{plant}: rendering parts", total=parts)
        batches = synthesize_plant(
            cfg,
            store,
            parts,
            seed=seed,
            start=parse_time(start),
            drift=drift,
            defect_rate=defect_rate,
            lines=line,
            new_sku=sku,
            workers=workers,
            progress=lambda n: bar.advance(task, n),
            purpose="curated" if curated else "production",
        )
    _print_batches(console, store, batches)


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="folder of images; labels from sub-folder names")],
    plant: Annotated[str, typer.Option(help="plant id, e.g. plant-a")],
    line: Annotated[str | None, typer.Option(help="line id (default: the plant's first line)")] = None,
    sku: Annotated[str | None, typer.Option(help="SKU code (default: the plant's first SKU)")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="upload an evenly spread slice of N images")] = None,
    start: Annotated[str | None, typer.Option(help="timestamp of the first part, ISO with timezone")] = None,
    mixed: Annotated[
        bool, typer.Option("--mixed", help="interleave the labels in a fixed order, as a line makes parts")
    ] = False,
    curated: Annotated[
        bool, typer.Option("--curated", help="a training set put together on purpose (defect share not the line's)")
    ] = False,
    batch_size: Annotated[int | None, typer.Option(min=1, help="parts per raw batch (default: the plant's)")] = None,
) -> None:
    """Upload a real, labelled image folder into a plant's raw layout (idempotent). A folder sorted by
    class gives all-ok and all-defect batches: --mixed interleaves them; a labelled collection richer
    in defects than the line is --curated (the gate records its defect share instead of refusing it).

    Example: andon ingest --plant plant-a ../shared/data/casting/test --limit 200
    Example: andon ingest --plant plant-x ./labelled-parts --mixed --curated
    """
    from andon.config import load_plant
    from andon.data.ingest import IMAGE_SUFFIXES, ingest_folder
    from andon.storage import open_store

    cfg = load_plant(plant)
    store = open_store()
    total = sum(1 for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else 0
    console = make_console()
    with progress_bar(console) as bar:
        task = bar.add_task(f"{plant}: uploading {path.name}", total=min(total, limit or total) or None)
        batches = ingest_folder(
            cfg,
            store,
            path,
            line=line,
            sku=sku,
            limit=limit,
            start=parse_time(start),
            progress=lambda n: bar.advance(task, n),
            mixed=mixed,
            purpose="curated" if curated else "production",
            batch_size=batch_size,
        )
    _print_batches(console, store, batches)


def _print_batches(console: Console, store: Any, batches: list[Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{len(batches)} raw batch(es) in {store.url}")
    for col in ("line", "batch", "purpose", "parts", "defects", "prefix"):
        table.add_column(col, overflow="fold")
    for b in batches:
        table.add_row(b.line, b.batch_id, b.purpose, str(b.parts), str(b.defects), b.prefix + "/")
    console.print(table)


@store_app.command("ls")
def store_ls(
    prefix: Annotated[str, typer.Argument(help="key prefix, e.g. plant-a/line-1/raw/")] = "",
    limit: Annotated[int, typer.Option(min=1, help="print at most N keys")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List objects under a prefix with their sizes.

    Example: andon store ls plant-a/line-1/raw/
    """
    from andon.storage import open_store

    store = open_store()
    if as_json:
        objs = [{"key": o.key, "size": o.size} for _, o in zip(range(limit), store.list(prefix), strict=False)]
        print_json(objs)
        return
    n = size = 0
    for obj in store.list(prefix):
        if n < limit:
            sys.stdout.write(f"{obj.size:>10}  {obj.key}\n")
        n += 1
        size += obj.size
    if n > limit:
        sys.stdout.write(f"... {n - limit} more\n")
    sys.stdout.write(f"{n} object(s), {size / 1e6:.1f} MB under {store.url}/{prefix}\n")
