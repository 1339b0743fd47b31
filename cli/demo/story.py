"""``andon demo``: a day in the life of three plants, end to end, on the embedded defaults.

The story, one chapter after another (each one a set of Prefect flow runs you can open in the UI):

 1. the embedded stack (Prefect + MLflow) and the plants' deployments (``andon deploy``);
 2. data: real casting images into plant-a, synthetic parts into plant-b and plant-c, every batch
    through the data gate; a copy with planted faults is quarantined;
 3. the central baseline from the plants' pooled datasets (by reference);
 4. each plant fine-tunes from it, the promotion gate makes its champion, metrics go back;
 5. hours of production scored at every plant, with explanations, and monitored;
 6. the light fails at plant-b: the hourly monitor alerts, the alert's event starts plant-b's retrain
    deployment through a Prefect automation (a plant worker runs it), the challenger meets the gate;
 7. the MES announces a new SKU at plant-c through the signed gateway (a forged copy is refused):
    the event starts plant-c's retrain the same way;
 8. a bad version is forced to champion at plant-a, the defect rate moves, ``andon rollback``
    restores the previous champion and ``andon models diff`` shows what changed;
 9. ``andon explain`` answers for one rejected part;
10. the governance report closes the day.

Resumable and idempotent: each finished chapter is recorded in ``$ANDON_HOME/demo/state.json``;
a re-run skips what is done (``--fresh`` forgets it) and ends with the same summary. The demo
drives the clock itself: after ``andon deploy`` it switches the demo plants' schedules off (so
the 5-minute monitors do not race it) and starts a process worker per plant only while an event
is expected to start a run; ``andon deploy`` switches the schedules back on.
``--quick`` is the same story on less data (64 px images, fewer parts and epochs, about 4
minutes): the integration test runs it, so the story cannot rot.

Nothing depends on the calendar: the demo's day is fixed (``DEMO_DAY``; ``--day`` picks another)
and so are its seeds (``--seed`` shifts every synthetic plant's seed and the training seed), so the
same command tells the same story on any date; ``benchmarks/defects.py`` runs it on several
days and seeds.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from andon.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from andon.settings import AndonSettings

from andon.cli.demo.base import DEMO_DAY, FULL, QUICK, Demo, Size, rates, save_state
from andon.cli.demo.chapters import CHAPTERS
from andon.cli.demo.stage import central_line


def run_demo(
    console: Console,
    casting: Path,
    quick: bool = False,
    fresh: bool = False,
    day: str = DEMO_DAY,
    seed: int = 0,
) -> dict[str, Any]:
    from andon.settings import get_settings
    from andon.storage import open_store

    size = QUICK if quick else FULL
    if not (casting / "train").is_dir() or not (casting / "test").is_dir():
        raise ConfigError(
            f"{casting}: no train/ and test/ folders of the casting image set (see ../shared/data/README.md); "
            "point to it with `andon demo --casting PATH`"
        )
    settings = get_settings()
    state_path = settings.home / "demo" / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() and not fresh else {}
    if state and state.get("size") != size.name:
        raise ConfigError(
            f"{settings.home} holds a {state.get('size')} demo; run the {size.name} one with --fresh "
            f"(new versions on top of the old) or in another ANDON_HOME"
        )
    try:
        datetime.strptime(day, "%Y-%m-%d")
    except ValueError:
        raise ConfigError(f"--day {day!r}: give a date as YYYY-MM-DD") from None
    if state and (state.get("day"), state.get("seed", 0)) != (day, seed):
        raise ConfigError(
            f"{settings.home} holds the demo of {state.get('day')} (seed {state.get('seed', 0)}); run day {day} "
            f"seed {seed} with --fresh or in another ANDON_HOME"
        )
    state = state or {"size": size.name, "day": day, "seed": seed, "done": {}}
    use_configs(settings, size, seed)
    settings = get_settings()
    # flows below report to the embedded server, so their runs and artifacts show in its UI
    os.environ["PREFECT_API_URL"] = settings.prefect_api_url
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    quiet()
    start_of_day = datetime.fromisoformat(state["day"]).replace(tzinfo=UTC)
    d = Demo(console, settings, open_store(), size, casting, state, state_path, start_of_day, seed=seed)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    t_start = time.perf_counter()
    # `andon demo` is its own process (the test runs it so too): Prefect's settings, its API client
    # and its events worker all follow PREFECT_API_URL, set above for the embedded server
    with temporary_settings(updates={PREFECT_API_URL: settings.prefect_api_url}):
        for i, (key, title, chapter) in enumerate(CHAPTERS, start=1):
            console.rule(f"[bold]{i}. {title}")
            if key in state["done"] and key != "stack":
                took = state["done"][key].get("_seconds", 0)
                console.print(f"  [dim]done earlier ({took:.0f} s); --fresh runs it again[/]")
                continue
            t0 = time.perf_counter()
            result = chapter(d)
            result["_seconds"] = round(time.perf_counter() - t0, 1)
            state["done"][key] = result
            save_state(d)
    summary(d, time.perf_counter() - t_start)
    return state


def quiet() -> None:
    """The story on the console; MLflow's progress bars, URLs and INFO lines stay out of it."""
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is first imported
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # and if it was imported already


