"""`andon config`: plant configs, a base recipe plus per-plant overrides."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    pass

from andon.cli.common import JsonOption, make_console, print_json
from andon.cli.root import app

config_app = typer.Typer(help="Plant configs: base recipe + per-plant overrides.", no_args_is_help=True)
app.add_typer(config_app, name="config")


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
def config_list(as_json: JsonOption = False) -> None:
    """List the plants that have a config.

    Example: andon config list
    """
    from rich.table import Table

    from andon.config import load_all_plants

    if as_json:
        print_json({pid: cfg.model_dump(mode="json") for pid, cfg in load_all_plants().items()})
        return

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
    make_console().print(table)


@config_app.command("validate")
def config_validate() -> None:
    """Validate every plant config; print every problem as `file: field: problem`.

    Example: andon config validate
    """
    from andon.config import load_all_plants

    plants = load_all_plants()
    make_console().print(f"[green]ok[/]: {len(plants)} plant config(s) valid: {', '.join(plants)}")


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
