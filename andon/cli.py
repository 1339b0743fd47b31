"""The ``andon`` command line. Every heavy import happens inside the command that needs it, so
``andon --help`` answers instantly. Commands call the same functions the flows call."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from rich.console import Console

EXAMPLES = """\
[bold]Examples[/bold] (every command also has its own --help)

  start Prefect + MLflow (embedded):  andon up
  services, PIDs and URLs:            andon status
  stop what `up` started:             andon down
  a plant's merged config:            andon config show plant-b
  validate every plant config:        andon config validate
  synthetic parts as raw batches:     andon synth --plant plant-a --parts 2000
  ... with a lighting + focus drift:  andon synth --plant plant-b --brightness 0.7 --blur 1.5
  upload a labelled image folder:     andon ingest --plant plant-a ../shared/data/casting/test --limit 200
  ... sorted by class, defect-rich:   andon ingest --plant plant-x ./labelled --mixed --curated
  list objects under a prefix:        andon store ls plant-a/line-1/raw/
  validate a raw batch (the gate):    andon validate --plant plant-b plant-b/line-1/raw/2026-11-26/B
  learn bounds from a good batch:     andon validate learn --plant plant-b --reference PREFIX
  check a CSV against a table spec:   andon validate table ai4i2020 ai4i2020.csv
  dataset versions of a plant:        andon datasets list --plant plant-b
  what changed between two versions:  andon datasets diff --plant plant-b 2e0abe65 9c41d7aa
  train a challenger on a dataset:    andon train --plant plant-b --dataset 2e0abe65
  a good model for a new plant:       andon tune --plant plant-x --dataset 2e0abe65 --budget 20m --register
  the sensor (machine-failure) model: andon train-sensor --plant plant-a ai4i2020.csv --hold-out TWF
  challenger vs champion, the gate:   andon promote --plant plant-b
  put the previous champion back:     andon rollback plant-b.surface-defects --reason "false rejects"
  versions, one version, two:         andon models list plant-b.surface-defects | show M 3 | diff M 2 3
  score a batch with the champion:    andon score --plant plant-b plant-b/line-1/raw/2026-11-26/B
  score sensor readings (with SHAP):  andon score-sensor --plant plant-a ai4i2020.csv
  online scoring service:             andon serve --plant plant-a --port 8000
  the MES gateway (webhooks + MQTT):  andon gateway --mqtt mqtt://127.0.0.1:1883   (ANDON_MES_SECRET set)
  send a signed MES event (testing):  andon mes send sku.introduced --plant plant-a --sku S9
  why was part X rejected?            andon explain --plant plant-a PART_ID
  audit report of a window (HTML+CSV): andon audit --plant plant-a --from T1 --to T2 --only-defects
  monitor drift over the last hour:   andon monitor --plant plant-a --window 1h --drift-report
  open alerts / take one:             andon alerts list --plant plant-a | andon alerts ack ID --plant plant-a --who me
  queue informative parts to label:   andon label queue --plant plant-a --window 1h
  label them in the terminal:         andon label review --plant plant-a --reviewer me
  Label Studio round trip:            andon label export --plant plant-a tasks.json | andon label import ...
  the plants' Prefect deployments:    andon deployments render  |  andon deploy
  a worker for a plant's flow runs:   andon worker --plant plant-b
  the center's policy on all plants:  andon governance check
  central baseline, plant fine-tune:  andon governance central --dataset plant-b:ID | governance fine-tune ...
  the cross-plant report (HTML):      andon governance report
  the main job, end to end:           andon demo
"""

app = typer.Typer(
    name="andon",
    help="Andon keeps factory AI alive after launch day.\n\n" + EXAMPLES,
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class _DefaultBatchGroup(TyperGroup):
    """`andon validate --plant P BATCH` runs the `batch` subcommand; `andon validate learn ...` runs learn."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["batch", *args]
        return super().parse_args(ctx, args)


