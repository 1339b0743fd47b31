"""Apply the plants' deployments to a Prefect server, one process per step, for ``andon deploy``
(which runs it with the server's URL in the environment):

- ``python -m andon.cli.prefect_deploy pools NAME ...`` creates (or keeps) process work pools, all in
  one process (a ``prefect work-pool create`` per plant costs a second or two of start-up each);
- ``python -m andon.cli.prefect_deploy apply FILE`` applies a rendered ``prefect.yaml`` concurrently:
  what `prefect deploy --all` makes of the same file (flows, deployments with parameter schemas,
  work pools, schedules with their parameters, concurrency limits, pull steps, and one automation
  per trigger owned by its deployment), but it loads each flow once, talks to the server with up
  to 8 requests in flight and deletes owned automations only where there are some
  (benchmarks/governance_scale.py: 282 deployments of 47 plants took 130 s with `prefect deploy
  --all`). `prefect deploy --all --prefect-file FILE` remains equivalent.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml


def _resolve_env(value: Any) -> Any:
    """``{{ $NAME }}`` -> the environment value (what `prefect deploy` does at deploy time)."""
    if isinstance(value, str):
        return re.sub(r"\{\{\s*\$(\w+)\s*\}\}", lambda m: os.environ.get(m.group(1), ""), value)
    if isinstance(value, dict):
        return {k: _resolve_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v) for v in value]
    return value


def _load_flow(entrypoint: str) -> Any:
    path, name = entrypoint.split(":")
    # `flows/x.py` in the checkout is the installed module `andon.flows.x`
    return getattr(importlib.import_module("andon." + path.removesuffix(".py").replace("/", ".")), name)


def _schedule(spec: dict[str, Any]) -> Any:
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    if "cron" in spec:
        sched: Any = CronSchedule(cron=spec["cron"], timezone=spec.get("timezone"))
    else:
        sched = IntervalSchedule(interval=timedelta(seconds=spec["interval"]), timezone=spec.get("timezone"))
    return DeploymentScheduleCreate(
        schedule=sched, active=spec.get("active", True), parameters=spec.get("parameters", {}), slug=spec.get("slug")
    )


async def _automation_owners(client: Any, page: int = 200) -> set[str]:
    """Deployments that automations run (their owners when `prefect deploy` or this made them)."""
    owners: set[str] = set()
    offset = 0
    while True:
        batch = await client.read_automations(limit=page, offset=offset)
        for a in batch:
            owners |= {f"prefect.deployment.{x.deployment_id}" for x in a.actions if getattr(x, "deployment_id", None)}
        if len(batch) < page:
            return owners
        offset += page


async def apply(doc: dict[str, Any], concurrency: int = 8) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions
    from prefect.events import DeploymentEventTrigger
    from prefect.utilities.callables import parameter_schema

    pull = _resolve_env(doc.get("pull", []))
    flows: dict[str, Any] = {}
    for d in doc["deployments"]:
        if d["entrypoint"] not in flows:
            fl = _load_flow(d["entrypoint"])
            flows[d["entrypoint"]] = (fl, parameter_schema(fl.fn).model_dump_for_openapi())
    gate = asyncio.Semaphore(concurrency)
    async with get_client() as client:
        flow_ids = {ep: await client.create_flow_from_name(fl.name) for ep, (fl, _) in flows.items()}
        # who owns automations already (a re-deploy replaces them; a first deploy has none to delete)
        owners = await _automation_owners(client)

        async def one(d: dict[str, Any]) -> str:
            async with gate:
                fl, schema = flows[d["entrypoint"]]
                limit = d.get("concurrency_limit") or {}
                options = (
                    ConcurrencyOptions(collision_strategy=ConcurrencyLimitStrategy(limit["collision_strategy"]))
                    if limit.get("collision_strategy")
                    else None
                )
                dep_id = await client.create_deployment(
                    flow_id=flow_ids[d["entrypoint"]],
                    name=d["name"],
                    entrypoint=d["entrypoint"],
                    description=d.get("description"),
                    tags=d.get("tags", []),
                    parameters=d.get("parameters", {}),
                    parameter_openapi_schema=schema,
                    work_pool_name=d["work_pool"]["name"],
                    pull_steps=pull,
                    concurrency_limit=limit.get("limit"),
                    concurrency_options=options,
                    schedules=[_schedule(s) for s in d.get("schedules", [])],
                )
                if f"prefect.deployment.{dep_id}" in owners:
                    await client.delete_resource_owned_automations(f"prefect.deployment.{dep_id}")
                for spec in d.get("triggers", []):
                    trigger = DeploymentEventTrigger(**{k: v for k, v in spec.items() if k != "type"})
                    trigger.set_deployment_id(dep_id)
                    await client.create_automation(trigger.as_automation())
                return f"{fl.name}/{d['name']}"

        return list(await asyncio.gather(*(one(d) for d in doc["deployments"])))


async def ensure_pools(names: list[str]) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    created = []
    async with get_client() as client:
        for name in names:
            try:
                await client.create_work_pool(WorkPoolCreate(name=name, type="process"))
                created.append(name)
            except ObjectAlreadyExists:
                pass
    return created


def main(argv: list[str]) -> None:
    if argv[:1] == ["pools"]:
        made = asyncio.run(ensure_pools(argv[1:]))
        sys.stdout.write(f"{len(made)} work pools created, {len(argv) - 1 - len(made)} existed\n")
    elif len(argv) == 2 and argv[0] == "apply":
        sys.path.insert(0, os.getcwd())  # the deployments' entrypoints (flows/...) are relative to the checkout
        applied = asyncio.run(apply(yaml.safe_load(Path(argv[1]).read_text())))
        sys.stdout.write(f"applied {len(applied)} deployments\n")
    else:
        sys.stderr.write("usage: python -m andon.cli.prefect_deploy pools NAME ... | apply FILE\n")
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
