"""Data in: `andon synth`, `andon ingest`, `andon store`, the gate (`andon validate`) and `andon datasets`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from rich.console import Console

from andon.synth import DRIFT_LIMITS
from cli.common import JsonOption, make_console, parse_time, print_json, progress_bar
from cli.root import app


class _DefaultBatchGroup(TyperGroup):
    """`andon validate --plant P BATCH` runs the `batch` subcommand; `andon validate learn ...` runs learn."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["batch", *args]
        return super().parse_args(ctx, args)


store_app = typer.Typer(help="The object store (file:// or s3://).", no_args_is_help=True)
validate_app = typer.Typer(
    cls=_DefaultBatchGroup,
    no_args_is_help=True,
    help="The data gate: validate a raw batch (exit 0 accepted, 1 quarantined, 2 could not run), "
    "learn bounds from a known-good batch, check a table file.",
)


datasets_app = typer.Typer(help="Content-addressed dataset versions (manifests).", no_args_is_help=True)
app.add_typer(store_app, name="store")


app.add_typer(validate_app, name="validate")
app.add_typer(datasets_app, name="datasets")


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


@validate_app.command("batch")
def validate_batch(
    batch: Annotated[str, typer.Argument(help="raw batch prefix or URI, e.g. plant-b/line-1/raw/<date>/<id>")],
    plant: Annotated[str, typer.Option(help="plant id")],
    as_json: Annotated[bool, typer.Option("--json", help="print the full result as JSON")] = False,
) -> None:
    """Validate one raw batch: accept it into a dataset version, or quarantine it.

    Example: andon validate --plant plant-b plant-b/line-1/raw/2026-11-26/20261126T060000Z-s0
    """
    import json

    from andon.config import load_plant
    from andon.errors import AndonError
    from andon.storage import open_store
    from andon.validation.gate import run_gate
    from andon.validation.profile import load_profile

    console = make_console()
    try:
        cfg = load_plant(plant)
        store = open_store()
        with progress_bar(console) as bar:
            task = bar.add_task("checking images", total=None)
            result = run_gate(store, cfg, batch, profile=load_profile(plant), progress=lambda n: bar.advance(task, n))
    except AndonError as exc:
        sys.stderr.write(f"error: could not validate: {exc}\n")
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=1, default=str) + "\n")
    else:
        _print_gate(console, result, store)
    raise typer.Exit(0 if result.accepted else 1)