config_app = typer.Typer(help="Plant configs: base recipe + per-plant overrides.", no_args_is_help=True)
store_app = typer.Typer(help="The object store (file:// or s3://).", no_args_is_help=True)
validate_app = typer.Typer(
    cls=_DefaultBatchGroup,
    no_args_is_help=True,
    help="The data gate: validate a raw batch (exit 0 accepted, 1 quarantined, 2 could not run), "
    "learn bounds from a known-good batch, check a table file.",
)
datasets_app = typer.Typer(help="Content-addressed dataset versions (manifests).", no_args_is_help=True)
models_app = typer.Typer(help="Registered model versions (MLflow registry).", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(store_app, name="store")
app.add_typer(validate_app, name="validate")
app.add_typer(datasets_app, name="datasets")
app.add_typer(models_app, name="models")


def _console() -> Console:
    from rich.console import Console

    return Console()


def _settings() -> Any:
    from andon.settings import get_settings

    return get_settings()


def _progress(console: Console) -> Any:
    """A progress bar on stderr, so stdout stays clean for --json and pipes."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,  # gone when done (or failed): the result table is what stays
    )


def _parse_time(value: str | None, option: str = "--start") -> datetime | None:
    if value is None:
        return None
    from andon.errors import ConfigError

    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option}: not an ISO time: {value!r} (e.g. 2026-11-26T06:00:00+00:00)") from None
    if ts.tzinfo is None:
        raise ConfigError(f"{option}: give a timezone, e.g. {ts.strftime('%Y-%m-%dT%H:%M:%S')}+00:00")
    return ts


# ---------------------------------------------------------------- stack


@app.command()
def up() -> None:
    """Start the embedded Prefect and MLflow servers (idempotent).

    Example: andon up   (then open the printed UI URLs)
    """
    from andon import stack

    console = _console()
    statuses = stack.up(_settings(), on_event=lambda m: console.print(f"  {m}"))
    _print_status(console, statuses)


@app.command()
def down() -> None:
    """Stop the services `andon up` started (and nothing else).

    Example: andon down
    """
    from andon import stack

    console = _console()
    stopped = stack.down(_settings(), on_event=lambda m: console.print(f"  {m}"))
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@app.command()
def status() -> None:
    """Show each embedded service: state, PID, URL, log file.

    Example: andon status
    """
    from andon import stack

    _print_status(_console(), stack.service_status(_settings()))


def _print_status(console: Console, statuses: list[Any]) -> None:
    from rich.table import Table

    table = Table(title="Andon services")
    for col in ("service", "state", "pid", "url", "log"):
        table.add_column(col, overflow="fold")
    for s in statuses:
        colour = "green" if s.state == "running" else "yellow"
        table.add_row(s.name, f"[{colour}]{s.state}[/]", str(s.pid or "-"), s.url, str(s.log))
    console.print(table)


# ---------------------------------------------------------------- config


@config_app.command("show")
def config_show(
    plant: str,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of YAML")] = False,
) -> None:
    """Print a plant's merged, validated config.

    Example: andon config show plant-b
    """
    import json

    import yaml

    from andon.config import load_plant

    cfg = load_plant(plant)
    data = cfg.model_dump(mode="json")
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(f"# {plant}: configs/base.yaml + configs/plants/{plant}.yaml (sha256 {cfg.sha256()[:12]})\n")
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


@config_app.command("list")
def config_list() -> None:
    """List the plants that have a config.

    Example: andon config list
    """
    from rich.table import Table

    from andon.config import load_all_plants

    table = Table(title="Plants")
    for col in ("plant", "name", "timezone", "lines", "SKUs", "camera", "data"):
        table.add_column(col)
    for pid, cfg in load_all_plants().items():
        table.add_row(
            pid,
            cfg.name,
            cfg.timezone,
            ", ".join(cfg.line_ids),
            ", ".join(cfg.sku_codes),
            cfg.camera.model,
            f"{cfg.data.source} ({cfg.data.material})",
        )
    _console().print(table)


@config_app.command("validate")
def config_validate() -> None:
    """Validate every plant config; print every problem as `file: field: problem`.

    Example: andon config validate
    """
    from andon.config import load_all_plants

    plants = load_all_plants()
    _console().print(f"[green]ok[/]: {len(plants)} plant config(s) valid: {', '.join(plants)}")


@config_app.command("generate")
def config_generate(
    plants: Annotated[int, typer.Option(min=1, max=1000, help="how many plants")],
    out: Annotated[Path, typer.Option(help="a new configs folder (use it with ANDON_CONFIGS_DIR)")],
    seed: Annotated[int, typer.Option(help="same seed, same plants")] = 0,
) -> None:
    """Generate a configs folder with N plants that differ in camera, lighting, lines, SKUs and
    timezone (scale tests: deployments, governance report).

    Example: andon config generate --plants 47 --out /tmp/fleet && ANDON_CONFIGS_DIR=/tmp/fleet andon config list
    """
    from andon.governance.fleet import generate_plants

    ids = generate_plants(plants, out, seed)
    sys.stdout.write(f"wrote {len(ids)} plants to {out}/plants (base.yaml and governance.yaml copied)\n")


# ---------------------------------------------------------------- data


@app.command()
def synth(
    plant: Annotated[str, typer.Option(help="plant id, e.g. plant-b")],
    parts: Annotated[int, typer.Option(min=1, help="number of parts to produce")] = 2000,
    seed: Annotated[int, typer.Option(help="same seed, same bytes")] = 0,
    start: Annotated[str | None, typer.Option(help="time of the first part, ISO with timezone")] = None,
    line: Annotated[list[str] | None, typer.Option(help="only these lines (repeatable)")] = None,
    defect_rate: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="override the plant's rate")] = None,
    brightness: Annotated[float, typer.Option(min=0.05, max=4.0, help="lighting gain drift (1 = none)")] = 1.0,
    gamma: Annotated[float, typer.Option(min=0.1, max=5.0, help="gamma drift (1 = none)")] = 1.0,
    unevenness: Annotated[float, typer.Option(min=0.0, max=1.0, help="extra uneven illumination")] = 0.0,
    rotation: Annotated[float, typer.Option(min=-180.0, max=180.0, help="camera rotation drift, degrees")] = 0.0,
    blur: Annotated[float, typer.Option(min=0.0, max=10.0, help="focus blur drift (sigma, px)")] = 0.0,
    noise: Annotated[float, typer.Option(min=0.0, max=64.0, help="extra sensor noise (grey levels)")] = 0.0,
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
    console = _console()
    with _progress(console) as bar:
        task = bar.add_task(f"{plant}: rendering parts", total=parts)
        batches = synthesize_plant(
            cfg,
            store,
            parts,
            seed=seed,
            start=_parse_time(start),
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
    from andon.ingest import IMAGE_SUFFIXES, ingest_folder
    from andon.storage import open_store

    cfg = load_plant(plant)
    store = open_store()
    total = sum(1 for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else 0
    console = _console()
    with _progress(console) as bar:
        task = bar.add_task(f"{plant}: uploading {path.name}", total=min(total, limit or total) or None)
        batches = ingest_folder(
            cfg,
            store,
            path,
            line=line,
            sku=sku,
            limit=limit,
            start=_parse_time(start),
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
) -> None:
    """List objects under a prefix with their sizes.

    Example: andon store ls plant-a/line-1/raw/
    """
    from andon.storage import open_store

    store = open_store()
    n = size = 0
    for obj in store.list(prefix):
        if n < limit:
            sys.stdout.write(f"{obj.size:>10}  {obj.key}\n")
        n += 1
        size += obj.size
    if n > limit:
        sys.stdout.write(f"... {n - limit} more\n")
    sys.stdout.write(f"{n} object(s), {size / 1e6:.1f} MB under {store.url}/{prefix}\n")


# ---------------------------------------------------------------- validation


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

    console = _console()
    try:
        cfg = load_plant(plant)
        store = open_store()
        with _progress(console) as bar:
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
    _console().print(
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

    console = _console()
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
            from andon.realdata import read_secom

            return read_secom(path)
        return pd.read_csv(path, encoding="utf-8-sig")
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read as a table: {exc}") from None


@datasets_app.command("list")
def datasets_list(plant: Annotated[str, typer.Option(help="plant id")]) -> None:
    """Dataset versions of a plant, oldest first.

    Example: andon datasets list --plant plant-b
    """
    from rich.table import Table

    from andon.config import load_plant
    from andon.datasets import list_manifests, revoked_sources
    from andon.storage import open_store

    cfg = load_plant(plant)
    store = open_store()
    table = Table(title=f"dataset versions at {cfg.id}")
    for col in ("id", "created", "objects", "per class", "usable", "sources"):
        table.add_column(col, overflow="fold")
    for m in list_manifests(store, cfg.id):
        counts = ", ".join(f"{k}: {v}" for k, v in m.counts().items())
        usable = "[red]no: a source batch was quarantined since[/]" if revoked_sources(store, m) else "yes"
        table.add_row(m.id[:12], m.created, str(len(m.objects)), counts, usable, "\n".join(m.sources))
    _console().print(table)


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
    from andon.datasets import diff, load_manifest, resolve_manifest_id
    from andon.storage import open_store

    cfg = load_plant(plant)
    store = open_store()
    ma = load_manifest(store, cfg.id, resolve_manifest_id(store, cfg.id, a))
    mb = load_manifest(store, cfg.id, resolve_manifest_id(store, cfg.id, b))
    d = diff(ma, mb)
    console = _console()
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
    from andon.datasets import combine, resolve_manifest_id
    from andon.storage import open_store

    cfg = load_plant(plant)
    store = open_store()
    m = combine(store, cfg.id, [resolve_manifest_id(store, cfg.id, i) for i in ids])
    counts = ", ".join(f"{k}: {v}" for k, v in m.counts().items())
    _console().print(f"dataset {m.id}: {len(m.objects)} objects ({counts})")


# ---------------------------------------------------------------- models


@app.command()
def train(
    plant: Annotated[str, typer.Option(help="plant id")],
    dataset: Annotated[list[str], typer.Option(help="dataset id or unique prefix (repeatable: combined)")],
    epochs: Annotated[int | None, typer.Option(min=1, help="override the recipe's epochs")] = None,
    model: Annotated[str | None, typer.Option(help="override the recipe's network")] = None,
    parent: Annotated[int | None, typer.Option(help="fine-tune from this version of the plant's model")] = None,
) -> None:
    """Train a challenger on validated datasets; log it to MLflow and register it.

    Example: andon train --plant plant-b --dataset 2e0abe65
    """
    from andon.config import load_plant
    from andon.datasets import resolve_manifest_id
    from andon.promotion import verdict_line
    from andon.registry import model_name
    from andon.storage import open_store
    from andon.training.run import train_plant

    cfg = load_plant(plant)
    store = open_store()
    ids = [resolve_manifest_id(store, cfg.id, d) for d in dataset]
    recipe = cfg.recipe
    if epochs:
        recipe = recipe.model_copy(update={"training": recipe.training.model_copy(update={"epochs": epochs})})
    if model:
        recipe = recipe.model_copy(update={"model": recipe.model.model_copy(update={"name": model})})
    console = _console()

    def show(log: Any) -> None:
        console.print(
            f"  epoch {log.epoch}: train loss {log.train_loss:.4f}, val loss {log.val_loss:.4f}, "
            f"val overkill at the escape target {-log.val_objective:.1%}, val acc {log.val_accuracy:.4f} "
            f"({log.seconds:.0f} s, {log.images_per_s:.0f} img/s)"
        )

    parent_ref = (model_name(cfg.id, recipe.task), parent) if parent else None
    out = train_plant(store, cfg, ids, recipe=recipe, parent=parent_ref, on_epoch=show)
    m = out.metrics
    console.print(
        f"[green]{out.model_name} v{out.version}[/] (challenger), held-out test split at its operating point "
        f"(defect score >= {out.operating_point['threshold']:.4g}): {verdict_line(m, cfg)}, "
        f"ROC-AUC {m.get('roc_auc', float('nan')):.4f}; best epoch {out.best_epoch}; {out.seconds:.0f} s"
    )


@app.command()
def tune(
    plant: Annotated[str, typer.Option(help="plant id")],
    dataset: Annotated[list[str], typer.Option(help="validated dataset version id(s) (repeatable)")],
    budget: Annotated[str, typer.Option(help="time budget: 20m, 1h ...")] = "20m",
    register: Annotated[
        bool, typer.Option("--register", help="register the best candidate as the challenger (the gate decides)")
    ] = False,
) -> None:
    """Find a good model for a plant within a time budget: the recipe, then a small grid (epochs,
    sampling, width, classifier + anomaly model, input size), each a child run in MLflow judged by
    escape and overkill at its own operating point; prints the frontier and picks the best.

    Example: andon tune --plant plant-x --dataset 2e0abe65 --budget 20m --register
    """
    from rich.table import Table

    from andon.config import load_plant
    from andon.datasets import resolve_manifest_id
    from andon.quality import fmt_rate
    from andon.storage import open_store
    from andon.training.tune import tune as run_tune

    cfg, store = load_plant(plant), open_store()
    ids = [resolve_manifest_id(store, cfg.id, d) for d in dataset]
    seconds = _duration(budget, "--budget").total_seconds()
    console = _console()
    with _progress(console) as bar:
        job = bar.add_task(f"{plant}: tuning within {budget}", total=None)

        def show(c: Any, i: int, n: int) -> None:
            bar.update(job, total=n, completed=i)
            if c.status == "trained":
                m = c.metrics
                what = f"escape {fmt_rate(m['escape_rate'])}, overkill {fmt_rate(m['overkill_rate'])}"
            else:
                what = c.note
            console.print(f"  {i}/{n} {c.name}: {c.status} ({c.seconds:.0f} s) {what}")

        cands, chosen, run_id = run_tune(store, cfg, ids, seconds, register=register, on_candidate=show)
    table = Table(title=f"{plant}: candidates at their own operating points (held-out test split); * = frontier")
    for col in ("candidate", "escape", "overkill", "ROC-AUC", "defects", "seconds", "status"):
        table.add_column(col)
    for c in cands:
        m = c.metrics
        table.add_row(
            ("* " if c.frontier else "  ") + c.name,
            fmt_rate(m["escape_rate"], m.get("escape_rate_upper")) if m else "-",
            fmt_rate(m["overkill_rate"]) if m else "-",
            f"{m.get('roc_auc', float('nan')):.4f}" if m else "-",
            f"{m.get('defects', 0):.0f}" if m else "-",
            f"{c.seconds:.0f}",
            c.status + (f": {c.note}" if c.note else ""),
        )
    console.print(table)
    console.print(f"MLflow: the tune run {run_id} (child runs per candidate; tune/frontier.png, tune/candidates.json)")
    if chosen is None:
        console.print("[red]no candidate trained[/]")
        raise typer.Exit(1)
    note = chosen.note or "not registered; --register makes it the challenger"
    console.print(f"best: [bold]{chosen.name}[/] ({note})")


@app.command("train-sensor")
def train_sensor_cmd(
    table: Annotated[Path, typer.Argument(help="sensor table (CSV), e.g. the AI4I 2020 file")],
    plant: Annotated[str, typer.Option(help="plant id")],
    spec: Annotated[str, typer.Option(help="table spec in configs/tables/ (its gate runs first)")] = "ai4i2020",
    hold_out: Annotated[list[str] | None, typer.Option(help="failure types to leave out (repeatable)")] = None,
    epochs: Annotated[int, typer.Option(min=1, max=1000)] = 40,
) -> None:
    """Train the machine-failure model (MLP, one head per failure type) on a sensor table.

    Example: andon train-sensor --plant plant-a ../shared/data/ai4i2020/ai4i2020.csv --hold-out TWF
    """
    from andon.config import load_plant
    from andon.errors import DataError
    from andon.storage import open_store
    from andon.training.sensor import store_table, train_sensor

    if not table.is_file():
        raise DataError(f"{table}: no such file")
    cfg = load_plant(plant)
    store = open_store()
    manifest_id, _ = store_table(store, cfg, table)
    out = train_sensor(store, cfg, manifest_id, spec_name=spec, hold_out=tuple(hold_out or ()), epochs=epochs)
    m = out.metrics
    heads = ", ".join(k[:-7] for k in m if k.endswith("_recall") and not k.startswith("failure"))
    _console().print(
        f"[green]{out.model_name} v{out.version}[/] (challenger) heads: {heads}; any-failure recall "
        f"{m['failure_recall']:.3f}, precision {m['failure_precision']:.3f}, F1 {m['failure_f1']:.3f}; "
        f"dataset {out.manifest_id[:12]}; {out.seconds:.0f} s"
    )


@app.command()
def promote(
    plant: Annotated[str, typer.Option(help="plant id")],
    force: Annotated[bool, typer.Option("--force", help="promote even if rules fail (recorded as forced)")] = False,
    reason: Annotated[str, typer.Option(help="why (kept with the version)")] = "",
) -> None:
    """Challenger vs champion on the golden set; promote if every rule passes. Exit 1 if refused.

    Example: andon promote --plant plant-b
    """
    from andon.config import load_plant
    from andon.promotion import promote as run_promote
    from andon.registry import model_name
    from andon.storage import open_store

    cfg = load_plant(plant)
    d = run_promote(open_store(), cfg, force=force, reason=reason)
    console = _console()
    _print_gate_metrics(console, d)
    from andon.promotion import verdict_line

    console.print(f"challenger v{d.challenger}: {verdict_line(d.challenger_metrics, cfg)}")
    name = model_name(cfg.id, cfg.recipe.task)
    if d.passed:
        note = " [yellow](FORCED)[/]" if d.forced else ""
        console.print(f"[green]PROMOTED[/]{note}: {name}@champion = v{d.challenger} (was {d.champion or 'none'})")
        _post_event(
            "andon.model.promoted", cfg.id, {"version": d.challenger, "previous": d.champion, "forced": d.forced}
        )
    else:
        for v in d.violations:
            console.print(f"  [red]x[/] {v}")
        console.print(f"[red]REFUSED[/]: v{d.challenger} stays challenger (reasons recorded on the version)")
        raise typer.Exit(1)


def _print_gate_metrics(console: Console, d: Any) -> None:
    from rich.table import Table

    table = Table(title=f"evaluated on {d.evaluated_on}, each version at its own operating point")
    table.add_column("metric")
    table.add_column(f"challenger v{d.challenger}")
    table.add_column(f"champion v{d.champion}" if d.champion else "champion (none)")
    for k in GATE_METRICS:
        if k in d.challenger_metrics:
            cp = d.champion_metrics.get(k) if d.champion_metrics else None
            table.add_row(k, _fmt_metric(k, d.challenger_metrics[k]), "-" if cp is None else _fmt_metric(k, cp))
    console.print(table)


# the order a model is judged in: the floor's numbers first, accuracy second
GATE_METRICS = (
    "escape_rate", "escape_rate_upper", "overkill_rate", "overkill_rate_upper", "defects", "goods", "threshold",
    "accuracy", "defect_precision", "roc_auc", "ece", "latency_ms",
)  # fmt: skip


def _fmt_metric(key: str, value: float) -> str:
    if key.startswith(("escape", "overkill")):
        return f"{value * 100:.2f} %"
    if key in ("defects", "goods"):
        return f"{value:.0f}"
    return f"{value:.4f}"


def _post_event(event: str, plant: str, payload: dict[str, Any]) -> None:
    from andon import events

    settings = _settings()
    eid = events.event_id(event, plant, *payload.values())
    # a monitoring alert carries the label retrain triggers match; other facts are just the plant
    resource = events.alert_resource(payload) if "retrain" in payload else events.plant_resource(plant)
    if not events.post_event(settings.prefect_api_url, event, resource, payload, eid):
        sys.stderr.write(f"note: {event} not delivered (Prefect at {settings.prefect_api_url} did not answer)\n")


@app.command()
def rollback(
    model: Annotated[str, typer.Argument(help="registered model, e.g. plant-a.surface-defects")],
    reason: Annotated[str, typer.Option(help="why (kept with the version for the audit trail)")],
    to: Annotated[int | None, typer.Option(help="version to restore (default: previous-champion)")] = None,
) -> None:
    """Move champion back to the previous champion (or --to VERSION); the next batch uses it.

    Example: andon rollback plant-a.surface-defects --reason "false rejects on line 2"
    """
    import time

    from andon.config import load_plant
    from andon.promotion import rollback as run_rollback
    from andon.registry import plant_of

    t0 = time.perf_counter()
    cfg = load_plant(plant_of(model))
    before, after = run_rollback(cfg, reason, to)
    registry_s = time.perf_counter() - t0
    _post_event("andon.model.rolled_back", cfg.id, {"from": before, "to": after, "reason": reason})
    _console().print(
        f"[green]ROLLED BACK[/] {model}@champion: v{before} -> v{after} (previous-champion = v{before}); "
        f"registry {registry_s:.2f} s"
    )


@models_app.command("list")
def models_list(model: Annotated[str, typer.Argument(help="registered model, e.g. plant-b.surface-defects")]) -> None:
    """Every version with its aliases, data, code and held-out metrics.

    Example: andon models list plant-b.surface-defects
    """
    from rich.table import Table

    from andon.quality import fmt_rate
    from andon.registry import list_versions

    table = Table(title=f"{model} (held-out test split, each at its operating point)")
    for col in ("version", "aliases", "escape", "overkill", "defects", "threshold", "accuracy", "created"):
        table.add_column(col)
    nan = float("nan")
    for v in list_versions(model):
        m = v.metrics
        table.add_row(
            str(v.version),
            ", ".join(v.aliases),
            fmt_rate(m.get("test_escape_rate", nan), m.get("test_escape_rate_upper")),
            fmt_rate(m.get("test_overkill_rate", nan), m.get("test_overkill_rate_upper")),
            f"{m.get('test_defects', nan):.0f}",
            v.tags.get("operating_point.threshold", "-"),
            f"{m.get('test_accuracy', nan):.4f}",
            v.created,
        )
    _console().print(table)


@models_app.command("show")
def models_show(
    model: Annotated[str, typer.Argument(help="registered model")],
    version: Annotated[int, typer.Argument(help="version number")],
) -> None:
    """One version: lineage tags, alias history, held-out metrics.

    Example: andon models show plant-b.surface-defects 2
    """
    from andon.registry import version_info

    v = version_info(model, version)
    console = _console()
    console.print(f"[bold]{model} v{v.version}[/] aliases: {', '.join(v.aliases) or '-'}; run {v.run_id}; {v.created}")
    test = {k[5:]: score for k, score in v.metrics.items() if k.startswith("test_")}
    if "escape_rate" in test:
        from andon.config import load_plant
        from andon.errors import AndonError
        from andon.promotion import verdict_line
        from andon.registry import plant_of

        try:
            cfg = load_plant(plant_of(model))
            console.print(f"  [bold]held-out, at its operating point[/]: {verdict_line(test, cfg)}")
        except AndonError:  # the central model or a plant without a config here: the numbers below say it
            pass
    for k, val in sorted(v.tags.items()):
        console.print(f"  {k}: {val}")
    order = [k for k in GATE_METRICS if k in test] + sorted(k for k in test if k not in GATE_METRICS)
    for k in order:
        console.print(f"  test_{k}: {_fmt_metric(k, test[k])}")


@models_app.command("diff")
def models_diff(
    model: Annotated[str, typer.Argument(help="registered model")],
    a: Annotated[int, typer.Argument(help="older version")],
    b: Annotated[int, typer.Argument(help="newer version")],
    full: Annotated[bool, typer.Option("--full", help="print the code diff, not only its --stat")] = False,
) -> None:
    """What changed between two versions: params, lineage, metrics, data, code, environment.

    Example: andon models diff plant-b.surface-defects 1 2
    """
    from andon.config import load_plant
    from andon.promotion import diff_versions
    from andon.registry import plant_of
    from andon.storage import open_store

    d = diff_versions(open_store(), load_plant(plant_of(model)), a, b)
    console = _console()
    console.rule(f"{model}: v{a} -> v{b}")
    console.print("[bold]metrics (held-out test split, each at its operating point)[/]")
    lower_is_better = ("escape", "overkill", "ece", "latency")
    metrics = {k[5:]: v for k, v in d["metrics"].items()}
    for k in [k for k in GATE_METRICS if k in metrics] + sorted(k for k in metrics if k not in GATE_METRICS):
        x, y, delta = metrics[k]
        good = -delta if k.startswith(lower_is_better) else delta
        colour = "green" if good > 0 else "red" if good < 0 else "white"
        if k.startswith(("escape", "overkill")):
            console.print(f"  {k:<20} {x * 100:.2f} % -> {y * 100:.2f} %  [{colour}]{delta * 100:+.2f} points[/]")
        else:
            console.print(f"  {k:<20} {x:.4f} -> {y:.4f}  [{colour}]{delta:+.4f}[/]")
    console.print("[bold]lineage[/]" + ("" if d["tags"] else ": identical"))
    for k, (x, y) in d["tags"].items():
        console.print(f"  {k}: {x} -> {y}")
    console.print("[bold]params[/]" + ("" if d["params"] else ": identical"))
    for k, (x, y) in d["params"].items():
        console.print(f"  {k}: {x} -> {y}")
    data = d["data"]
    if data is None:
        console.print("[bold]data[/]: same dataset")
    elif "error" in data:
        console.print(f"[bold]data[/]: {data['error']}")
    else:
        console.print(
            f"[bold]data[/]: +{data['added_n']} / -{data['removed_n']} objects, "
            f"{len(data['relabelled'])} relabelled; per class {data['counts_a']} -> {data['counts_b']}"
        )
        for r in data["relabelled"][:10]:
            console.print(f"  relabelled {r['key']}: {r['from']} -> {r['to']}")
    code = d["code"]
    console.print("[bold]code[/] (training and preprocessing)")
    console.print("  " + code.get("note", code.get("stat", "")).strip().replace("\n", "\n  "))
    if full and code.get("diff"):
        sys.stdout.write(code["diff"] + "\n")
    console.print("[bold]environment[/]" + ("" if d["environment"] else ": identical"))
    for k, (x, y) in d["environment"].items():
        console.print(f"  {k}: {x} -> {y}")


@models_app.command("reproduce")
def models_reproduce(
    model: Annotated[str, typer.Argument(help="registered model")],
    version: Annotated[int, typer.Argument(help="version to re-train")],
    allow_dirty: Annotated[
        bool, typer.Option("--allow-dirty", help="run even if the code is not at the commit")
    ] = False,
    tolerance: Annotated[float, typer.Option(min=0.0, max=1.0, help="allowed metric difference")] = 0.01,
) -> None:
    """Re-train a version from its recorded dataset, recipe and commit; compare the metrics.

    Example: andon models reproduce plant-b.surface-defects 2
    """
    from rich.table import Table

    from andon.config import load_plant
    from andon.promotion import reproduce
    from andon.registry import plant_of
    from andon.storage import open_store

    r = reproduce(open_store(), load_plant(plant_of(model)), version, allow_dirty, tolerance)
    table = Table(title=f"{model} v{version} reproduced (run {r.run_id[:8]}), tolerance {tolerance}")
    for col in ("metric", "registered", "reproduced", "delta", ""):
        table.add_column(col)
    for key, a, b, d, ok in r.rows:
        table.add_row(key, f"{a:.4f}", f"{b:.4f}", f"{d:+.4f}", "[green]ok[/]" if ok else "[red]differs[/]")
    _console().print(table)
    raise typer.Exit(0 if r.ok else 1)


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
    from andon.data import parquet_to_frame, read_plant_batch
    from andon.scoring import require_accepted, score_batch
    from andon.storage import open_store

    store, cfg = open_store(), load_plant(plant)
    require_accepted(store, cfg, batch)
    total = len(parquet_to_frame(store.get(read_plant_batch(store, cfg.id, batch).metadata_key)))
    with _progress(_console()) as bar:
        task = bar.add_task(f"scoring {cfg.id}", total=total)
        s = score_batch(store, cfg, batch, explain=explain, progress=lambda n: bar.advance(task, n), gated=True)
    _console().print(
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
    from andon.sensor_scoring import score_sensor_table
    from andon.storage import open_store

    try:
        frame = pd.read_csv(table, encoding="utf-8-sig")
    except (ValueError, UnicodeDecodeError) as exc:
        from andon.errors import DataError

        raise DataError(f"{table}: not a readable CSV ({exc})") from None
    s = score_sensor_table(open_store(), load_plant(plant), frame, explain=explain)
    _console().print(
        f"{s.scored} of {s.rows} readings scored by {s.model} v{s.version} in {s.seconds:.1f} s; "
        f"{s.failures} predicted failures ({s.explained} with SHAP values); {s.errors} error row(s)"
    )


@app.command()
def serve(
    plant: Annotated[str, typer.Option(help="plant id")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    reload_seconds: Annotated[float, typer.Option(min=0.1, help="how often the champion alias is re-read")] = 2.0,
    max_upload_mb: Annotated[float, typer.Option(min=0.01, help="larger requests get 413")] = 4.0,
    explain: Annotated[bool, typer.Option(help="saliency maps for flagged parts (in the background)")] = True,
) -> None:
    """Online scoring for one plant: POST /v1/score (an image, or JSON with an object_key), GET /healthz.

    Example: andon serve --plant plant-a --port 8000
             curl -H 'Content-Type: image/png' --data-binary @part.png 'localhost:8000/v1/score?part_id=P1'
    """
    from andon.config import load_plant
    from andon.serve import serve as run_service
    from andon.storage import open_store

    cfg = load_plant(plant)
    sys.stderr.write(f"andon: serving {cfg.id} on http://{host}:{port} (POST /v1/score, GET /healthz)\n")
    run_service(
        cfg,
        open_store(),
        host,
        port,
        reload_seconds=reload_seconds,
        max_bytes=int(max_upload_mb * 1024 * 1024),
        explain=explain,
    )


@app.command()
def gateway(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="default ANDON_GATEWAY_PORT (8090)")] = None,
    mqtt: Annotated[str | None, typer.Option(help="also subscribe to the plants' MES topics: mqtt://host:1883")] = None,
    prefect_api_url: Annotated[str | None, typer.Option(help="where events go; default ANDON_PREFECT_API_URL")] = None,
) -> None:
    """The MES gateway: POST /v1/mes/events (HMAC-signed), GET /healthz, GET /metrics; a durable
    outbox (ANDON_GATEWAY_OUTBOX_URL, default SQLite under ANDON_HOME) forwarded to Prefect.

    Example: andon gateway --port 8090 --mqtt mqtt://127.0.0.1:1883   (with ANDON_MES_SECRET set)
    """
    from andon.gateway.app import build_gateway, create_app
    from andon.gateway.mqtt import redact
    from andon.httpkit import run_server
    from andon.settings import get_settings

    gw = build_gateway(api_url=prefect_api_url)
    bridge = None
    if mqtt:
        from andon.gateway.mqtt import MqttBridge

        bridge = MqttBridge(gw, mqtt)
        bridge.start()
    port = port or get_settings().gateway_port
    sys.stderr.write(
        f"andon: MES gateway on http://{host}:{port} (POST /v1/mes/events), outbox {gw.outbox._safe_url()}, "
        f"forwarding to {gw.forwarder.api_url if gw.forwarder else '-'}{', MQTT ' + redact(mqtt) if mqtt else ''}\n"
    )
    try:
        run_server(create_app(gw), host, port)
    finally:
        if bridge:
            bridge.stop()
        if gw.forwarder:
            gw.forwarder.stop()


deployments_app = typer.Typer(help="The plants' Prefect deployments (deployments/prefect.yaml, from configs/).")
app.add_typer(deployments_app, name="deployments")
DEPLOYMENTS_FILE = Path("deployments") / "prefect.yaml"


@deployments_app.command("render")
def deployments_render(
    check: Annotated[bool, typer.Option(help="only check that the file is up to date (exit 1 if not)")] = False,
    out: Annotated[Path | None, typer.Option(help="where to write (default deployments/prefect.yaml)")] = None,
) -> None:
    """Write deployments/prefect.yaml from configs/: per plant score, validate, monitor (every
    window), monitor-hourly, drift-nightly and retrain with its event triggers and schedule.

    Example: andon deployments render
    """
    from andon.config import list_plants, load_plant
    from andon.deployments import render_yaml
    from andon.settings import REPO_ROOT

    text = render_yaml([load_plant(p) for p in list_plants()])
    path = out or REPO_ROOT / DEPLOYMENTS_FILE
    if check:
        if not path.exists() or path.read_text() != text:
            sys.stderr.write(f"{path} is out of date: run `andon deployments render`\n")
            raise typer.Exit(1)
        sys.stdout.write(f"{path} is up to date\n")
        return
    path.write_text(text)
    sys.stdout.write(f"wrote {path} ({text.count('- name: ')} deployments)\n")


@deployments_app.command("k8s")
def deployments_k8s(
    out: Annotated[Path, typer.Option(help="folder for the templates")] = Path("infra/k8s"),
) -> None:
    """Write one Kubernetes work-pool base job template per plant (work-pool-<plant>.json), for
    `prefect work-pool create andon-<plant> --type kubernetes --base-job-template FILE`.

    Example: andon deployments k8s --out infra/k8s
    """
    import json

    from andon.config import list_plants, load_plant
    from andon.deployments import k8s_base_job_template

    out.mkdir(parents=True, exist_ok=True)
    plants = list_plants()
    for p in plants:
        (out / f"work-pool-{p}.json").write_text(json.dumps(k8s_base_job_template(load_plant(p)), indent=1) + "\n")
    sys.stdout.write(f"wrote {len(plants)} work-pool templates to {out}\n")


@app.command()
def deploy(
    prefect_api_url: Annotated[str | None, typer.Option(help="default ANDON_PREFECT_API_URL")] = None,
    file: Annotated[Path | None, typer.Option(help="the rendered file (default deployments/prefect.yaml)")] = None,
) -> None:
    """Apply deployments/prefect.yaml to the Prefect server: renders it, creates each plant's
    process work pool (andon-<plant>), then applies every deployment with its schedules and
    triggers (what `prefect deploy --all` does, concurrently); logs what changed. Start a worker
    per plant with `andon worker --plant <plant>`.

    Example: andon deploy
    """
    import getpass
    import os
    import subprocess

    from andon.config import list_plants, load_plant
    from andon.deployments import log_deploy, render, work_pool
    from andon.errors import ServiceError
    from andon.settings import REPO_ROOT
    from andon.storage import open_store

    path = (file or REPO_ROOT / DEPLOYMENTS_FILE).resolve()
    deployments_render(check=False, out=path)
    api = prefect_api_url or _settings().prefect_api_url
    env = os.environ | {"PREFECT_API_URL": api, "ANDON_REPO_ROOT": str(REPO_ROOT)}
    plants = list_plants()
    steps = [
        [sys.executable, "-m", "tasks.work_pools", *(work_pool(p) for p in plants)],
        [sys.executable, "-m", "tasks.apply_deployments", str(path)],  # = `prefect deploy --all`, faster
    ]
    for cmd in steps:
        done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ServiceError(f"{' '.join(cmd[1:4])} failed: {(done.stderr or done.stdout).strip()[-2000:]}")
    record = log_deploy(open_store(), render([load_plant(p) for p in plants]), api, getpass.getuser())
    summary = ", ".join(f"{len(record[k])} {k}" for k in ("added", "removed", "changed"))
    sys.stdout.write(f"deployed {path.name} to {api} ({summary}; logged under governance/deployments/)\n")


@app.command()
def worker(
    plant: Annotated[str, typer.Option(help="plant id: the worker polls its pool andon-<plant>")],
    prefect_api_url: Annotated[str | None, typer.Option(help="default ANDON_PREFECT_API_URL")] = None,
    run_once: Annotated[bool, typer.Option("--run-once", help="take the runs due now, then exit")] = False,
) -> None:
    """A Prefect process worker for one plant's work pool, pointed at Andon's Prefect server
    (`prefect worker start --pool andon-<plant>` with PREFECT_API_URL set; the API credential
    PREFECT_API_AUTH_STRING is passed on from the environment, never on the command line).

    Example: andon worker --plant plant-b
    """
    import os

    from andon.config import load_plant
    from andon.deployments import work_pool
    from andon.settings import REPO_ROOT

    pool = work_pool(load_plant(plant).id)
    api = prefect_api_url or _settings().prefect_api_url
    env = os.environ | {"PREFECT_API_URL": api, "ANDON_REPO_ROOT": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    if run_once:
        cmd.append("--run-once")
    sys.stderr.write(f"andon: worker for {pool} on {api}\n")
    os.chdir(REPO_ROOT)  # the deployments' entrypoints (flows/...) are relative to the checkout
    os.execvpe(cmd[0], cmd, env)


mes_app = typer.Typer(help="MES events: send a signed one to a gateway (for testing and integration).")
app.add_typer(mes_app, name="mes")


@mes_app.command("send")
def mes_send(
    kind: Annotated[
        str, typer.Argument(help="sku.introduced | failure_type.logged | product_mix.changed | line.reconfigured")
    ],
    plant: Annotated[str, typer.Option(help="plant id")],
    line: Annotated[str | None, typer.Option(help="line id")] = None,
    sku: Annotated[str | None, typer.Option(help="sku.introduced: the new SKU")] = None,
    failure_type: Annotated[str | None, typer.Option(help="failure_type.logged: e.g. TWF")] = None,
    change: Annotated[str | None, typer.Option(help="line.reconfigured: what changed")] = None,
    mix: Annotated[str | None, typer.Option(help='product_mix.changed: JSON {"new": {...}, "previous": {...}}')] = None,
    message_id: Annotated[str | None, typer.Option(help="the MES message id (default: a new one)")] = None,
    url: Annotated[str, typer.Option(help="the gateway")] = "http://127.0.0.1:8090",
) -> None:
    """Sign and POST one MES message to a gateway; prints its answer.

    Example: andon mes send sku.introduced --plant plant-a --line line-1 --sku S9   (with ANDON_MES_SECRET set)
    """
    import json
    import uuid
    from datetime import UTC

    import httpx

    from andon.errors import ConfigError
    from andon.gateway.signing import headers
    from andon.settings import get_settings

    secret = get_settings().mes_secret
    if secret is None:
        raise ConfigError("set ANDON_MES_SECRET to sign MES messages")
    msg: dict[str, object] = {
        "type": kind,
        "message_id": message_id or f"cli-{uuid.uuid4()}",
        "plant": plant,
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    if line:
        msg["line"] = line
    extra = {"sku": sku, "failure_type": failure_type, "change": change}
    msg |= {k: v for k, v in extra.items() if v is not None}
    if mix:
        both = json.loads(mix)
        msg |= {"mix": both.get("new"), "previous_mix": both.get("previous")}
    body = json.dumps(msg).encode()
    signed = headers(body, secret.get_secret_value())
    resp = httpx.post(f"{url.rstrip('/')}/v1/mes/events", content=body, headers=signed)
    sys.stdout.write(resp.text + "\n")
    if resp.status_code >= 300:
        raise typer.Exit(1)


def _window(start: str | None, end: str | None, days: int) -> tuple[datetime, datetime]:
    from andon.audit import default_window

    lo, hi = default_window(days)
    return _parse_time(start, "--from") or lo, _parse_time(end, "--to") or hi


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

    from andon.audit import find_part
    from andon.config import load_plant
    from andon.storage import open_store

    lo, hi = _window(start, end, 30)
    rec = find_part(open_store(), load_plant(plant), part_id, lo, hi)
    if as_json:  # json.dumps escapes every control character (\u001b), so the terminal gets none
        sys.stdout.write(json.dumps(rec, indent=1, default=str) + "\n")
        return

    # what was logged came from the line (SKU, part id, error text): shown as plain Text (never
    # parsed as Rich markup, so `[/]` is just text) with control characters made visible
    table = Table(title=Text(_terminal_safe(f"{part_id}: {rec['predicted_class']}")), show_header=False)
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
        table.add_row(k, Text(_terminal_safe(str(v))))
    _console().print(table)


_BIDI = {0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069, 0x200E, 0x200F}


def _terminal_safe(text: str) -> str:
    """``text`` with every control character (ANSI escapes, carriage returns, bidi overrides...)
    shown as a visible escape such as ``\\x1b``, so data can never drive the operator's terminal."""
    import unicodedata

    return "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) == "Cc" or ord(ch) in _BIDI else ch
        for ch in text
    )


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
    from andon.audit import audit_report
    from andon.config import load_plant
    from andon.storage import open_store

    lo, hi = _window(start, end, 30)
    cfg = load_plant(plant)
    out = out or Path(f"audit-{cfg.id}-{lo:%Y%m%dT%H%M}-{hi:%Y%m%dT%H%M}")
    with _progress(_console()) as bar:
        task = bar.add_task("rendering parts", total=None)
        r = audit_report(
            open_store(), cfg, lo, hi, out, only_defects=only_defects, progress=lambda n: bar.advance(task, n)
        )
    if r.floor.get("reviewed"):
        _console().print(f"reviewed parts: {r.floor['reviewed']}; escapes {r.floor['escapes']}; "
                         f"overkills {r.floor['overkills']}")  # fmt: skip
    _console().print(
        f"{r.rows} parts in {r.seconds:.1f} s: {r.html_path} and {r.csv_path} (copy in the store: {r.report_key})"
    )


