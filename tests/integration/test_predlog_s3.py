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
    # compaction on S3: one file for the hour, the same rows, the micro-batches deleted
    before = log.read(t0, t0 + timedelta(hours=2))
    hour = datetime(2026, 11, 26, 22, tzinfo=UTC)
    r = log.compact(before=hour + timedelta(hours=1), after=hour)
    assert (r.hours, r.rows) == (1, 30) and len(log.hour_files(hour)) == 1
    assert log.read(t0, t0 + timedelta(hours=2)).equals(before)


def test_large_objects_move_in_parts(s3_store: S3ObjectStore, tmp_path: object) -> None:
    """Past MULTIPART_BYTES an object is uploaded and downloaded in parts (never whole in memory)."""
    import os
    from pathlib import Path

    from andon.storage import MULTIPART_BYTES

    src = Path(str(tmp_path)) / "big.bin"
    src.write_bytes(os.urandom(MULTIPART_BYTES + 1_000_003))
    s3_store.put_file("models/big.bin", src)
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=s3_store._full("models/big.bin"))
    assert head["ETag"].strip('"').endswith("-2")  # a multipart upload's ETag counts its parts
    out = s3_store.download("models/big.bin", Path(str(tmp_path)) / "back.bin")
    assert out.read_bytes() == src.read_bytes()
    s3_store.delete("models/big.bin")
    assert not s3_store.exists("models/big.bin")
