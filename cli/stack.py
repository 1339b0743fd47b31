"""`andon up|down|status`, the plants' deployments (`deployments render|k8s`, `deploy`) and `andon worker`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

from andon.cli.common import andon_settings, make_console
from andon.cli.root import app


@app.command()
def up() -> None:
    """Start the embedded Prefect and MLflow servers and the floor's page, `andon ui` (idempotent).

    Example: andon up   (then open the printed UI URLs)
    """
    from andon import stack
    from andon.web.auth import installation_users

    console = make_console()
    settings = andon_settings()
    statuses = stack.up(settings, on_event=lambda m: console.print(f"  {m}"))
    _print_status(console, statuses)
    if settings.ui_enabled and not installation_users().list():
        console.print("the floor's page has no accounts yet: [bold]andon users add NAME --plants plant-a[/]")


@app.command()
def down() -> None:
    """Stop the services `andon up` started (and nothing else).

    Example: andon down
    """
    from andon import stack

    console = make_console()
    stopped = stack.down(andon_settings(), on_event=lambda m: console.print(f"  {m}"))
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@app.command()
def status() -> None:
    """Show each embedded service: state, PID, URL, log file.

    Example: andon status
    """
    from andon import stack

    _print_status(make_console(), stack.service_status(andon_settings()))


def _print_status(console: Console, statuses: list[Any]) -> None:
    from rich.table import Table

    table = Table(title="Andon services")
    for col in ("service", "state", "pid", "url", "log"):
        table.add_column(col, overflow="fold")
    for s in statuses:
        colour = "green" if s.state == "running" else "yellow"
        table.add_row(s.name, f"[{colour}]{s.state}[/]", str(s.pid or "-"), s.url, str(s.log))
    console.print(table)


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
    api = prefect_api_url or andon_settings().prefect_api_url
    env = os.environ | {"PREFECT_API_URL": api, "ANDON_REPO_ROOT": str(REPO_ROOT)}
    plants = list_plants()
    steps = [
        [sys.executable, "-m", "andon.cli.prefect_deploy", "pools", *(work_pool(p) for p in plants)],
        [sys.executable, "-m", "andon.cli.prefect_deploy", "apply", str(path)],  # = `prefect deploy --all`, faster
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
    from andon.tasks import LIBRARY_LOGGER

    pool = work_pool(load_plant(plant).id)
    api = prefect_api_url or andon_settings().prefect_api_url
    # the library's progress in each run's log (and, outside a run, no warning about it)
    env = {"PREFECT_LOGGING_EXTRA_LOGGERS": LIBRARY_LOGGER, "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore"}
    env |= os.environ
    env |= {"PREFECT_API_URL": api, "ANDON_REPO_ROOT": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    if run_once:
        cmd.append("--run-once")
    sys.stderr.write(f"andon: worker for {pool} on {api}\n")
    os.chdir(REPO_ROOT)  # the deployments' entrypoints (flows/...) are relative to the checkout
    os.execvpe(cmd[0], cmd, env)
