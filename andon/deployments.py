"""``deployments/prefect.yaml``, generated from ``configs/``: per plant, ``score``, ``validate``,
``monitor`` (every ``monitoring.window_minutes``), ``monitor-hourly`` and ``drift-nightly``
(cron in the plant's timezone) and ``retrain`` with one event trigger per cause and a schedule
every ``schedules.retrain_every_days`` (trigger ``schedule``: it still needs new labels). Plain data
(no Prefect import); ``andon deploy`` applies the file (``cli/prefect_deploy.py``).

Every trigger matches on the plant's resource id, so an event of plant A never starts plant B's
retrain (Prefect does not scope triggers to the deployment by itself), and on the label
``andon.significant = "true"`` that the gateway and the monitor set when the event clears the
plant's own threshold (a product-mix shift over ``mes.product_mix_threshold``, an accuracy drop
of ``retrain.accuracy_drop_pct`` or more, drift of ``retrain.drift_severity``): a trigger can
match labels, not compare numbers. The event's id, name and payload become the retrain flow's
typed parameters; one retrain per plant runs at a time (``concurrency_limit`` 1, ENQUEUE).
"""

from __future__ import annotations

from typing import Any

from andon.config import PlantConfig
from andon.events import (
    DRIFT_DETECTED,
    MES_FAILURE_TYPE_LOGGED,
    MES_LINE_RECONFIGURED,
    MES_PRODUCT_MIX_CHANGED,
    MES_SKU_INTRODUCED,
    PERFORMANCE_DEGRADED,
    SIGNIFICANT,
)
from andon.lifecycle.registry import SENSOR_TASK

VISION = "vision"
# what each cause retrains: the sensor model learns a new failure type, everything else the camera's
RETRAIN_CAUSES: dict[str, str] = {
    MES_SKU_INTRODUCED: VISION,
    MES_LINE_RECONFIGURED: VISION,
    MES_PRODUCT_MIX_CHANGED: VISION,
    MES_FAILURE_TYPE_LOGGED: SENSOR_TASK,
    PERFORMANCE_DEGRADED: VISION,
    DRIFT_DETECTED: VISION,
}
ENTRYPOINTS = {
    "score": "flows/score.py:score_batch_flow",
    "validate": "flows/validate.py:validate_batch_flow",
    "monitor": "flows/monitor.py:monitor_flow",
    "retrain": "flows/retrain.py:retrain_flow",
}
PAYLOAD_AS_JSON = {
    "__prefect_kind": "json",
    "value": {"__prefect_kind": "jinja", "template": "{{ event.payload | tojson }}"},
}


def _jinja(template: str) -> dict[str, str]:
    """An explicit Jinja parameter: rendered as a plain string. (A bare "{{ ... }}" string is
    upgraded by Prefect >= 3.6.24 to "{{ ... | tojson }}", which fails on the event's UUID id.)"""
    return {"__prefect_kind": "jinja", "template": template}


def work_pool(plant: str) -> str:
    return f"andon-{plant}"


def retrain_triggers(cfg: PlantConfig) -> list[dict[str, Any]]:
    return [
        {
            "type": "event",
            "enabled": True,
            "name": f"{cfg.id}: {event} retrains {task}",
            "match": {"prefect.resource.id": f"andon.plant.{cfg.id}", SIGNIFICANT: "true"},
            "expect": [event],
            "posture": "Reactive",
            "threshold": 1,
            "within": 0,
            "parameters": {
                "plant": cfg.id,
                "task": task,
                "trigger": _jinja("{{ event.event }}"),
                "event_id": _jinja("{{ event.id }}"),
                "details": PAYLOAD_AS_JSON,
            },
        }
        for event, task in RETRAIN_CAUSES.items()
    ]


