"""The ingest flows under the session's Prefect test harness (a real Prefect server)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from andon.config import load_plant
from andon.data.batches import list_raw_batches, parquet_to_frame, sha256_bytes
from andon.flows.ingest import DriftParams, ingest_folder_flow, synthesize_plant_flow
from andon.storage import open_store


async def _artifact(key: str) -> list[object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async with get_client() as client:
        return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def test_synthesize_flow_writes_batches_and_an_artifact(prefect_harness: None, andon_home: Path) -> None:
    start = datetime(2026, 11, 6, 6, tzinfo=UTC)
    state = synthesize_plant_flow(
        plant="plant-b", parts=45, seed=9, start=start, drift=DriftParams(brightness=0.8), return_state=True
    )
    assert state.is_completed()
    batches = state.result()
    assert sum(b["parts"] for b in batches) == 45
    cfg = load_plant("plant-b")
    stored = list(list_raw_batches(open_store(), cfg))
    assert [b.batch_id for b in stored] == [b["batch_id"] for b in sorted(batches, key=lambda b: b["prefix"])]
    assert all(b.details["drift"]["brightness"] == 0.8 for b in stored)
    artifacts = asyncio.run(_artifact("plant-b-raw-batches"))
    assert artifacts and "45 parts" in (artifacts[0].description or "")  # type: ignore[attr-defined]


def test_bad_plant_fails_the_flow_without_retrying(prefect_harness: None, andon_home: Path) -> None:
    state = synthesize_plant_flow(plant="plant-q", parts=5, return_state=True)
    assert state.is_failed()
    with pytest.raises(LookupError, match="unknown plant 'plant-q'"):
        state.result()


def test_ingest_real_casting_slice(prefect_harness: None, andon_home: Path, casting_dir: Path) -> None:
    batches = ingest_folder_flow(plant="plant-a", path=str(casting_dir / "test"), limit=40)
    assert sum(b["parts"] for b in batches) == 40
    store = open_store()
    meta = parquet_to_frame(store.get(f"{batches[0]['prefix']}/metadata.parquet"))
    # casting/test holds 453 def_front then 262 ok_front; every 715/40-th file: 26 and 14
    assert (meta.label == "defect").sum() == 26 and (meta.label == "ok").sum() == 14
    row = meta.iloc[0]
    assert sha256_bytes(store.get(row.image_key)) == sha256_bytes((casting_dir / row.source).read_bytes())
    assert row.image_key.endswith(".jpeg") and row.line == "line-1"
