"""Create (or keep) process work pools in one process: ``python -m tasks.work_pools NAME ...``.
`andon deploy` calls it once for all plants (a `prefect work-pool create` per plant costs a
second or two of CLI start-up each)."""

from __future__ import annotations

import asyncio
import sys


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


if __name__ == "__main__":
    made = asyncio.run(ensure_pools(sys.argv[1:]))
    sys.stdout.write(f"{len(made)} work pools created, {len(sys.argv) - 1 - len(made)} existed\n")