def plant_deployments(cfg: PlantConfig) -> list[dict[str, Any]]:
    pool = {"name": work_pool(cfg.id)}
    tags = [f"plant:{cfg.id}", "andon"]

    def dep(name: str, flow: str, description: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": f"{name}-{cfg.id}",
            "entrypoint": ENTRYPOINTS[flow],
            "description": description,
            "tags": tags,
            "work_pool": pool,
            "parameters": {"plant": cfg.id} | extra.pop("parameters", {}),
            **extra,
        }

    tz = cfg.timezone
    minutes = cfg.monitoring.window_minutes
    return [
        dep("score", "score", f"{cfg.name}: score a raw batch with the champion"),
        dep("validate", "validate", f"{cfg.name}: the data gate on a raw batch (bad batches quarantined)"),
        dep(
            "monitor",
            "monitor",
            f"{cfg.name}: charts over the last {minutes} minutes",
            parameters={"kind": "incremental"},
            schedules=[{"interval": minutes * 60, "timezone": tz, "slug": f"{cfg.id}-monitor"}],
        ),
        dep(
            "monitor-hourly",
            "monitor",
            f"{cfg.name}: the last hour with the Evidently summary",
            parameters={"kind": "hourly"},
            schedules=[{"cron": cfg.schedules.monitor_hourly, "timezone": tz, "slug": f"{cfg.id}-monitor-hourly"}],
        ),
        dep(
            "drift-nightly",
            "monitor",
            f"{cfg.name}: the last 24 hours with the full drift report",
            parameters={"kind": "nightly"},
            schedules=[{"cron": cfg.schedules.drift_nightly, "timezone": tz, "slug": f"{cfg.id}-drift-nightly"}],
        ),
        dep(
            "retrain",
            "retrain",
            f"{cfg.name}: policy, dataset + new labels, fine-tune from the champion, promotion gate",
            parameters={"task": VISION, "trigger": "manual"},
            concurrency_limit={"limit": 1, "collision_strategy": "ENQUEUE"},
            triggers=retrain_triggers(cfg),
            schedules=[
                {
                    "interval": cfg.schedules.retrain_every_days * 86400,
                    "timezone": tz,
                    "slug": f"{cfg.id}-retrain-scheduled",
                    "parameters": {"trigger": "schedule"},
                }
            ]
            if cfg.schedules.retrain_every_days
            else [],
        ),
    ]


def render(plants: list[PlantConfig]) -> dict[str, Any]:
    """The whole ``prefect.yaml`` document."""
    return {
        "name": "andon",
        "prefect-version": "3.9.1",
        # the flows run from the repository the file is deployed from (``andon deploy`` sets it)
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $ANDON_REPO_ROOT }}"}}],
        "deployments": [d for cfg in plants for d in plant_deployments(cfg)],
    }


HEADER = """\
# GENERATED by `andon deployments render` from configs/ -- do not edit; change configs/ and render.
# Apply with `andon deploy` (the plants' work pools, then every deployment; `prefect deploy --all` also works).
"""


def render_yaml(plants: list[PlantConfig]) -> str:
    import yaml

    class Plain(yaml.SafeDumper):  # every deployment spelled out, no &anchors
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return HEADER + yaml.dump(render(plants), Dumper=Plain, sort_keys=False, width=120, allow_unicode=True)


def changes(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, list[str]]:
    """Deployments added, removed and changed (with the top-level fields that changed)."""
    before = {d["name"]: d for d in (old or {}).get("deployments", [])}
    after = {d["name"]: d for d in new.get("deployments", [])}
    changed = []
    for name in sorted(set(before) & set(after)):
        fields = sorted(k for k in set(before[name]) | set(after[name]) if before[name].get(k) != after[name].get(k))
        if fields:
            changed.append(f"{name}: {', '.join(fields)}")
    return {"added": sorted(set(after) - set(before)), "removed": sorted(set(before) - set(after)), "changed": changed}


