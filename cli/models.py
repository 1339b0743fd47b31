"""Models: `andon train|tune|train-sensor`, `andon promote|rollback` and `andon models`."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

from andon.cli.common import JsonOption, duration, make_console, post_event, print_json, progress_bar, run_flow
from andon.cli.root import app

models_app = typer.Typer(help="Registered model versions (MLflow registry).", no_args_is_help=True)
app.add_typer(models_app, name="models")


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
    from andon.data.datasets import resolve_manifest_id
    from andon.lifecycle.promotion import verdict_line
    from andon.lifecycle.registry import model_name
    from andon.storage import open_store
    from andon.training.run import train_plant

    cfg = load_plant(plant)
    store = open_store()
    ids = [resolve_manifest_id(store, cfg.id, d) for d in dataset]
    recipe = cfg.recipe.with_overrides(
        ({"training": {"epochs": epochs}} if epochs else {}) | ({"model": {"name": model}} if model else {})
    )
    console = make_console()

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
    from andon.data.datasets import resolve_manifest_id
    from andon.quality import fmt_rate
    from andon.storage import open_store
    from andon.training.tune import tune as run_tune

    cfg, store = load_plant(plant), open_store()
    ids = [resolve_manifest_id(store, cfg.id, d) for d in dataset]
    seconds = duration(budget, "--budget").total_seconds()
    console = make_console()
    with progress_bar(console) as bar:
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
    make_console().print(
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
    Runs the `promote` flow on Andon's Prefect (its run, artifact and event show in the UI).

    Example: andon promote --plant plant-b
    """
    from types import SimpleNamespace

    from andon.config import load_plant
    from andon.flows.train import promote_flow
    from andon.lifecycle.promotion import verdict_line
    from andon.lifecycle.registry import model_name

    cfg = load_plant(plant)  # a bad plant id fails here, before any flow run
    d = SimpleNamespace(**run_flow(promote_flow, plant=cfg.id, force=force, reason=reason))
    console = make_console()
    _print_gate_metrics(console, d)
    console.print(f"challenger v{d.challenger}: {verdict_line(d.challenger_metrics, cfg)}")
    name = model_name(cfg.id, cfg.recipe.task)
    if d.passed:  # the flow published andon.model.promoted
        note = " [yellow](FORCED)[/]" if d.forced else ""
        console.print(f"[green]PROMOTED[/]{note}: {name}@champion = v{d.challenger} (was {d.champion or 'none'})")
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
    from datetime import UTC, datetime

    from andon.config import load_plant
    from andon.events import model_rolled_back
    from andon.lifecycle.promotion import rollback as run_rollback
    from andon.lifecycle.registry import plant_of

    t0 = time.perf_counter()
    cfg = load_plant(plant_of(model))
    before, after = run_rollback(cfg, reason, to)
    registry_s = time.perf_counter() - t0
    post_event(model_rolled_back(cfg.id, before, after, reason, datetime.now(UTC).isoformat()))
    make_console().print(
        f"[green]ROLLED BACK[/] {model}@champion: v{before} -> v{after} (previous-champion = v{before}); "
        f"registry {registry_s:.2f} s"
    )


@models_app.command("list")
def models_list(
    model: Annotated[str, typer.Argument(help="registered model, e.g. plant-b.surface-defects")],
    as_json: JsonOption = False,
) -> None:
    """Every version with its aliases, data, code and held-out metrics.

    Example: andon models list plant-b.surface-defects
    """
    from rich.table import Table

    from andon.lifecycle.registry import list_versions
    from andon.quality import fmt_rate

    if as_json:
        print_json([dataclasses.asdict(v) for v in list_versions(model)])
        return
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
    make_console().print(table)


@models_app.command("show")
def models_show(
    model: Annotated[str, typer.Argument(help="registered model")],
    version: Annotated[int, typer.Argument(help="version number")],
    as_json: JsonOption = False,
) -> None:
    """One version: lineage tags, alias history, held-out metrics.

    Example: andon models show plant-b.surface-defects 2
    """
    from andon.lifecycle.registry import version_info

    v = version_info(model, version)
    if as_json:
        print_json(dataclasses.asdict(v))
        return
    console = make_console()
    console.print(f"[bold]{model} v{v.version}[/] aliases: {', '.join(v.aliases) or '-'}; run {v.run_id}; {v.created}")
    test = {k[5:]: score for k, score in v.metrics.items() if k.startswith("test_")}
    if "escape_rate" in test:
        from andon.config import load_plant
        from andon.errors import AndonError
        from andon.lifecycle.promotion import verdict_line
        from andon.lifecycle.registry import plant_of

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
    from andon.lifecycle.promotion import diff_versions
    from andon.lifecycle.registry import plant_of
    from andon.storage import open_store

    d = diff_versions(open_store(), load_plant(plant_of(model)), a, b)
    console = make_console()
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
    from andon.lifecycle.promotion import reproduce
    from andon.lifecycle.registry import plant_of
    from andon.storage import open_store

    r = reproduce(open_store(), load_plant(plant_of(model)), version, allow_dirty, tolerance)
    table = Table(title=f"{model} v{version} reproduced (run {r.run_id[:8]}), tolerance {tolerance}")
    for col in ("metric", "registered", "reproduced", "delta", ""):
        table.add_column(col)
    for key, a, b, d, ok in r.rows:
        table.add_row(key, f"{a:.4f}", f"{b:.4f}", f"{d:+.4f}", "[green]ok[/]" if ok else "[red]differs[/]")
    make_console().print(table)
    raise typer.Exit(0 if r.ok else 1)
