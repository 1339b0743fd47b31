"""`andon governance`: policy checks, the central baseline, fine-tunes, cross-plant reports, trials."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    pass

from andon.cli.common import make_console, run_flow
from andon.cli.root import app

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
        con = make_console()
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
    from andon.data.datasets import resolve_manifest_id
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
    Runs the `central-baseline` flow on Andon's Prefect.

    Example: andon governance central --dataset plant-b:2e0abe65 --dataset plant-c:9c41d7aa
    """
    from andon.config import load_plant
    from andon.flows.governance import central_baseline_flow
    from andon.governance.central import CentralOutcome

    contributions = {load_plant(plant).id: ids for plant, ids in _contributions(dataset).items()}
    out = run_flow(central_baseline_flow, contributions=contributions)
    sys.stdout.write(CentralOutcome(**out).summary() + "\n")


@governance_app.command("fine-tune")
def governance_fine_tune(
    plant: Annotated[str, typer.Option(help="plant id")],
    dataset: Annotated[list[str], typer.Option(help="the plant's dataset version id(s)")],
) -> None:
    """Fine-tune the plant's challenger from the central champion on its own data and overrides,
    run the plant's promotion gate, and report the metrics back to the central experiment.
    Runs the `fine-tune` flow on Andon's Prefect (the promotion's event is the flow's).

    Example: andon governance fine-tune --plant plant-b --dataset 2e0abe65
    """
    from andon.config import load_plant
    from andon.data.datasets import resolve_manifest_id
    from andon.flows.governance import fine_tune_flow
    from andon.lifecycle.promotion import verdict_line
    from andon.storage import open_store

    cfg, store = load_plant(plant), open_store()
    ids = [resolve_manifest_id(store, cfg.id, d) for d in dataset]
    result = run_flow(fine_tune_flow, plant=cfg.id, dataset_ids=ids)
    out, decision = result["training"], result["promotion"]
    verdict = "promoted" if decision["passed"] else "refused: " + "; ".join(decision["violations"])
    sys.stdout.write(f"{out['model_name']} v{out['version']}: {verdict_line(out['metrics'], cfg)}; {verdict}\n")


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
    con = make_console()
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
    make_console().print(table)
