"""Flows as Prefect's users expect them: enumerated parameters are choices in the UI (an ``enum``
in the deployment's parameter schema, refused by Prefect when wrong), runs have readable names,
long flows a timeout."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _schema(flow: Any) -> dict[str, Any]:
    from prefect.utilities.callables import parameter_schema

    return parameter_schema(flow.fn).model_dump_for_openapi()


def _choices(schema: dict[str, Any], name: str) -> set[str]:
    """The enum of a parameter, however pydantic nests it (a $ref, anyOf with null)."""
    prop = schema["properties"][name]
    options = [prop, *prop.get("anyOf", []), *prop.get("allOf", [])]
    for option in options:
        if "$ref" in option:
            option = schema["definitions"][option["$ref"].rsplit("/", 1)[-1]]
        if "enum" in option:
            return set(option["enum"])
        if "const" in option:  # a one-choice Literal
            return {option["const"]}
    raise AssertionError(f"{name}: no choices in {prop}")


def test_enumerated_parameters_are_choices_that_match_the_code_and_the_deployments() -> None:
    from andon.flows.monitor import MonitorKind, monitor_flow
    from andon.flows.retrain import Trigger, retrain_flow
    from andon.tasks.monitoring import WINDOWS

    assert _choices(_schema(monitor_flow), "kind") == set(get_args(MonitorKind)) == set(WINDOWS)
    assert _choices(_schema(monitor_flow), "task") == {"machine-failure"}
    assert _choices(_schema(retrain_flow), "task") == {"vision", "machine-failure"}
    assert _choices(_schema(retrain_flow), "trigger") == set(get_args(Trigger))
    # every event a retrain deployment's trigger matches is a trigger the flow accepts
    doc = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    matched = {
        name
        for d in doc["deployments"]
        for t in d.get("triggers", [])
        for name in ([t["expect"]] if isinstance(t["expect"], str) else t["expect"])
    }
    assert matched and matched <= set(get_args(Trigger)), matched - set(get_args(Trigger))


def test_a_wrong_choice_is_refused_before_the_flow_runs() -> None:
    from prefect.exceptions import ParameterTypeError

    from andon.flows.retrain import retrain_flow

    with pytest.raises(ParameterTypeError):
        retrain_flow.validate_parameters({"plant": "plant-a", "task": "vison"})


@pytest.mark.parametrize(
    ("module", "name", "params", "expected"),
    [
        ("andon.flows.retrain", "retrain_flow", {"plant": "plant-b", "task": "vision", "trigger": "mes.sku.introduced"},
         "plant-b retrain vision on mes.sku.introduced"),
        ("andon.flows.monitor", "monitor_flow", {"plant": "plant-a", "kind": "hourly"}, "plant-a monitor hourly"),
        ("andon.flows.train", "promote_flow", {"plant": "plant-c"}, "plant-c promote"),
    ],
)  # fmt: skip
def test_runs_have_readable_names_and_long_flows_a_timeout(
    module: str, name: str, params: dict[str, Any], expected: str
) -> None:
    import importlib

    flow = getattr(importlib.import_module(module), name)
    assert flow.flow_run_name.format(**params) == expected
    assert flow.timeout_seconds and flow.timeout_seconds <= 8 * 3600