def log_deploy(store: Any, doc: dict[str, Any], api_url: str, who: str) -> dict[str, Any]:
    """Record an ``andon deploy``: what changed since the last one, by whom, where
    (``governance/deployments/<time>.json``; the last applied document at ``.../last.json``)."""
    import json
    from datetime import UTC, datetime

    from andon.errors import ObjectNotFoundError

    try:
        previous = json.loads(store.get("governance/deployments/last.json"))
    except ObjectNotFoundError:
        previous = None
    record = {"at": datetime.now(UTC).isoformat(), "by": who, "api": api_url, **changes(previous, doc)}
    store.put(f"governance/deployments/{datetime.now(UTC):%Y%m%dT%H%M%S%f}.json", json.dumps(record, indent=1).encode())
    store.put("governance/deployments/last.json", json.dumps(doc).encode())
    return record


# ------------------------------------------------------------------ Kubernetes work pools

K8S_VARIABLES: dict[str, dict[str, Any]] = {
    "name": {"type": "string", "title": "Name", "default": None},
    "namespace": {"type": "string", "title": "Namespace", "default": "andon"},
    "image": {"type": "string", "title": "Image", "default": "andon:0.1.0"},
    "image_pull_policy": {"type": "string", "enum": ["IfNotPresent", "Always", "Never"], "default": "IfNotPresent"},
    "service_account_name": {"type": "string", "default": "andon-flows"},
    "cpu_request": {"type": "string", "default": "1"},
    "memory_request": {"type": "string", "default": "4Gi"},
    "finished_job_ttl": {"type": "integer", "default": 3600},
    "job_watch_timeout_seconds": {"type": "integer", "default": None},
    "pod_watch_timeout_seconds": {"type": "integer", "default": 300},
    "stream_output": {"type": "boolean", "default": True},
    "command": {"type": "string", "default": None},
    "env": {"type": "object", "default": {}},
    "labels": {"type": "object", "default": {}},
    "cluster_config": {"type": "object", "default": None},
}


def k8s_base_job_template(cfg: PlantConfig) -> dict[str, Any]:
    """The base job template of the plant's Kubernetes work pool (``andon-<plant>``): the Andon
    image, the shared ConfigMap ``andon-config`` and Secret ``andon-secrets``, the plant label and
    node placement, resource requests as variables a deployment may override."""
    variables = {k: dict(v) for k, v in K8S_VARIABLES.items()}
    # the library's progress (epochs, decisions) in each flow run's Logs tab
    variables["env"]["default"] = {
        "ANDON_PLANT": cfg.id,
        "PREFECT_LOGGING_EXTRA_LOGGERS": "andon",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
    variables["labels"]["default"] = {"andon.io/plant": cfg.id}
    container = {
        "name": "prefect-job",
        "image": "{{ image }}",
        "imagePullPolicy": "{{ image_pull_policy }}",
        "args": "{{ command }}",
        "env": "{{ env }}",
        "envFrom": [{"configMapRef": {"name": "andon-config"}}, {"secretRef": {"name": "andon-secrets"}}],
        "resources": {"requests": {"cpu": "{{ cpu_request }}", "memory": "{{ memory_request }}"}},
    }
    return {
        "variables": {"type": "object", "properties": variables},
        "job_configuration": {
            "name": "{{ name }}",
            "namespace": "{{ namespace }}",
            "labels": "{{ labels }}",
            "env": "{{ env }}",
            "command": "{{ command }}",
            "cluster_config": "{{ cluster_config }}",
            "job_watch_timeout_seconds": "{{ job_watch_timeout_seconds }}",
            "pod_watch_timeout_seconds": "{{ pod_watch_timeout_seconds }}",
            "stream_output": "{{ stream_output }}",
            "job_manifest": {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"generateName": "{{ name }}-", "namespace": "{{ namespace }}", "labels": "{{ labels }}"},
                "spec": {
                    "backoffLimit": 0,
                    "ttlSecondsAfterFinished": "{{ finished_job_ttl }}",
                    "template": {
                        "metadata": {"labels": {"andon.io/plant": cfg.id}},
                        "spec": {
                            "restartPolicy": "Never",
                            "serviceAccountName": "{{ service_account_name }}",
                            "nodeSelector": {"andon.io/pool": work_pool(cfg.id)},
                            "containers": [container],
                        },
                    },
                },
            },
        },
    }
