"""Policy checks for real: a trained champion in a SQLite MLflow store, its dataset in the object
store; what `andon governance check` finds, and a challenger without lineage refused by the gate."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_training_lifecycle import CFG, SMALL, _dataset
from typer.testing import CliRunner

from andon.cli.main import app
from andon.storage import open_store

pytestmark = pytest.mark.slow


def test_policy_findings_and_the_gate(andon_home: Path, mlflow_tracking_uri: str) -> None:
    from andon.governance.policy import NOTICE, VIOLATION, check_plant, load_policy
    from andon.lifecycle.promotion import promote
    from andon.lifecycle.registry import client, model_name
    from andon.monitoring.monitor import _state_key
    from andon.training.run import train_plant

    store = open_store()
    policy = load_policy()
    # before any champion: a notice, nothing fails
    assert [(f.rule, f.severity) for f in check_plant(store, CFG, policy)] == [("champion", NOTICE)]

    out = train_plant(store, CFG, [_dataset(store, 7)], recipe=SMALL)
    promote(store, CFG, force=True, reason="first champion")
    findings = {f.rule: f for f in check_plant(store, CFG, policy)}
    assert findings["monitoring"].severity == VIOLATION and "never" in findings["monitoring"].message
    assert "lineage" not in findings and "metrics" not in findings and "checksum" not in findings
    # the test dataset was built straight from metadata, never through the gate
    assert findings["validation"].severity == NOTICE

    # monitoring ran: that finding goes; an edited manifest breaks the checksum
    store.put(_state_key(CFG.id), json.dumps({"last_end": datetime.now(UTC).isoformat()}).encode())
    key = f"datasets/{CFG.id}/{out.manifest_id}.json"
    doc = json.loads(store.get(key))
    doc["objects"][0]["label"] = "ok" if doc["objects"][0]["label"] == "defect" else "defect"
    store.put(key, json.dumps(doc).encode())
    findings = {f.rule: f for f in check_plant(store, CFG, policy)}
    assert "monitoring" not in findings
    assert findings["checksum"].severity == VIOLATION and "does not hash to its id" in findings["checksum"].message

    # a plant override outside the center's ranges
    wild = CFG.model_copy(
        update={
            "recipe": CFG.recipe.model_copy(update={"training": CFG.recipe.training.model_copy(update={"epochs": 400})})
        }
    )
    assert any(f.rule == "recipe" and "training.epochs = 400" in f.message for f in check_plant(store, wild, policy))

    # the CLI: per plant, exit 1 on a violation
    res = CliRunner().invoke(app, ["governance", "check", "--plant", CFG.id], env={"COLUMNS": "200"})
    assert res.exit_code == 1 and "FAIL" in res.stdout and "checksum" in res.stdout
    res = CliRunner().invoke(app, ["governance", "check", "--plant", CFG.id, "--json"])
    assert {f["rule"] for f in json.loads(res.stdout)} >= {"checksum"}

    # the gate runs the policy on a challenger: one without its code commit cannot serve
    second = train_plant(store, CFG, [_dataset(store, 8)], recipe=SMALL)
    client().delete_model_version_tag(model_name(CFG.id, CFG.recipe.task), str(second.version), "code.commit")
    decision = promote(store, CFG)
    assert not decision.passed
    assert any(v.startswith("policy (lineage)") and "code.commit" in v for v in decision.violations)
