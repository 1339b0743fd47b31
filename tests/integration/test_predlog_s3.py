"""The prediction log on S3 over real HTTP (moto): the same partitions and reads as on disk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from andon.scoring.predlog import PredictionLog
from andon.storage import S3ObjectStore


def test_prediction_log_over_s3(s3_store: S3ObjectStore) -> None:
    log = PredictionLog(s3_store, "plant-b")
    t0 = datetime(2026, 11, 26, 22, 30, tzinfo=UTC)  # crosses midnight: two date partitions
    rows = [
        {
            "part_id": f"p{i}",
            "line": "line-2",
            "scored_at": t0 + timedelta(minutes=i),
            "model_name": "plant-b.surface-defects",
            "model_version": 1,
            "predicted_class": "defect" if i % 10 == 0 else "ok",
            "probabilities": [0.5, 0.5],
        }
        for i in range(120)
    ]
    keys = log.append(rows)
    assert {k.split("/")[2] for k in keys} == {"date=2026-11-26", "date=2026-11-27"}
    assert all(s3_store.exists(k) for k in keys)
    got = log.read(t0, t0 + timedelta(hours=2), where="predicted_class = 'defect'")
    assert len(got) == 12 and set(got.plant) == {"plant-b"}
