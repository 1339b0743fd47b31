"""Event names, resources and deterministic ids (plain Python; tasks emit them through Prefect).

Every Andon event is about a plant: resource ``andon.plant.<plant>`` with labels ``plant.id`` and
``line.id``. Ids are uuid5 of a stable key, so re-sending the same fact never counts twice.
"""

from __future__ import annotations

import uuid
from typing import Any

NAMESPACE = uuid.UUID("6f1d3c1e-8a55-4c0e-9d2b-7a3e5f0c2b11")

BATCH_VALIDATED = "andon.batch.validated"
BATCH_QUARANTINED = "andon.batch.quarantined"
DRIFT_DETECTED = "andon.drift.detected"
PERFORMANCE_DEGRADED = "andon.performance.degraded"
MODEL_PROMOTED = "andon.model.promoted"
MODEL_ROLLED_BACK = "andon.model.rolled_back"
RETRAIN_FINISHED = "andon.retrain.finished"


def plant_resource(plant: str, line: str | None = None) -> dict[str, str]:
    resource = {"prefect.resource.id": f"andon.plant.{plant}", "plant.id": plant}
    if line:
        resource["line.id"] = line
    return resource


def event_id(*parts: Any) -> uuid.UUID:
    """A deterministic id from the parts that make the fact unique."""
    return uuid.uuid5(NAMESPACE, "|".join(str(p) for p in parts))


def post_event(api_url: str, event: str, resource: dict[str, str], payload: dict[str, Any], eid: uuid.UUID) -> bool:
    """Send one event to a Prefect server over its REST API (no Prefect import: the CLI uses it).

    Returns False, without raising, when the server does not answer: the fact is recorded in
    MLflow either way, the event is a notification.
    """
    from datetime import UTC, datetime

    import httpx

    body = [
        {
            "id": str(eid),
            "occurred": datetime.now(UTC).isoformat(),
            "event": event,
            "resource": resource,
            "payload": payload,
        }
    ]
    from andon.settings import prefect_auth_headers

    try:
        resp = httpx.post(f"{api_url.rstrip('/')}/events", json=body, timeout=5, headers=prefect_auth_headers())
    except httpx.HTTPError:
        return False
    return resp.status_code < 300


# --------------------------------------------------------------------------- MES events

MES_SKU_INTRODUCED = "mes.sku.introduced"
MES_FAILURE_TYPE_LOGGED = "mes.failure_type.logged"
MES_PRODUCT_MIX_CHANGED = "mes.product_mix.changed"
MES_LINE_RECONFIGURED = "mes.line.reconfigured"
MES_EVENTS = (MES_SKU_INTRODUCED, MES_FAILURE_TYPE_LOGGED, MES_PRODUCT_MIX_CHANGED, MES_LINE_RECONFIGURED)
SIGNIFICANT = "andon.significant"  # resource label: "true" when the event should retrain (triggers match it)


def alert_resource(payload: dict[str, Any]) -> dict[str, str]:
    """The resource of a monitoring alert's event: significant only for the lead alert of its
    monitor run (``starts_retrain``), so one cause starts one retrain."""
    return plant_resource(payload["plant"]) | {SIGNIFICANT: str(bool(payload.get("starts_retrain"))).lower()}


def mes_event_id(plant: str, message_id: str) -> uuid.UUID:
    """The event id of an MES message: the same message, however often sent, is one event."""
    return event_id("mes", plant, message_id)
