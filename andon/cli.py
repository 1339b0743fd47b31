"""The ``andon`` command line. Every heavy import happens inside the command that needs it, so
``andon --help`` answers instantly. Commands call the same functions the flows call."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

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
  upload a labelled image folder:     andon ingest --plant plant-a ./casting/test --limit 200
  list objects under a prefix:        andon store ls plant-a/line-1/raw/
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
config_app = typer.Typer(help="Plant configs: base recipe + per-plant overrides.", no_args_is_help=True)
store_app = typer.Typer(help="The object store (file:// or s3://).", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(store_app, name="store")


def _console() -> Console:
    from rich.console import Console

    return Console()


def _settings() -> Any:
    from andon.settings import get_settings

    return get_settings()


def _progress(console: Console) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    from andon.errors import ConfigError

    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--start: not an ISO time: {value!r} (e.g. 2026-11-26T06:00:00+00:00)") from None
    if ts.tzinfo is None:
        raise ConfigError(f"--start: give a timezone, e.g. {value}+00:00")
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
        table.add_column(col)
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
        sys.stdout.write(
            f"# {plant}: configs/base.yaml + configs/plants/{plant}.yaml (sha256 {cfg.sha256()[:12]})\n"
        )
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


# ---------------------------------------------------------------- data


@app.command()
def synth(
    plant: Annotated[str, typer.Option(help="plant id, e.g. plant-b")],
    parts: Annotated[int, typer.Option(min=1, help="number of parts to produce")] = 2000,
    seed: Annotated[int, typer.Option(help="same seed, same bytes")] = 0,
    start: Annotated[str | None, typer.Option(help="time of the first part, ISO with timezone")] = None,
    line: Annotated[list[str] | None, typer.Option(help="only these lines (repeatable)")] = None,
    defect_rate: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="override the plant's rate")
    ] = None,
    brightness: Annotated[
        float, typer.Option(min=0.05, max=4.0, help="lighting gain drift (1 = none)")
    ] = 1.0,
    gamma: Annotated[float, typer.Option(min=0.1, max=5.0, help="gamma drift (1 = none)")] = 1.0,
    unevenness: Annotated[float, typer.Option(min=0.0, max=1.0, help="extra uneven illumination")] = 0.0,
    rotation: Annotated[
        float, typer.Option(min=-180.0, max=180.0, help="camera rotation drift, degrees")
    ] = 0.0,
    blur: Annotated[float, typer.Option(min=0.0, max=10.0, help="focus blur drift (sigma, px)")] = 0.0,
    noise: Annotated[float, typer.Option(min=0.0, max=64.0, help="extra sensor noise (grey levels)")] = 0.0,
    material: Annotated[
        str | None, typer.Option(help="new supplier material: standard|supplier-b|cast")
    ] = None,
    new_sku: Annotated[
        str | None, typer.Option(help="add a new SKU geometry: disc|plate|ring|impeller")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=32, help="rendering processes")] = 2,
) -> None:
    """Write synthetic parts (images, metadata, sensors, MES events) as raw batches.

    Example: andon synth --plant plant-a --parts 2000
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
        )
    _print_batches(console, store, batches)


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="folder of images; labels from sub-folder names")],
    plant: Annotated[str, typer.Option(help="plant id, e.g. plant-a")],
    line: Annotated[str | None, typer.Option(help="line id (default: the plant's first line)")] = None,
    sku: Annotated[str | None, typer.Option(help="SKU code (default: the plant's first SKU)")] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="upload an evenly spread slice of N images")
    ] = None,
    start: Annotated[str | None, typer.Option(help="timestamp of the first part, ISO with timezone")] = None,
) -> None:
    """Upload a real, labelled image folder into a plant's raw layout (idempotent).

    Example: andon ingest --plant plant-a ../shared/data/casting/test --limit 200
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
        )
    _print_batches(console, store, batches)


def _print_batches(console: Console, store: Any, batches: list[Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{len(batches)} raw batch(es) in {store.url}")
    for col in ("line", "batch", "parts", "defects", "prefix"):
        table.add_column(col)
    for b in batches:
        table.add_row(b.line, b.batch_id, str(b.parts), str(b.defects), b.prefix + "/")
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


@app.command()
def demo(
    casting: Annotated[Path, typer.Option(help="the casting image set")] = Path("../shared/data/casting"),
    parts: Annotated[int, typer.Option(min=10, help="synthetic parts for plant-a")] = 2000,
    casting_images: Annotated[int, typer.Option(min=1, help="real casting images to ingest")] = 300,
) -> None:
    """Run Andon's main job on the embedded defaults (idempotent: re-running reuses what exists).

    Example: andon demo
    """
    from andon.demo import run_demo

    run_demo(_console(), casting=casting, parts=parts, casting_images=casting_images)


def main() -> None:
    """Entry point: user errors print one clean message, no traceback."""
    from andon.errors import AndonError

    try:
        app()
    except AndonError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
