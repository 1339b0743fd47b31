"""Scoring a batch with the champion into the prediction log (real torch model, MLflow registry)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_training_lifecycle import CFG, SMALL, _dataset

from andon.errors import DataError
from andon.lifecycle.registry import RegistryError
from andon.scoring.batch import score_batch
from andon.scoring.predlog import PredictionLog
from andon.storage import open_store
from andon.synth.plant import synthesize_plant

pytestmark = pytest.mark.slow


def test_score_batch_logs_every_part_and_bad_images_become_error_rows(
    andon_home: Path, mlflow_tracking_uri: str
) -> None:
    from andon.lifecycle.promotion import promote, rollback
    from andon.training.run import train_plant

    store = open_store()
    (batch,) = synthesize_plant(
        CFG, store, 40, seed=21, start=datetime(2026, 11, 12, 9, tzinfo=UTC), lines=["line-2"], workers=1
    )
    with pytest.raises(RegistryError, match="has no champion"):
        score_batch(store, CFG, batch.prefix)
    v1 = train_plant(store, CFG, [_dataset(store, 1)], recipe=SMALL)
    promote(store, CFG, force=True, reason="test")
    images = [o.key for o in store.list(f"{batch.prefix}/images/")]
    store.put(images[0], b"corrupt bytes")  # a broken upload (this test owns the batch)
    start = datetime.now(UTC) - timedelta(minutes=1)
    summary = score_batch(store, CFG, batch.prefix)
    assert (summary.parts, summary.scored, summary.errors, summary.version) == (40, 39, 1, v1.version)
    rows = PredictionLog(store, "plant-b").read(start, datetime.now(UTC) + timedelta(minutes=1))
    assert len(rows) == 40 and rows.part_id.is_unique
    bad = rows[rows.error.notna()]
    assert len(bad) == 1 and "not an image" in bad.error.iloc[0] and bad.object_key.iloc[0] == images[0]
    good = rows[rows.error.isna()].iloc[0]
    assert good.model_name == "plant-b.surface-defects" and good.model_version == v1.version
    assert abs(sum(good.probabilities) - 1) < 1e-4 and len(good.embedding) == 8 and good.latency_ms > 0
    assert good.sha256 and good.brightness > 0 and good.entropy >= 0 and 0 <= good.margin <= 1

    # a rollback takes effect on the next batch
    v2 = train_plant(store, CFG, [_dataset(store, 2)], recipe=SMALL)
    promote(store, CFG, force=True, reason="test v2")
    assert score_batch(store, CFG, batch.prefix).version == v2.version
    rollback(CFG, "test rollback")
    assert score_batch(store, CFG, batch.prefix).version == v1.version
    with pytest.raises(DataError, match="no complete batch at"):
        score_batch(store, CFG, "plant-b/line-2/raw/2026-11-12/missing")


def test_score_flow_under_the_harness(prefect_harness: None, andon_home: Path, mlflow_tracking_uri: str) -> None:
    from andon.flows.score import score_batch_flow
    from andon.lifecycle.promotion import promote
    from andon.training.run import train_plant

    store = open_store()
    (batch,) = synthesize_plant(
        CFG, store, 20, seed=22, start=datetime(2026, 11, 12, 10, tzinfo=UTC), lines=["line-1"], workers=1
    )
    train_plant(store, CFG, [_dataset(store, 3)], recipe=SMALL)
    promote(store, CFG, force=True, reason="test")
    summary = score_batch_flow(plant="plant-b", batch=batch.prefix)
    assert summary["scored"] == 20 and summary["errors"] == 0 and summary["log_keys"]
