"""Event names, resources and deterministic ids (plain Python; tasks emit them through Prefect).

Every Andon event is about a plant: resource ``andon.plant.<plant>`` with labels ``plant.id`` and
``line.id``. Ids are uuid5 of a stable key, so re-sending the same fact never counts twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Event:
    """One Andon event as it is sent: name, resource, payload and its deterministic id. The
    builders below make each event in one place; a task emits it through Prefect
    (``emit_event(**ev.emit_kwargs())``), the CLI posts it (``post_event``): same id, same payload."""

    event: str
    resource: dict[str, str]
    payload: dict[str, Any]
    id: uuid.UUID

    def emit_kwargs(self) -> dict[str, Any]:
        return {"event": self.event, "resource": self.resource, "payload": self.payload, "id": self.id}


PROMOTION_KEYS = ("challenger", "champion", "violations", "forced", "evaluated_on", "decided_at")


def model_promoted(plant: str, decision: dict[str, Any]) -> Event:
    """``andon.model.promoted`` of a passed (or forced) promotion decision (``GateDecision.as_dict()``);
    its id is the decision's, so a retried publish is one event and a re-promotion (after a
    rollback) is another."""
    payload = {k: decision[k] for k in PROMOTION_KEYS}
    eid = event_id(MODEL_PROMOTED, plant, decision["challenger"], decision["decided_at"])
    return Event(MODEL_PROMOTED, plant_resource(plant), payload, eid)


def model_rolled_back(plant: str, before: int, after: int, reason: str, at: str) -> Event:
    """``andon.model.rolled_back``: champion moved from ``before`` back to ``after`` at ``at`` (ISO)."""
    payload = {"from": before, "to": after, "reason": reason, "at": at}
    return Event(
        MODEL_ROLLED_BACK, plant_resource(plant), payload, event_id(MODEL_ROLLED_BACK, plant, before, after, at)
    )


def monitoring_alert(event: str, payload: dict[str, Any], key: str) -> Event:
    """A monitoring alert's event (drift detected, performance degraded); ``key`` is the alert's
    own key, so a re-run of the same window never raises it twice."""
    return Event(event, alert_resource(payload), payload, event_id(event, key))


def retrain_finished(plant: str, decision: dict[str, Any], payload: dict[str, Any]) -> Event:
    """``andon.retrain.finished``: one per retrain decision (``PolicyDecision.as_dict()``)."""
    eid = event_id(RETRAIN_FINISHED, plant, decision["decided_at"], decision["event_id"])
    return Event(RETRAIN_FINISHED, plant_resource(plant), payload, eid)


def post_event(api_url: str, ev: Event) -> bool:
    """Send one event to a Prefect server over its REST API (no Prefect import: the CLI uses it).

    Returns False, without raising, when the server does not answer: the fact is recorded in
    MLflow either way, the event is a notification.
    """
    from datetime import UTC, datetime

    import httpx

    body = [
        {
            "id": str(ev.id),
            "occurred": datetime.now(UTC).isoformat(),
            "event": ev.event,
            "resource": ev.resource,
            "payload": ev.payload,
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
