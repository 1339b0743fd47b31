"""The data gate (`andon validate`) and the dataset versions it makes (`andon datasets`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from rich.console import Console

from andon.cli.common import JsonOption, make_console, print_json, progress_bar
from andon.cli.root import app


class _DefaultBatchGroup(TyperGroup):
    """`andon validate --plant P BATCH` runs the `batch` subcommand; `andon validate learn ...` runs learn."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["batch", *args]
        return super().parse_args(ctx, args)


validate_app = typer.Typer(
    cls=_DefaultBatchGroup,
    no_args_is_help=True,
    help="The data gate: validate a raw batch (exit 0 accepted, 1 quarantined, 2 could not run), "
    "learn bounds from a known-good batch, check a table file.",
)
datasets_app = typer.Typer(help="Content-addressed dataset versions (manifests).", no_args_is_help=True)
app.add_typer(validate_app, name="validate")
app.add_typer(datasets_app, name="datasets")


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