def use_configs(settings: AndonSettings, size: Size, seed: int = 0) -> None:
    """configs/ copied under the home with the demo's overrides merged (the quick demo's smaller
    recipe; both: no retrain cooldown; ``seed`` shifts the training seed)."""
    import shutil

    import yaml

    from andon.config import deep_merge
    from andon.settings import reset_settings

    target = settings.home / "demo" / "configs"
    if target.resolve() != settings.configs_dir.resolve():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(settings.configs_dir, target)
    base = yaml.safe_load((target / "base.yaml").read_text())
    overrides = deep_merge(size.overrides, {"recipe": {"training": {"seed": 42 + seed}}} if seed else {})
    (target / "base.yaml").write_text(yaml.safe_dump(deep_merge(base, overrides), sort_keys=False))
    for plant, extra in size.plant_overrides.items():
        path = target / "plants" / f"{plant}.yaml"
        path.write_text(yaml.safe_dump(deep_merge(yaml.safe_load(path.read_text()), extra), sort_keys=False))
    os.environ["ANDON_CONFIGS_DIR"] = str(target)
    reset_settings()


def summary(d: Demo, seconds: float) -> None:
    from rich.table import Table

    done = d.state["done"]
    ui = d.settings.prefect_api_url.removesuffix("/api")
    mlflow_ui = d.urls.get("mlflow", d.settings.mlflow_tracking_uri).rstrip("/")
    d.console.rule("[bold]the day, in numbers")
    facts = Table(show_header=False, box=None, padding=(0, 2))
    facts.add_column("what", style="bold")
    facts.add_column("result", overflow="fold")
    data = done.get("data", {})
    facts.add_row("parts in", ", ".join(f"{p} {n}" for p, n in data.get("parts", {}).items()))
    facts.add_row(
        "quarantined", f"{len(data.get('quarantined', []))} batch(es), {data.get('failed_rules', 0)} failed rules"
    )
    if "central" in done:
        facts.add_row("central baseline", central_line(done["central"]))
    for plant, c in done.get("fine-tune", {}).get("champions", {}).items():
        gate = "passed the gate" if c["passed"] else "[red]forced past the gate[/]"
        how = "fine-tuned" if c.get("parent") else "from scratch"
        facts.add_row(f"{plant} champion", f"v{c['version']} {how}, {rates(c)}; {gate}")
    for plant, s in done.get("production", {}).get("scored", {}).items():
        facts.add_row(
            f"{plant} production", f"{s['scored']} scored, {s['defects']} rejected, {s['explained']} explained"
        )
    for key, what in (("lighting", "plant-b light failure"), ("mes", "plant-c new SKU")):
        r = done.get(key, {})
        if "champion_after" in r:
            text = (
                f"retrain run {r['run']['run_name']} {r['run']['state']}: "
                f"champion v{r['champion_before']} -> v{r['champion_after']}"
            )
            dark = r.get("dark_shift") or {}
            for v in (r["champion_before"], r.get("newest")):
                if f"v{v}" in dark:
                    text += f"; dark shift, v{v}: {rates(dark[f'v{v}'])}"
            facts.add_row(what, text)
    r = done.get("rollback", {})
    if r:
        facts.add_row(
            "plant-a bad version",
            f"v{r['bad']}: rejects {r['rate_bad']:.0%} (was {r['rate_before']:.0%}); rolled back to v{r['after']}",
        )
    if done.get("explain", {}).get("part"):
        facts.add_row("explained part", done["explain"]["part"])
    g = done.get("governance", {})
    if g:
        facts.add_row("policy", f"{g['violations']} violations, {g['notices']} notices")
    facts.add_row("demo time", f"{seconds:.0f} s this run" + (" (quick)" if d.size.name == "quick" else ""))
    d.console.print(facts)
    d.console.rule("[bold]where to look")
    where = Table(show_header=False, box=None, padding=(0, 2))
    where.add_column("what", style="bold")
    where.add_column("where", overflow="fold")
    where.add_row("Prefect: flow runs", f"{ui}/runs")
    where.add_row("Prefect: artifacts", f"{ui}/artifacts")
    where.add_row("Prefect: automations", f"{ui}/automations")
    where.add_row("Prefect: deployments", f"{ui}/deployments")
    where.add_row("MLflow: registry", f"{mlflow_ui}/#/models")
    if d.settings.ui_enabled:
        where.add_row(
            "the floor's page", f"{d.settings.ui_url}/p/plant-b (an account first: andon users add NAME --plants '*')"
        )
    if g:
        where.add_row("governance report", d.store.uri(g["report_key"]))
    where.add_row("object store", d.store.url)
    where.add_row("demo state", str(d.state_path))
    where.add_row("stop the stack", "andon down")
    d.console.print(where)