def _duration(value: str, option: str = "--window") -> Any:
    from datetime import timedelta

    from andon.errors import ConfigError

    units = {"m": 60, "h": 3600, "d": 86400}
    if len(value) < 2 or value[-1] not in units or not value[:-1].isdigit() or int(value[:-1]) == 0:
        raise ConfigError(f"{option}: {value!r} is not a duration like 5m, 1h or 24h")
    return timedelta(seconds=int(value[:-1]) * units[value[-1]])


@app.command()
def monitor(
    plant: Annotated[str, typer.Option(help="plant id")],
    window: Annotated[str, typer.Option(help="5m, 1h, 24h ...")] = "1h",
    at: Annotated[str | None, typer.Option(help="end of the window, ISO time (default: now)")] = None,
    drift_report: Annotated[bool, typer.Option(help="also run the Evidently drift report (seconds)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the verdicts as JSON on stdout")] = False,
    task: Annotated[
        str | None, typer.Option(help="the model: the plant's vision task (default) or machine-failure (sensor)")
    ] = None,
) -> None:
    """Monitor the champion over a window of the prediction log: data, prediction and performance
    drift on control charts; a breach opens an alert (exit 1 when one did).

    Example: andon monitor --plant plant-a --window 1h --drift-report
             andon monitor --plant plant-a --task machine-failure --window 24h --drift-report
    """
    import json

    from rich.table import Table

    from andon.config import load_plant
    from andon.monitoring.monitor import monitor as run_monitor
    from andon.storage import open_store

    cfg = load_plant(plant)
    result = run_monitor(
        open_store(),
        cfg,
        end=_parse_time(at, "--at"),
        window=_duration(window),
        drift_report=drift_report,
        emit=lambda event, payload, _key: _post_event(event, cfg.id, payload),
        task=task,
    )
    if as_json:
        from dataclasses import asdict

        sys.stdout.write(json.dumps(asdict(result), default=str, indent=1) + "\n")
    else:
        table = Table(
            title=f"{cfg.id}: {result.model} v{result.version}, {result.start:%Y-%m-%d %H:%M} to "
            f"{result.end:%H:%M} UTC, {result.parts} parts, {result.reviewed} reviewed"
        )
        for col in ("series", "kind", "value", "reference", "n", "z", "rules", "status"):
            table.add_column(col)
        colour = {"breach": "red", "active": "red", "cleared": "green", "waiting": "dim", "ok": "green"}
        colour |= {"baseline": "cyan", "flagged": "yellow"}
        for v in result.verdicts:
            table.add_row(
                v.series,
                v.kind,
                f"{v.value:.4g}",
                f"{v.reference:.4g}",
                str(v.n),
                f"{v.z:+.2f}",
                ",".join(v.rules),
                f"[{colour[v.status]}]{v.status}[/]",
            )
        con = _console()
        con.print(table)
        if result.drift_report_key:
            con.print(f"drift report: {result.drift_report_key} (share of drifted features {result.drift_share:.2f})")
        for a in result.alerts:
            con.print(f"[red]alert[/] {a['id']}: {a['event']} {a['payload']['series']} ({a['payload']['severity']})")
    raise typer.Exit(1 if result.alerts else 0)


