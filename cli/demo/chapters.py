"""The chapters of the demo, in order (``CHAPTERS``); each returns what it did, recorded in the state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from andon.errors import AndonError

if TYPE_CHECKING:
    pass

from andon.cli.demo.base import BAD_LR, PLANTS, RATE_KEYS, TASK, Chapter, Demo, rates, save_state
from andon.cli.demo.stage import (
    central_line,
    champion_of,
    on_parts,
    parent_name,
    plant_worker,
    progress_bar,
    retrain_outcome,
    review,
    schedules_off,
    wait_for_run,
    worker_env,
)


def stack_and_deployments(d: Demo) -> dict[str, Any]:
    from andon import stack

    statuses = stack.up(d.settings, on_event=d.say)
    d.urls = {s.name: s.url for s in statuses}
    if "deployed" not in d.state:
        with d.console.status("applying the plants' deployments (andon deploy)..."):
            out = subprocess.run(
                [sys.executable, "-m", "andon.cli", "deploy", "--prefect-api-url", d.settings.prefect_api_url],
                capture_output=True,
                text=True,
                env=worker_env(d),
                check=False,
            )
        if out.returncode:
            raise AndonError(f"andon deploy failed:\n{out.stdout}{out.stderr}")
        d.say(out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "deployments applied")
        d.state["deployed"] = True
        save_state(d)
    off = schedules_off(PLANTS)  # every run: a later `andon deploy` switches them on again
    if off:
        d.say(f"{off} schedules of the demo plants switched off: the demo drives the clock (andon deploy: on again)")
    return {"services": d.urls}


def ingest_and_validate(d: Demo) -> dict[str, Any]:
    from rich.markup import escape
    from rich.table import Table

    from andon.flows.ingest import ingest_folder_flow, synthesize_plant_flow
    from andon.flows.validate import validate_batch_flow
    from andon.synth.faults import plant_faults

    start = d.day.replace(hour=6)
    batches: dict[str, list[dict[str, Any]]] = {}
    train_dir = d.casting / "train"
    with d.console.status(f"plant-a: {d.size.casting_train} real casting images (ingest-folder flow)..."):
        batches["plant-a"] = ingest_folder_flow(
            plant="plant-a", path=str(train_dir), limit=d.size.casting_train, start=start, mixed=True
        )
    for i, plant in enumerate(PLANTS[1:], start=1):
        with d.console.status(f"{plant}: {d.size.synth_train} synthetic parts (synthesize-plant flow)..."):
            batches[plant] = synthesize_plant_flow(
                plant=plant,
                parts=d.size.synth_train,
                seed=d.seeded(i),
                start=start,
                defect_rate=d.size.curated_defect_rate,
                curated=True,
            )
    faulty = plant_faults(d.store, str(batches["plant-b"][0]["prefix"]))
    d.say(f"planted faults in a copy of one plant-b batch: {', '.join(faulty.details['planted_faults'])}")
    todo = [(p, str(b["prefix"])) for p in PLANTS for b in batches[p]] + [("plant-b", faulty.prefix)]
    verdicts = []
    with progress_bar(d.console) as bar:
        job = bar.add_task("the data gate (validate-batch flow)", total=len(todo))
        for plant, prefix in todo:
            verdicts.append({"plant": plant, **validate_batch_flow(plant=plant, batch=prefix)})
            bar.advance(job)
    table = Table(box=None, padding=(0, 2))
    for col in ("plant", "batch", "parts", "verdict", "dataset version"):
        table.add_column(col, no_wrap=col != "batch", overflow="fold")
    for r in verdicts:
        ok = r["verdict"] == "accepted"
        detail = r["manifest_id"][:12] if ok else f"{len(r['failed_rules'])} rules failed"
        table.add_row(
            r["plant"], r["batch_id"], str(r["parts"]), f"[{'green' if ok else 'red'}]{r['verdict']}[/]", detail
        )
    d.console.print(table)
    quarantined = [r for r in verdicts if r["verdict"] != "accepted"]
    for r in quarantined:
        d.say(f"quarantined, not deleted: {r['quarantine_prefix']}/")
        for rule in r["failed_rules"][:6]:
            d.say(f"  [red]x[/] {escape(rule)}")
    datasets = {p: [r["manifest_id"] for r in verdicts if r["plant"] == p and r["manifest_id"]] for p in PLANTS}
    return {
        "datasets": datasets,
        "parts": {p: sum(int(b["parts"]) for b in batches[p]) for p in PLANTS},
        "quarantined": [r["quarantine_prefix"] for r in quarantined],
        "failed_rules": sum(len(r["failed_rules"]) for r in quarantined),
    }


def central_baseline(d: Demo) -> dict[str, Any]:
    from andon.flows.governance import central_baseline_flow

    datasets = d.done("data")["datasets"]
    with d.console.status("training central.surface-defects on the pooled datasets (central-baseline flow)..."):
        out = central_baseline_flow(contributions=datasets)
    d.say(central_line(out))
    if not out["champion"]:
        for v in out["violations"][:3]:
            d.say(f"  [red]x[/] {v}")
    d.say(f"pooled by reference: dataset {out['dataset'][:12]} (manifests only; no image left a plant's prefix)")
    keys = ("model", "version", "escape_rate", "overkill_rate", "accuracy", "champion", "previous", "violations")
    return {key: out[key] for key in keys}


def fine_tune_plants(d: Demo) -> dict[str, Any]:
    from andon.flows.governance import fine_tune_flow
    from andon.flows.train import promote_flow

    datasets = d.done("data")["datasets"]
    champions: dict[str, Any] = {}
    for plant in PLANTS:
        with d.console.status(f"{plant}: fine-tuning from the central baseline, then the gate (fine-tune flow)..."):
            out = fine_tune_flow(plant=plant, dataset_ids=datasets[plant])
        training, gate = out["training"], out["promotion"]
        m = gate["challenger_metrics"]
        verdict = "[green]promoted[/]" if gate["passed"] else "[red]refused[/]: " + "; ".join(gate["violations"])
        parent = parent_name(plant, training["version"])
        how = f"fine-tuned from {parent}" if parent else "trained from scratch (the center has no champion)"
        d.say(f"{plant}: v{training['version']} {how}; on {gate['evaluated_on']}: {rates(m)}; {verdict}")
        if not gate["passed"] and gate.get("champion") is None:
            # a plant needs a champion for the rest of the day: forced, on the record, with the reason
            forced = promote_flow(plant=plant, force=True, reason="demo: the first champion, below the gate")
            d.say(f"  [yellow]forced[/] v{forced['challenger']} to champion (recorded as forced in the registry)")
        champions[plant] = {
            "version": training["version"],
            "parent": parent,
            "passed": gate["passed"],
            "threshold": training["operating_point"]["threshold"],
            **{k: m.get(k) for k in RATE_KEYS},
        }
    return {"champions": champions}


def production(d: Demo) -> dict[str, Any]:
    from andon.flows.ingest import ingest_folder_flow, synthesize_plant_flow
    from andon.flows.monitor import monitor_flow
    from andon.flows.score import score_batch_flow

    hours, per_hour = d.size.hours, d.size.per_hour
    start = d.day.replace(hour=8)
    todo: list[tuple[str, str]] = []
    with d.console.status("the shift's raw batches..."):
        # plant-a: real casting parts it never trained on; one more hour is kept for chapter 8
        a = ingest_folder_flow(
            plant="plant-a",
            path=str(d.casting / "test"),
            limit=(hours + 1) * per_hour,
            start=start,
            batch_size=per_hour,
            mixed=True,
        )
        todo += [("plant-a", str(b["prefix"])) for b in a[:hours]]
        for i, plant in enumerate(PLANTS[1:], start=1):
            for h in range(hours):
                made = synthesize_plant_flow(
                    plant=plant, parts=per_hour, seed=d.seeded(100 * i + h), start=start + timedelta(hours=h)
                )
                todo += [(plant, str(b["prefix"])) for b in made]
    summary: dict[str, dict[str, int]] = {p: {"scored": 0, "defects": 0, "explained": 0} for p in PLANTS}
    with progress_bar(d.console) as bar:
        job = bar.add_task("scoring with explanations (score-batch flow)", total=len(todo))
        for plant, prefix in todo:
            s = score_batch_flow(plant=plant, batch=prefix)
            for k in summary[plant]:
                summary[plant][k] += int(s[k])
            bar.advance(job)
    drift = {}
    with d.console.status("the hourly monitor at every plant (monitor flow, Evidently report)..."):
        for plant in PLANTS:
            m = monitor_flow(plant=plant, kind="hourly")
            drift[plant] = {"share": m.get("drift_share"), "alerts": len(m.get("alerts", []))}
    for plant in PLANTS:
        s, m = summary[plant], drift[plant]
        d.say(
            f"{plant}: {s['scored']} parts scored, {s['defects']} rejected ({s['defects'] / max(s['scored'], 1):.0%}), "
            f"{s['explained']} saliency maps; drift share {m['share'] or 0:.2f}, {m['alerts']} alerts"
        )
    return {"scored": summary, "drift": drift, "plant_a_spare": str(a[hours]["prefix"]) if len(a) > hours else None}


def lighting_change(d: Demo) -> dict[str, Any]:
    from andon.flows.ingest import DriftParams, synthesize_plant_flow
    from andon.flows.monitor import monitor_flow
    from andon.flows.score import score_batch_flow

    plant = "plant-b"
    before = champion_of(plant)
    with d.console.status("plant-b: a lamp fails; the next parts are made at 55 % brightness..."):
        batches = synthesize_plant_flow(
            plant=plant,
            parts=d.size.dark_parts,
            seed=d.seeded(777),
            start=d.day.replace(hour=8 + d.size.hours),
            drift=DriftParams(brightness=0.55),
        )
        for b in batches:
            score_batch_flow(plant=plant, batch=str(b["prefix"]))
    reviewed = review(d, plant, batches)
    d.say(f"QA at plant-b reviews {reviewed} parts of the dark shift (they become training labels)")
    t0 = datetime.now(UTC)
    with plant_worker(d, plant):  # plant-b's worker polls its pool the whole time: the run starts at once
        with d.console.status("the hourly monitor runs at plant-b (monitor flow)..."):
            m = monitor_flow(plant=plant, kind="hourly")
        alerts = m.get("alerts", [])
        if not alerts:  # an error, not a finished chapter: a re-run tries again
            raise AndonError(
                f"no alert opened at plant-b (drift share {m.get('drift_share')}): its series may still be active "
                "from an earlier try (`andon alerts list --plant plant-b`); run the demo in a fresh ANDON_HOME"
            )
        by_event: dict[str, list[str]] = {}
        for a in alerts:
            by_event.setdefault(f"{a['event']} ({a['payload']['severity']})", []).append(a["payload"]["series"])
        for what, series in by_event.items():
            d.say(f"[red]ALERT[/] {what}: {', '.join(series)}")
        d.say(f"Evidently drift share {m.get('drift_share', 0):.2f}; report: {d.store.uri(m['drift_report_key'])}")
        lead = next((a for a in alerts if a["payload"].get("starts_retrain")), None)
        if lead is None:
            raise AndonError("no alert cleared plant-b's retrain threshold: no retrain was triggered")
        d.say(
            f"one cause, one retrain: the {lead['payload']['series']} alert's {lead['event']} carries andon.significant"
        )
        run = wait_for_run(d, plant, t0, lead["event"])
    outcome = retrain_outcome(d, plant, before, run)
    dark = on_parts(d, plant, batches, before, outcome["newest"])
    return {"alerts": len(alerts), "drift_share": m.get("drift_share"), **outcome, "dark_shift": dark}


def mes_new_sku(d: Demo) -> dict[str, Any]:
    import httpx

    from andon.flows.ingest import synthesize_plant_flow
    from andon.flows.score import score_batch_flow
    from andon.gateway.app import build_gateway, create_app
    from andon.gateway.signing import headers
    from andon.httpkit import run_in_thread

    plant = "plant-c"
    before = champion_of(plant)
    with d.console.status("plant-c starts a new SKU; its first parts are scored and QA labels them..."):
        batches = synthesize_plant_flow(
            plant=plant, parts=d.size.sku_parts, seed=d.seeded(4242), start=d.day.replace(hour=9 + d.size.hours)
        )
        for b in batches:
            score_batch_flow(plant=plant, batch=str(b["prefix"]))
    d.say(f"QA at plant-c reviews {review(d, plant, batches)} parts of the new SKU")
    secret = d.settings.mes_secret.get_secret_value() if d.settings.mes_secret else f"demo-{uuid.uuid4().hex}"
    os.environ["ANDON_MES_SECRET"] = secret
    from andon.settings import reset_settings

    reset_settings()
    gw = build_gateway(api_url=d.settings.prefect_api_url)
    msg = {
        "type": "sku.introduced",
        "message_id": f"demo-{uuid.uuid4().hex[:12]}",
        "plant": plant,
        "line": "line-1",
        "occurred_at": datetime.now(UTC).isoformat(),
        "sku": "DSC-200",
    }
    body = json.dumps(msg).encode()
    t0 = datetime.now(UTC)
    try:
        with run_in_thread(create_app(gw)) as url, httpx.Client(base_url=url, timeout=10) as http:
            forged = http.post("/v1/mes/events", content=body, headers=headers(body, "not-the-secret"))
            d.say(f"a forged copy (wrong signature) -> HTTP {forged.status_code}: {forged.json().get('detail', '')}")
            real = http.post("/v1/mes/events", content=body, headers=headers(body, secret))
            answer = real.json()
            d.say(f"the MES message, signed -> HTTP {real.status_code}: {answer.get('event')} {answer.get('event_id')}")
            if real.status_code >= 300:
                raise AndonError(f"the gateway refused the demo's MES message: {answer}")
            with plant_worker(d, plant):
                run = wait_for_run(d, plant, t0, "mes.sku.introduced")
    finally:
        if gw.forwarder:
            gw.forwarder.stop()
    return {
        "forged_status": forged.status_code,
        "event_id": answer.get("event_id"),
        **retrain_outcome(d, plant, before, run),
    }


def bad_version_and_rollback(d: Demo) -> dict[str, Any]:
    from andon.config import load_plant
    from andon.flows.score import score_batch_flow
    from andon.flows.train import promote_flow
    from andon.lifecycle.registry import model_name
    from andon.training.run import train_plant

    plant = "plant-a"
    cfg = load_plant(plant)
    name = model_name(plant, TASK)
    good = champion_of(plant)
    spare = d.done("production")["plant_a_spare"]
    if good is None or spare is None:
        raise AndonError("plant-a needs a champion and an unscored hour of production (chapters 4 and 5)")
    before = d.done("production")["scored"][plant]
    rate_before = before["defects"] / max(before["scored"], 1)
    bad_recipe = cfg.recipe.with_overrides({"training": {"learning_rate": BAD_LR, "epochs": 1}})
    with d.console.status(f"a version trained with a recipe typo (learning rate {BAD_LR:g}) ..."):
        bad = train_plant(d.store, cfg, d.done("data")["datasets"][plant], recipe=bad_recipe)
        gate = promote_flow(plant=plant, force=True, reason="demo: pushed past the gate on a Friday evening")
    d.say(f"v{bad.version} forced to champion past: {'; '.join(gate['violations']) or 'nothing (it passed)'}")
    with d.console.status("the next hour at plant-a is scored by it..."):
        s = score_batch_flow(plant=plant, batch=spare)
    rate_bad = s["defects"] / max(s["scored"], 1)
    d.say(f"[red]the rejected share moves[/]: {rate_before:.0%} of parts before, {rate_bad:.0%} with v{bad.version}")
    d.andon("rollback", name, "--reason", f"v{bad.version} rejects {rate_bad:.0%} of parts (was {rate_before:.0%})")
    d.andon("models", "diff", name, str(good), str(bad.version))
    return {
        "good": good,
        "bad": bad.version,
        "rate_before": rate_before,
        "rate_bad": rate_bad,
        "after": champion_of(plant),
    }


def explain_one(d: Demo) -> dict[str, Any]:
    from andon.lifecycle.registry import model_name
    from andon.scoring.predlog import PredictionLog

    name, good = model_name("plant-a", TASK), d.done("rollback")["good"]
    rows = PredictionLog(d.store, "plant-a").read(
        d.day - timedelta(days=1),
        datetime.now(UTC) + timedelta(minutes=1),
        where="model_name = ? and model_version = ? and predicted_class <> 'ok' and explanation_method is not null",
        columns="part_id",
        params=[name, good],
    )
    if rows.empty:
        d.say("[yellow]no rejected part with an explanation to show[/]")
        return {"part": None}
    part = str(rows.part_id.iloc[0])
    d.andon("explain", "--plant", "plant-a", part)
    return {"part": part}


def governance(d: Demo) -> dict[str, Any]:
    from andon.flows.governance import governance_report_flow

    with d.console.status("the cross-plant report: policy, generalization matrix (governance-report flow)..."):
        out = governance_report_flow(plants=list(PLANTS))
    violations = [f for f in out["findings"] if f["severity"] == "violation"]
    d.say(f"policy: {len(violations)} violations, {len(out['findings']) - len(violations)} notices")
    for f in out["findings"][:8]:
        d.say(f"  {f['plant']}: {f['severity']} ({f['rule']}): {f['message']}")
    d.say(f"report: {d.store.uri(out['key'])}")
    return {"report_key": out["key"], "violations": len(violations), "notices": len(out["findings"]) - len(violations)}


CHAPTERS: list[tuple[str, str, Chapter]] = [
    ("stack", "the embedded stack and the plants' deployments", stack_and_deployments),
    ("data", "data in, through the gate (one batch with planted faults)", ingest_and_validate),
    ("central", "the central baseline from pooled datasets", central_baseline),
    ("fine-tune", "each plant fine-tunes from it and promotes a champion", fine_tune_plants),
    ("production", "hours of production, scored with explanations, monitored", production),
    ("lighting", "plant-b's light fails: alert -> event -> retrain deployment", lighting_change),
    ("mes", "plant-c: a new SKU through the signed MES gateway -> retrain", mes_new_sku),
    ("rollback", "plant-a: a bad version forced in, caught, rolled back, diffed", bad_version_and_rollback),
    ("explain", "why was this part rejected?", explain_one),
    ("governance", "the governance report closes the day", governance),
]
