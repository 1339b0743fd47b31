"""The prediction log: partitions, windows, atomic micro-batches, concurrent writers."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from andon.errors import DataError, StorageError
from andon.scoring.predlog import PredictionLog, PredictionWriter
from andon.storage import LocalObjectStore

T0 = datetime(2026, 11, 26, 7, 58, tzinfo=UTC)


def _row(i: int, ts: datetime, cls: str = "ok") -> dict[str, object]:
    return {
        "part_id": f"p{i:05d}",
        "line": "line-1",
        "sku": "IMP-300",
        "scored_at": ts,
        "captured_at": ts,
        "model_name": "plant-a.surface-defects",
        "model_version": 3,
        "model_alias": "champion",
        "predicted_class": cls,
        "probabilities": [0.9, 0.1] if cls == "ok" else [0.2, 0.8],
        "entropy": 0.3,
        "margin": 0.8,
        "latency_ms": 4.2,
        "embedding": [0.1, 0.2, 0.3],
    }


def test_partitions_and_time_windows(tmp_path: Path) -> None:
    log = PredictionLog(LocalObjectStore(tmp_path), "plant-a")
    rows = [_row(i, T0 + timedelta(minutes=i)) for i in range(180)]  # 07:58 .. 10:57
    keys = log.append(rows)
    assert [k.split("/")[3] for k in keys] == ["hour=07", "hour=08", "hour=09", "hour=10"]
    assert all(k.startswith("predictions/plant-a/date=2026-11-26/") for k in keys)
    window = log.read(datetime(2026, 11, 26, 8, 30, tzinfo=UTC), datetime(2026, 11, 26, 9, 30, tzinfo=UTC))
    assert len(window) == 60 and window.part_id.iloc[0] == "p00032"
    assert len(log.files(datetime(2026, 11, 26, 8, 30, tzinfo=UTC), datetime(2026, 11, 26, 9, 30, tzinfo=UTC))) == 2
    defects = log.read(T0, T0 + timedelta(hours=4), where="predicted_class = 'defect'")
    assert defects.empty
    assert list(window.probabilities.iloc[0]) == pytest.approx([0.9, 0.1])
    assert log.read(T0 - timedelta(days=2), T0 - timedelta(days=1)).empty
    table = log.read_arrow(datetime(2026, 11, 26, 8, 30, tzinfo=UTC), datetime(2026, 11, 26, 9, 30, tzinfo=UTC))
    assert table.num_rows == 60 and table.column("part_id")[0].as_py() == "p00032"
    one = log.read(T0, T0 + timedelta(hours=4), where="part_id = ?", params=["p00007"])
    assert list(one.part_id) == ["p00007"]


def test_bad_rows_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    log = PredictionLog(store, "plant-a")
    with pytest.raises(DataError, match="lacks \\['model_version'\\]"):
        log.append([{**_row(1, T0), "model_version": None}])
    with pytest.raises(DataError, match="timezone-aware"):
        log.append([_row(1, T0.replace(tzinfo=None))])
    with pytest.raises(DataError, match="schema"):
        log.append([{**_row(1, T0), "probabilities": "high"}])
    with pytest.raises(DataError, match="empty time window"):
        log.read(T0, T0)
    assert list(store.list("")) == []


def test_concurrent_writers_into_one_hour_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    log = PredictionLog(LocalObjectStore(tmp_path), "plant-a")
    base = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)

    def writer(w: int) -> None:
        for b in range(30):
            log.append([_row(w * 10_000 + b * 10 + i, base + timedelta(seconds=b)) for i in range(10)])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = log.read(base, base + timedelta(hours=1))
    assert len(rows) == 600 and rows.part_id.is_unique


class _FlakyStore(LocalObjectStore):
    """Fails the next ``failures`` writes, as a full disk or a dropped S3 connection would."""

    failures = 0

    def put(self, key: str, data: bytes, content_type: str | None = None):  # type: ignore[no-untyped-def]
        if self.failures:
            self.failures -= 1
            raise StorageError(f"cannot write {key}: disk full")
        return super().put(key, data, content_type)


def test_writer_flushes_micro_batches_and_keeps_rows_when_a_write_fails(tmp_path: Path) -> None:
    store = _FlakyStore(tmp_path)
    log = PredictionLog(store, "plant-a")
    writer = PredictionWriter(log, max_rows=5, max_seconds=3600)
    written = [k for i in range(12) for k in writer.add(_row(i, T0))]
    assert len(written) == 2  # two full micro-batches; two rows still buffered
    store.failures = 1
    with pytest.raises(StorageError, match="disk full"):
        writer.flush()
    assert writer.flush(), "the failed micro-batch was kept and written on the next flush"
    rows = log.read(T0, T0 + timedelta(hours=1))
    assert len(rows) == 12 and rows.part_id.is_unique


def test_buffered_rows_flush_when_the_oldest_has_waited(tmp_path: Path) -> None:
    log = PredictionLog(_FlakyStore(tmp_path), "plant-a")
    writer = PredictionWriter(log, max_rows=1000, max_seconds=0.2)
    assert writer.flush_if_due() == 0  # nothing buffered
    writer.buffer(_row(0, T0))
    writer.buffer(_row(1, T0))
    assert writer.pending == 2 and writer.flush_if_due() == 0  # not due yet
    time.sleep(0.25)
    assert writer.flush_if_due() == 2 and writer.pending == 0
    assert len(log.read(T0, T0 + timedelta(hours=1))) == 2


@pytest.mark.parametrize(
    "poison",
    [
        {"sku": {"$gt": ""}},  # what an untyped JSON field used to put in a row
        {"part_id": 12345},
        {"probabilities": "high"},
        {"model_version": 2**40},
        {"scored_at": T0.replace(tzinfo=None)},
        {"model_version": None},
    ],
)
def test_one_bad_row_never_blocks_the_rows_behind_it(tmp_path: Path, poison: dict[str, object]) -> None:
    log = PredictionLog(LocalObjectStore(tmp_path), "plant-a")
    writer = PredictionWriter(log, max_rows=1000, max_seconds=3600)
    writer.buffer({**_row(0, T0), **poison})
    for i in range(1, 31):
        writer.buffer(_row(i, T0))
    writer.flush()
    writer.buffer(_row(31, T0))
    writer.flush()
    rows = log.read(T0 - timedelta(days=1), datetime.now(UTC) + timedelta(hours=1))
    assert len(rows) == 32 and writer.written == 32 and writer.refused == 1
    bad = rows[rows.predicted_class == "error"]
    assert len(bad) == 1 and bad.error.iloc[0].startswith("log row refused:"), bad.error.tolist()
    assert writer.health() == {
        "ok": True, "pending": 0, "written": 32, "refused": 1, "failed_flushes": 0, "last_error": None
    }  # fmt: skip


def test_a_row_changed_after_it_was_added_is_isolated_at_flush(tmp_path: Path) -> None:
    log = PredictionLog(LocalObjectStore(tmp_path), "plant-a")
    writer = PredictionWriter(log, max_rows=1000, max_seconds=3600)
    writer.buffer(_row(0, T0))
    writer.buffer(_row(1, T0))
    writer._rows[0]["sku"] = ["not", "text"]  # as a caller mutating its dict after handing it over would
    writer.flush()
    rows = log.read(T0, T0 + timedelta(hours=1))
    assert sorted(rows.predicted_class) == ["error", "ok"] and writer.refused == 1


def test_a_failed_write_shows_in_health_and_spilled_rows_are_recovered_once(tmp_path: Path) -> None:
    store = _FlakyStore(tmp_path / "objects")
    log = PredictionLog(store, "plant-a")
    writer = PredictionWriter(log, max_rows=1000, max_seconds=3600)
    for i in range(3):
        writer.buffer(_row(i, T0))
    store.failures = 1
    with pytest.raises(StorageError):
        writer.flush()
    health = writer.health()
    assert not health["ok"] and health["failed_flushes"] == 1 and "disk full" in health["last_error"]
    assert health["pending"] == 3
    spool = tmp_path / "spool"
    path = writer.spill(spool)
    assert path is not None and path.exists() and writer.pending == 0
    assert writer.spill(spool) is None  # nothing left to spill
    again = PredictionWriter(log)
    assert again.recover(spool) == 3 and not list(spool.glob("*"))
    assert again.recover(spool) == 0  # a file is logged once
    rows = log.read(T0, T0 + timedelta(hours=1))
    assert sorted(rows.part_id) == ["p00000", "p00001", "p00002"]


def _micro_batches(log: PredictionLog, hour: datetime, files: int, per_file: int, start: int = 0) -> int:
    """``files`` micro-batches into ``hour`` (as `andon serve` writes them); returns the rows written."""
    for f in range(files):
        first = start + f * per_file
        log.append([_row(first + j, hour + timedelta(seconds=first + j)) for j in range(per_file)])
    return files * per_file


def test_compaction_merges_an_hour_into_one_file_and_every_row_is_read_once(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    log = PredictionLog(store, "plant-a")
    h7, h8 = datetime(2026, 11, 26, 7, tzinfo=UTC), datetime(2026, 11, 26, 8, tzinfo=UTC)
    n = _micro_batches(log, h7, 40, 5) + _micro_batches(log, h8, 3, 5, start=1000)
    before = log.read(h7, h8 + timedelta(hours=1))
    r = log.compact(before=h8 + timedelta(minutes=30), after=h7)  # hour 08 is not complete: left alone
    assert (r.hours, r.files_in, r.rows, r.deleted) == (1, 40, 200, 40)
    assert [k.rsplit("/", 1)[1][:10] for k in log.hour_files(h7)] == ["compacted-"]
    assert len(log.hour_files(h8)) == 3
    after = log.read(h7, h8 + timedelta(hours=1))
    assert len(after) == n and after.equals(before)  # same rows, same order, same values
    assert log.compact(before=h8, after=h7).hours == 0  # twice: nothing to do

    # a late writer into the compacted hour: read at once, merged by the next run
    log.append([_row(5000, h7 + timedelta(minutes=59))])
    assert len(log.read(h7, h8)) == 201
    r = log.compact(before=h8, after=h7)
    assert (r.hours, r.files_in, r.rows, r.deleted) == (1, 2, 201, 2)
    (only,) = log.hour_files(h7)
    assert len(log.covers(only)) == 42  # transitive: the 40 micro-batches, the first compacted file, the late one
    assert len(log.read(h7, h8)) == 201

    # retention removes whole hours past the cut, nothing newer
    assert log.expire(h8) == 1 and log.hour_files(h7) == [] and len(log.read(h8, h8 + timedelta(hours=1))) == 15


def test_a_compaction_killed_before_its_deletes_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    class DiesOnDelete(LocalObjectStore):
        deletes = 0

        def delete(self, key: str) -> None:
            self.deletes += 1
            if self.deletes > 3:
                raise KeyboardInterrupt  # the process dies after 3 of 20 deletes
            super().delete(key)

    store = DiesOnDelete(tmp_path)
    log = PredictionLog(store, "plant-a")
    h7 = datetime(2026, 11, 26, 7, tzinfo=UTC)
    _micro_batches(log, h7, 20, 4)
    with pytest.raises(KeyboardInterrupt):
        log.compact(before=h7 + timedelta(hours=1), after=h7)
    assert len(log.hour_files(h7)) == 18  # the compacted file and 17 covered leftovers
    rows = log.read(h7, h7 + timedelta(hours=1))
    assert len(rows) == 80 and rows.part_id.is_unique
    r = PredictionLog(LocalObjectStore(tmp_path), "plant-a").compact(before=h7 + timedelta(hours=1), after=h7)
    assert (r.hours, r.deleted) == (0, 17) and len(log.hour_files(h7)) == 1
    assert len(log.read(h7, h7 + timedelta(hours=1))) == 80