governance_app = typer.Typer(help="Federated governance: policy checks and cross-plant reports.", no_args_is_help=True)
app.add_typer(governance_app, name="governance")


@governance_app.command("check")
def governance_check(
    plant: Annotated[list[str] | None, typer.Option(help="only these plants (repeatable); default all")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the findings as JSON on stdout")] = False,
) -> None:
    """The center's policy on every plant: champion lineage, data checksum, held-out metrics,
    validation, monitoring within 24 h, recipe overrides within the allowed ranges, code changed
    since the champion's commit. Prints the findings per plant; exit 1 on any violation.

    Example: andon governance check
    """
    import json

    from rich.markup import escape

    from andon.config import list_plants, load_plant
    from andon.governance.policy import VIOLATION, check_all
    from andon.storage import open_store

    plants = [load_plant(p) for p in (plant or list_plants())]
    findings = check_all(open_store(), plants)
    if as_json:
        sys.stdout.write(json.dumps([f.as_dict() for f in findings], indent=1) + "\n")
    else:
        con = _console()
        for cfg in plants:
            mine = [f for f in findings if f.plant == cfg.id]
            status = "[red]FAIL[/]" if any(f.severity == VIOLATION for f in mine) else "[green]ok[/]"
            con.print(f"{cfg.id}: {status}")
            for f in mine:
                colour = "red" if f.severity == VIOLATION else "yellow"
                con.print(f"  [{colour}]{f.severity}[/] {f.rule}: {escape(f.message)}")
    if any(f.severity == VIOLATION for f in findings):
        raise typer.Exit(1)


def _contributions(items: list[str]) -> dict[str, list[str]]:
    from andon.datasets import resolve_manifest_id
    from andon.errors import ConfigError
    from andon.storage import open_store

    store = open_store()
    out: dict[str, list[str]] = {}
    for item in items:
        plant, sep, prefix = item.partition(":")
        if not sep or not prefix:
            raise ConfigError(f"--dataset {item!r}: expected PLANT:DATASET_ID (a prefix of the id is enough)")
        out.setdefault(plant, []).append(resolve_manifest_id(store, plant, prefix))
    return out


@governance_app.command("central")
def governance_central(
    dataset: Annotated[list[str], typer.Option(help="PLANT:DATASET_ID a plant contributes (repeatable)")],
) -> None:
    """Train the central baseline central.<task> with the standard recipe on the plants' pooled
    dataset versions (referenced, not copied; each contribution recorded and summarized anonymously).

    Example: andon governance central --dataset plant-b:2e0abe65 --dataset plant-c:9c41d7aa
    """
    from andon.config import load_plant
    from andon.governance.central import pool, publish_summary, train_central
    from andon.storage import open_store

    store = open_store()
    contributions = _contributions(dataset)
    for plant, ids in contributions.items():
        for mid in ids:
            publish_summary(store, load_plant(plant), mid)
    out = train_central(store, pool(store, contributions))
    sys.stdout.write(out.summary() + "\n")


@governance_app.command("fine-tune")
def governance_fine_tune(
    plant: Annotated[str, typer.Option(help="plant id")],
    dataset: Annotated[list[str], typer.Option(help="the plant's dataset version id(s)")],
) -> None:
    """Fine-tune the plant's challenger from the central champion on its own data and overrides,
    run the plant's promotion gate, and report the metrics back to the central experiment.

    Example: andon governance fine-tune --plant plant-b --dataset 2e0abe65
    """
    from andon.config import load_plant
    from andon.datasets import resolve_manifest_id
    from andon.governance.central import fine_tune, report_back
    from andon.promotion import promote, verdict_line
    from andon.storage import open_store

    cfg, store = load_plant(plant), open_store()
    out = fine_tune(store, cfg, [resolve_manifest_id(store, cfg.id, d) for d in dataset])
    decision = promote(store, cfg, reason="fine-tuned from the central baseline")
    report_back(cfg, out, decision.passed)
    verdict = "promoted" if decision.passed else "refused: " + "; ".join(decision.violations)
    sys.stdout.write(f"{out.model_name} v{out.version}: {verdict_line(out.metrics, cfg)}; {verdict}\n")


@governance_app.command("report")
def governance_report(
    plant: Annotated[list[str] | None, typer.Option(help="only these plants (repeatable); default all")] = None,
    out: Annotated[Path | None, typer.Option(help="also write the HTML here")] = None,
    matrix: Annotated[bool, typer.Option(help="score every champion on every plant's golden set")] = True,
) -> None:
    """The cross-plant report: champions, lineage, age, golden-set metrics, drift, open alerts, the
    generalization matrix and which recipe settings travel; HTML under reports/central/governance/.

    Example: andon governance report --out governance.html
    """
    from rich.table import Table

    from andon.config import list_plants, load_plant
    from andon.governance.report import build_report, render_html, save_report
    from andon.storage import open_store

    store = open_store()
    report = build_report(store, [load_plant(p) for p in (plant or list_plants())], matrix=matrix)
    key = save_report(store, report)
    if out:
        out.write_text(render_html(report))
    rows = report.table()
    table = Table(title=f"governance: {len(rows)} plants ({report.seconds:.1f} s)")
    for col in rows[0] if rows else []:
        table.add_column(col)
    for r in rows:
        table.add_row(*("" if v is None else str(v) for v in r.values()))
    con = _console()
    con.print(table)
    con.print(f"report: {store.uri(key)}")


@governance_app.command("trial")
def governance_trial(
    recipe: Annotated[Path, typer.Argument(help="YAML of recipe overrides: one plant's innovation")],
    plant: Annotated[list[str], typer.Option(help="plants to try it at (repeatable)")],
    dataset: Annotated[list[str], typer.Option(help="PLANT:DATASET_ID to train each trial on (repeatable)")],
) -> None:
    """Train a candidate recipe at the selected plants (unregistered) and compare it with each
    plant's champion on the plant's own golden set: where it helps and where it hurts.

    Example: andon governance trial wider.yaml --plant plant-b --dataset plant-b:2e0a
    """
    import yaml
    from rich.table import Table

    from andon.config import load_plant
    from andon.errors import ConfigError
    from andon.governance.report import trial
    from andon.storage import open_store

    try:
        overrides = yaml.safe_load(recipe.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{recipe}: {exc}") from None
    rows = trial(open_store(), [load_plant(p) for p in plant], overrides, _contributions(dataset))
    table = Table(title=f"trial of {recipe.name} (escape / overkill at each model's operating point)")
    cols = ("plant", "champion", "champion_escape", "trial_escape", "champion_overkill", "trial_overkill", "verdict")
    for col in cols:
        table.add_column(col)
    for r in rows:
        table.add_row(*(str(r[c]) for c in cols))
    _console().print(table)


label_app = typer.Typer(
    help="Active learning: the label queue, Label Studio round trip, quick review.", no_args_is_help=True
)
app.add_typer(label_app, name="label")


@label_app.command("queue")
def label_queue(
    plant: Annotated[str, typer.Option(help="plant id")],
    window: Annotated[str, typer.Option(help="scoring window to pick from: 5m, 1h, 24h ...")] = "1h",
    at: Annotated[str | None, typer.Option(help="end of the window, ISO time (default: now)")] = None,
) -> None:
    """Queue the window's most uncertain, mutually different parts (daily budget) and every
    reviewed part the model got wrong (the monitor flow does this after each window).

    Example: andon label queue --plant plant-a --window 1h
    """
    from datetime import UTC

    from andon.config import load_plant
    from andon.labeling import queue_window
    from andon.storage import open_store

    end = _parse_time(at, "--at") or datetime.now(UTC)
    counts = queue_window(open_store(), load_plant(plant), end - _duration(window), end)
    sys.stdout.write(f"queued {counts['uncertain']} uncertain and {counts['wrong']} reviewed-wrong parts\n")


@label_app.command("list")
def label_list(
    plant: Annotated[str, typer.Option(help="plant id")],
    status: Annotated[str | None, typer.Option(help="queued, labeled or used")] = None,
    days: Annotated[int, typer.Option(min=1, help="queued in the last N days")] = 30,
) -> None:
    """The label queue with each part's status (queued -> labeled -> used in a version).

    Example: andon label list --plant plant-a --status queued
    """
    from rich.table import Table

    from andon.config import load_plant
    from andon.labeling import LabelQueue
    from andon.storage import open_store

    cfg = load_plant(plant)
    queue = LabelQueue(open_store(), cfg.id).status(days)
    if status:
        queue = queue[queue["status"] == status]
    table = Table(title=f"{cfg.id} label queue ({len(queue)} parts)")
    for col in ("part", "reason", "predicted", "confidence", "status", "label", "used in", "queued"):
        table.add_column(col)
    for r in queue.itertuples():
        conf = "" if r.confidence is None else f"{r.confidence:.3f}"
        label = r.label if isinstance(r.label, str) else ""
        used = r.used_in if isinstance(r.used_in, str) else ""
        table.add_row(r.part_id, r.reason, r.predicted_class, conf, r.status, label, used, str(r.queued_at)[:19])
    _console().print(table)


@label_app.command("export")
def label_export(
    plant: Annotated[str, typer.Option(help="plant id")],
    out: Annotated[Path, typer.Argument(help="tasks JSON for Label Studio (the labeling config goes beside it)")],
    days: Annotated[int, typer.Option(min=1, help="queued in the last N days")] = 30,
) -> None:
    """Write the queued parts as Label Studio tasks (image URL + the model's prediction as
    pre-annotation) and the matching labeling config (<out>.xml).

    Example: andon label export --plant plant-a tasks.json
    """
    import json

    from andon.config import load_plant
    from andon.labeling import LabelQueue, export_tasks, label_config
    from andon.storage import open_store

    cfg, store = load_plant(plant), open_store()
    tasks = export_tasks(store, cfg, LabelQueue(store, cfg.id).status(days))
    out.write_text(json.dumps(tasks, indent=1))
    out.with_suffix(".xml").write_text(label_config(cfg))
    sys.stdout.write(f"wrote {len(tasks)} tasks to {out} and the labeling config to {out.with_suffix('.xml')}\n")


@label_app.command("import")
def label_import(
    plant: Annotated[str, typer.Option(help="plant id")],
    path: Annotated[Path, typer.Argument(help="a Label Studio JSON export")],
) -> None:
    """Read a Label Studio export back into the review log (all or nothing: a bad task is named).

    Example: andon label import --plant plant-a project-1-at-2026-11-26.json
    """
    import json

    from andon.config import load_plant
    from andon.errors import DataError
    from andon.labeling import import_annotations
    from andon.storage import open_store

    try:
        tasks = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON export ({str(exc)[:200]})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to be a Label Studio export") from None
    result = import_annotations(open_store(), load_plant(plant), tasks)
    sys.stdout.write(f"imported {result['imported']} labels ({result['skipped']} tasks without an annotation)\n")


@label_app.command("review")
def label_review(
    plant: Annotated[str, typer.Option(help="plant id")],
    reviewer: Annotated[str, typer.Option(help="who is labeling")],
    limit: Annotated[int, typer.Option(min=1, help="stop after this many parts")] = 50,
) -> None:
    """Label queued parts in the terminal: each part's image location and the model's guess; type
    a class (or its first letter), Enter to accept the guess, s to skip, q to stop.

    Example: andon label review --plant plant-a --reviewer j.doe
    """
    from datetime import UTC

    from andon.config import load_plant
    from andon.labeling import QUEUED, LabelQueue
    from andon.labels import ReviewLog
    from andon.storage import open_store

    cfg, store = load_plant(plant), open_store()
    queue = LabelQueue(store, cfg.id).status()
    todo = queue[queue["status"] == QUEUED].head(limit)
    classes = list(cfg.recipe.classes)
    keys = {c[0]: c for c in classes} if len({c[0] for c in classes}) == len(classes) else {}
    done = 0
    for r in todo.itertuples():
        sys.stdout.write(
            f"\n{r.part_id}  ({r.reason})\n  image: {store.uri(r.object_key)}\n"
            f"  model {r.model}: {r.predicted_class} ({r.confidence:.2f})\n"
        )
        answer = typer.prompt(f"  label [{'/'.join(classes)}, Enter = {r.predicted_class}, s skip, q quit]",
                              default=r.predicted_class, show_default=False).strip()  # fmt: skip
        if answer == "q":
            break
        if answer == "s":
            continue
        label = keys.get(answer, answer)
        while label not in classes:
            answer = typer.prompt(f"  {answer!r} is not a class; one of {', '.join(classes)}").strip()
            label = keys.get(answer, answer)
        ReviewLog(store, cfg.id).append(
            [
                {
                    "part_id": r.part_id,
                    "label": label,
                    "reviewed_at": datetime.now(UTC),
                    "reviewer": reviewer,
                    "line": r.line,
                }
            ]
        )
        done += 1
    sys.stdout.write(f"\nlabeled {done} parts; they join the next dataset version when the plant retrains\n")


alerts_app = typer.Typer(help="Escalation records opened by monitoring.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")


@alerts_app.command("list")
def alerts_list(
    plant: Annotated[str, typer.Option(help="plant id")],
    status: Annotated[str | None, typer.Option(help="open, acked")] = None,
) -> None:
    """Alerts of a plant, oldest first.

    Example: andon alerts list --plant plant-a --status open
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from andon.config import load_plant
    from andon.monitoring.monitor import list_alerts
    from andon.storage import open_store

    def when(stamp: str | None) -> str:  # 2026-11-30T10:05:00+00:00 -> 11-30 10:05 (UTC)
        return f"{stamp[5:10]} {stamp[11:16]}" if stamp else ""

    cfg = load_plant(plant)
    alerts = list_alerts(open_store(), cfg.id, status)
    table = Table(title=f"{cfg.id} alerts (times UTC)", box=box.SIMPLE_HEAD, show_edge=False)
    # the id (it names the series) is what `alerts ack` needs: never cut or wrapped at any width
    table.add_column("id", no_wrap=True, min_width=max((len(a["id"]) for a in alerts), default=2))
    for col in ("kind", "severity", "status"):
        table.add_column(col, overflow="fold")
    table.add_column("opened / cleared", overflow="fold")
    for a in alerts:
        kind = "perf" if a["event"].endswith("performance.degraded") else "drift"
        opened_cleared = when(a["opened_at"]) + (f"\n{when(a['cleared_at'])}" if a["cleared_at"] else "")
        table.add_row(Text(a["id"]), kind, Text(str(a["payload"]["severity"])), Text(a["status"]), opened_cleared)
    _console().print(table)


@alerts_app.command("ack")
def alerts_ack(
    alert_id: Annotated[str, typer.Argument(help="the alert id from `andon alerts list`")],
    plant: Annotated[str, typer.Option(help="plant id")],
    who: Annotated[str, typer.Option(help="who takes it")],
    note: Annotated[str, typer.Option(help="what was done or decided")] = "",
) -> None:
    """Acknowledge an alert: a person has it.

    Example: andon alerts ack --plant plant-a --who "j.doe" 20261126T0800-brightness-1a2b3c
    """
    from andon.config import load_plant
    from andon.monitoring.monitor import ack_alert
    from andon.storage import open_store

    rec = ack_alert(open_store(), load_plant(plant).id, alert_id, who, note)
    _console().print(f"{rec['id']} acknowledged by {rec['acked_by']}")


@app.command()
def demo(
    casting: Annotated[
        Path | None, typer.Option(help="the casting image set (default: ../shared/data/casting beside the checkout)")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="the same story on less data (under 3 minutes)")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="forget the progress of an earlier run; start over")] = False,
    day: Annotated[
        str, typer.Option(help="the day the story happens on (fixed: results never follow the calendar)")
    ] = ("2026-11-26"),
    seed: Annotated[
        int, typer.Option(min=0, max=10_000, help="shifts every synthetic plant's and the training seed")
    ] = 0,
) -> None:
    """A day in the life of three plants, end to end, on the embedded defaults: data through the
    gate, central baseline, fine-tuned champions, scored production with explanations, a drift
    alert whose event retrains through Prefect, an MES event through the signed gateway, a bad
    version rolled back, an explanation, the governance report. Resumable: a re-run skips the
    chapters already done and prints the summary.

    Example: andon demo --quick
    """
    from andon.settings import REPO_ROOT
    from flows.demo import run_demo

    casting = casting or REPO_ROOT.parent / "shared" / "data" / "casting"
    run_demo(_console(), casting=casting, quick=quick, fresh=fresh, day=day, seed=seed)


def main() -> None:
    """Entry point: user errors print one clean message, no traceback."""
    import os

    from andon.errors import AndonError

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # factories are often offline; nothing phones home

    try:
        app()
    except AndonError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