def _print_gate(console: Console, result: Any, store: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{result.plant} / {result.line} / {result.batch_id}")
    for col in ("table", "rules", "passed", "failed rules"):
        table.add_column(col, overflow="fold")
    for rep in result.reports:
        failed = [escape(r.rule) + (f" ({r.unexpected_count} rows)" if r.unexpected_count else "") for r in rep.failed]
        ok = len(rep.results) - len(failed)
        table.add_row(rep.table, str(len(rep.results)), str(ok), "\n".join(failed) or "-")
    console.print(table)
    if result.accepted:
        console.print(f"[green]ACCEPTED[/]: dataset version {result.manifest_id}")
    else:
        console.print(f"[red]QUARANTINED[/]: copy at {result.quarantine_prefix}/ (raw batch untouched)")
    console.print(f"report: {store.uri(result.report_key)}")


@validate_app.command("learn")
def validate_learn(
    plant: Annotated[str, typer.Option(help="plant id")],
    reference: Annotated[list[str], typer.Option(help="known-good raw batch prefix or URI (repeatable)")],
    min_batch_rows: Annotated[int, typer.Option(min=5, help="smallest batch the bounds must tolerate")] = 100,
) -> None:
    """Learn statistical bounds from known-good batches into configs/validation/<plant>.yaml.

    Example: andon validate learn --plant plant-b --reference plant-b/line-1/raw/2026-11-26/20261126T060000Z-s0
    """
    from andon.config import load_plant
    from andon.errors import AndonError
    from andon.storage import open_store
    from andon.validation.learn import learn_from_batches

    try:
        cfg = load_plant(plant)
        profile, path = learn_from_batches(open_store(), cfg, reference, min_batch_rows=min_batch_rows)
    except AndonError as exc:
        sys.stderr.write(f"error: could not learn: {exc}\n")
        raise typer.Exit(2) from None
    columns = sum(len(t.columns) for t in profile.tables.values())
    cams = "; ".join(f"{p.camera} ({', '.join(p.lines)}): {p.images} images" for p in profile.images.values())
    make_console().print(
        f"profile v{profile.version} for {plant}: bounds for {columns} sensor column(s); image bounds per camera: "
        f"{cams or 'none'} -> {path} (review and commit it)"
    )


@validate_app.command("table")
def validate_table_file(
    spec: Annotated[str, typer.Argument(help="table spec name in configs/tables/ or a YAML path")],
    path: Annotated[Path, typer.Argument(help="CSV or parquet file")],
    show_all: Annotated[bool, typer.Option("--all", help="list passing rules too")] = False,
) -> None:
    """Check a table file against a spec; exit 0 pass, 1 fail, 2 could not run.

    Example: andon validate table ai4i2020 ../shared/data/ai4i2020/ai4i2020.csv
    """
    from andon.errors import AndonError
    from andon.validation.spec import load_table_spec
    from andon.validation.tables import validate_table

    try:
        table_spec = load_table_spec(spec)
        frame = _read_table_file(path)
    except AndonError as exc:
        sys.stderr.write(f"error: could not validate: {exc}\n")
        raise typer.Exit(2) from None
    report = validate_table(frame, table_spec)
    from rich.markup import escape
    from rich.table import Table

    console = make_console()
    shown = report.results if show_all else report.failed
    if shown:
        table = Table(title=f"{path.name} against {table_spec.name}: {report.rows} rows")
        for col in ("rule", "result", "failing rows", "examples"):
            table.add_column(col, overflow="fold")
        for r in shown:
            mark = "[green]pass[/]" if r.success else "[red]FAIL[/]"
            table.add_row(
                escape(r.rule), mark, str(r.unexpected_count or ""), "" if r.success else escape(r.example_text())
            )
        console.print(table)
    verdict = "[green]PASS[/]" if report.success else "[red]FAIL[/]"
    console.print(
        f"{verdict}: {len(report.results) - len(report.failed)} of {len(report.results)} rules passed "
        f"on {report.rows} rows of {path.name}"
    )
    raise typer.Exit(0 if report.success else 1)


def _read_table_file(path: Path) -> Any:
    import pandas as pd

    from andon.errors import DataError

    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        if path.suffix == ".zip":  # the SECOM archive as published by UCI
            from andon.data.public import read_secom

            return read_secom(path)
        return pd.read_csv(path, encoding="utf-8-sig")
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read as a table: {exc}") from None


@datasets_app.command("list")
def datasets_list(plant: Annotated[str, typer.Option(help="plant id")], as_json: JsonOption = False) -> None:
    """Dataset versions of a plant, oldest first.

    Example: andon datasets list --plant plant-b
    """
    from rich.table import Table

    from andon.config import load_plant
    from andon.data.datasets import list_manifests, revoked_sources
    from andon.storage import open_store

    cfg = load_plant(plant)
    store = open_store()
    if as_json:
        print_json(
            [
                {"id": m.id, "created": m.created, "objects": len(m.objects), "per_class": m.counts(),
                 "usable": not revoked_sources(store, m), "sources": m.sources}
                for m in list_manifests(store, cfg.id)
            ]
        )  # fmt: skip
        return
    table = Table(title=f"dataset versions at {cfg.id}")
    for col in ("id", "created", "objects", "per class", "usable", "sources"):
        table.add_column(col, overflow="fold")
    for m in list_manifests(store, cfg.id):
        counts = ", ".join(f"{k}: {v}" for k, v in m.counts().items())
        usable = "[red]no: a source batch was quarantined since[/]" if revoked_sources(store, m) else "yes"
        table.add_row(m.id[:12], m.created, str(len(m.objects)), counts, usable, "\n".join(m.sources))
    make_console().print(table)


@datasets_app.command("diff")
def datasets_diff(
    a: Annotated[str, typer.Argument(help="dataset id (or a unique prefix of 6+ characters)")],
    b: Annotated[str, typer.Argument(help="dataset id (or a unique prefix)")],
    plant: Annotated[str, typer.Option(help="plant id")],
) -> None:
    """Objects added, removed and relabelled between two dataset versions; counts per class.

    Example: andon datasets diff --plant plant-b 2e0abe65 9c41d7aa
    """
    from andon.config import load_plant
    from andon.data.datasets import diff, load_manifest, resolve_manifest_id
    from andon.storage import open_store

    cfg = load_plant(plant)
    store = open_store()
    ma = load_manifest(store, cfg.id, resolve_manifest_id(store, cfg.id, a))
    mb = load_manifest(store, cfg.id, resolve_manifest_id(store, cfg.id, b))
    d = diff(ma, mb)
    console = make_console()
    console.print(f"{ma.id[:12]} -> {mb.id[:12]}")
    console.print(
        f"  added {len(d.added)}, removed {len(d.removed)}, relabelled {len(d.relabelled)}, "
        f"content changed {len(d.changed_content)}"
    )
    for cls in sorted(set(d.counts_a) | set(d.counts_b)):
        ca, cb = d.counts_a.get(cls, 0), d.counts_b.get(cls, 0)
        console.print(f"  {cls:>10}: {ca} -> {cb} ({cb - ca:+d})")
    for key, old, new in d.relabelled[:20]:
        console.print(f"  relabelled {key}: {old} -> {new}")


@datasets_app.command("combine")
def datasets_combine(
    ids: Annotated[list[str], typer.Argument(help="dataset ids (or unique prefixes) to combine")],
    plant: Annotated[str, typer.Option(help="plant id")],
) -> None:
    """Combine accepted batches' datasets into one training set (a new version id).

    Example: andon datasets combine --plant plant-b 2e0abe65 9c41d7aa
    """
    from andon.config import load_plant
    from andon.data.datasets import combine, resolve_manifest_id
    from andon.storage import open_store

    cfg = load_plant(plant)
    store = open_store()
    m = combine(store, cfg.id, [resolve_manifest_id(store, cfg.id, i) for i in ids])
    counts = ", ".join(f"{k}: {v}" for k, v in m.counts().items())
    make_console().print(f"dataset {m.id}: {len(m.objects)} objects ({counts})")
