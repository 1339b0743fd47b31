"""Monitoring: `andon monitor` and the escalation records (`andon alerts`)."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from andon.cli.common import JsonOption, duration, make_console, parse_time, print_json, run_flow
from andon.cli.root import app


@app.command()
def monitor(
    plant: Annotated[str, typer.Option(help="plant id")],
    window: Annotated[str, typer.Option(help="5m, 1h, 24h ...")] = "1h",
    at: Annotated[str | None, typer.Option(help="end of the window, ISO time (default: now)")] = None,
    drift_report: Annotated[bool, typer.Option(help="also run the Evidently drift report (seconds)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the verdicts as JSON on stdout")] = False,
    task: Annotated[
        Literal["machine-failure"] | None,
        typer.Option(help="the model: the plant's vision task (default) or machine-failure (sensor)"),
    ] = None,
) -> None:
    """Monitor the champion over a window of the prediction log: data, prediction and performance
    drift on control charts; a breach opens an alert (exit 1 when one did). Runs the monitor flow
    on Andon's Prefect (the run, its artifacts and events show in the UI, as a scheduled run's do).

    Example: andon monitor --plant plant-a --window 1h --drift-report
             andon monitor --plant plant-a --task machine-failure --window 24h --drift-report
    """
    from datetime import UTC, datetime

    from rich.table import Table

    from andon.config import load_plant
    from andon.flows.monitor import monitor_flow

    cfg = load_plant(plant)
    minutes = int(duration(window).total_seconds() // 60)
    end = parse_time(at, "--at") or datetime.now(UTC)
    result = run_flow(
        monitor_flow, plant=cfg.id, kind="hourly", at=end.isoformat(), task=task,
        window_minutes=minutes, drift_report=drift_report,
    )  # fmt: skip
    if as_json:
        print_json(result)
    else:
        start, end = datetime.fromisoformat(result["start"]), datetime.fromisoformat(result["end"])
        table = Table(
            title=f"{cfg.id}: {result['model']} v{result['version']}, {start:%Y-%m-%d %H:%M} to "
            f"{end:%H:%M} UTC, {result['parts']} parts, {result['reviewed']} reviewed"
        )
        for col in ("series", "kind", "value", "reference", "n", "z", "rules", "status"):
            table.add_column(col)
        colour = {"breach": "red", "active": "red", "cleared": "green", "waiting": "dim", "ok": "green"}
        colour |= {"baseline": "cyan", "flagged": "yellow", "recovering": "yellow"}
        for v in result["verdicts"]:
            table.add_row(
                v["series"],
                v["kind"],
                f"{v['value']:.4g}",
                f"{v['reference']:.4g}",
                str(v["n"]),
                f"{v['z']:+.2f}",
                ",".join(v["rules"]),
                f"[{colour.get(v['status'], 'white')}]{v['status']}[/]",
            )
        con = make_console()
        con.print(table)
        if result["drift_report_key"]:
            share = result["drift_share"]
            con.print(f"drift report: {result['drift_report_key']} (share of drifted features {share:.2f})")
        for a in result["alerts"]:
            con.print(f"[red]alert[/] {a['id']}: {a['event']} {a['payload']['series']} ({a['payload']['severity']})")
    raise typer.Exit(1 if result["alerts"] else 0)


alerts_app = typer.Typer(help="Escalation records opened by monitoring.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")


@alerts_app.command("list")
def alerts_list(
    plant: Annotated[str, typer.Option(help="plant id")],
    status: Annotated[str | None, typer.Option(help="open, acked, resolved")] = None,
    as_json: JsonOption = False,
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
    if as_json:
        print_json(alerts)
        return
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
    make_console().print(table)


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
    make_console().print(f"{rec['id']} acknowledged by {rec['acked_by']}")


@alerts_app.command("resolve")
def alerts_resolve(
    alert_id: Annotated[str, typer.Argument(help="the alert id from `andon alerts list`")],
    plant: Annotated[str, typer.Option(help="plant id")],
    who: Annotated[str, typer.Option(help="who closes it")],
    note: Annotated[str, typer.Option(help="what fixed it")] = "",
) -> None:
    """Resolve an alert: the cause is dealt with (the record keeps who acknowledged it and when).

    Example: andon alerts resolve --plant plant-a --who "j.doe" --note "lamp replaced" 20261126T0800-brightness-1a2b3c
    """
    from andon.config import load_plant
    from andon.monitoring.monitor import resolve_alert
    from andon.storage import open_store

    rec = resolve_alert(open_store(), load_plant(plant).id, alert_id, who, note)
    make_console().print(f"{rec['id']} resolved by {rec['resolved_by']}")
