"""The prediction log: append-only, columnar, partitioned by plant, date and hour.

    predictions/<plant>/date=<YYYY-MM-DD>/hour=<HH>/<first-scored-at>-<uuid>.parquet

Every micro-batch is one new parquet file written atomically (temp file + rename locally, a
single PUT on S3), so a crash loses at most the micro-batch in flight and never leaves half a
file visible; writers never append to or rewrite a file, so two writers into the same hour can
neither lose nor duplicate each other's rows. Reads list only the hour partitions of the window
and filter by time with DuckDB.

**Compaction** (:meth:`PredictionLog.compact`, run hourly by ``andon serve`` and by
``andon log compact``) turns an hour's micro-batch files (``andon serve`` writes one a second:
86,400 a day) into one file, ``compacted-<digest>.parquet``, whose footer lists every file it
replaces (``andon.covers``). Kill it at any instant and nothing is lost or read twice: the
compacted file appears in one atomic write, readers skip every file a compacted file covers, and
the covered files are deleted only after it exists (leftovers of a killed run are skipped, then
deleted by the next). Its name is a digest of what it covers, so two compactors that saw the same
files write the same object; one that saw more covers the other's. **Retention**
(:meth:`PredictionLog.expire`) removes whole hour partitions older than the installation's
``ANDON_PREDICTIONS_RETENTION_DAYS``.

Example:
    >>> from datetime import UTC, datetime
    >>> from andon.scoring.predlog import PredictionLog
    >>> from andon.storage import open_store
    >>> log = PredictionLog(open_store("file:///tmp/doc-predlog"), "plant-a")
    >>> row = {"part_id": "p1", "line": "line-1", "scored_at": datetime(2026, 11, 26, 8, tzinfo=UTC),
    ...        "model_name": "plant-a.surface-defects", "model_version": 3, "predicted_class": "ok",
    ...        "probabilities": [0.97, 0.03]}
    >>> len(log.append([row]))
    1
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from andon.errors import DataError
from andon.storage import ObjectStore, join_key

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

logger = logging.getLogger(__name__)

REQUIRED = ("part_id", "line", "scored_at", "model_name", "model_version", "predicted_class", "probabilities")


def schema() -> pa.Schema:
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    return pa.schema(
        [
            ("part_id", pa.string()),
            ("plant", pa.string()),
            ("line", pa.string()),
            ("sku", pa.string()),
            ("captured_at", ts),
            ("scored_at", ts),
            ("object_key", pa.string()),
            ("sha256", pa.string()),
            ("model_name", pa.string()),
            ("model_version", pa.int32()),
            ("model_alias", pa.string()),
            ("predicted_class", pa.string()),
            ("probabilities", pa.list_(pa.float32())),
            ("defect_score", pa.float32()),  # what the operating point thresholds (1 - p(ok), or an anomaly score)
            ("threshold", pa.float32()),  # the version's operating point: rejected when defect_score >= threshold
            ("entropy", pa.float32()),
            ("margin", pa.float32()),
            ("brightness", pa.float32()),
            ("contrast", pa.float32()),
            ("sharpness", pa.float32()),
            ("embedding", pa.list_(pa.float32())),
            ("inputs", pa.list_(pa.float32())),  # a sensor model's raw readings (drift monitoring)
            ("latency_ms", pa.float32()),
            ("explanation_key", pa.string()),
            ("explanation_method", pa.string()),
            ("explanation_top", pa.string()),  # JSON: top regions (vision) or top features (sensor)
            ("error", pa.string()),
        ]
    )


def _check_required(i: int, row: dict[str, Any]) -> None:
    missing = [f for f in REQUIRED if row.get(f) is None]
    if missing:
        raise DataError(f"prediction row {i} ({row.get('part_id', '?')!r}) lacks {missing}")
    scored = row["scored_at"]
    if not isinstance(scored, datetime) or scored.tzinfo is None:
        raise DataError(f"prediction row {i}: scored_at must be a timezone-aware datetime")


def error_row(row: dict[str, Any], problem: str) -> dict[str, Any]:
    """The error row that stands in for a row that does not fit the log: what can be kept of it
    as text, ``predicted_class`` "error" and the reason, so the decision is still on record."""

    def text(value: Any, default: str | None = None) -> str | None:
        return default if value is None else str(value)[:200]

    scored = row.get("scored_at")
    if not isinstance(scored, datetime) or scored.tzinfo is None:
        scored = datetime.now(UTC)
    version = row.get("model_version")
    return {
        "part_id": text(row.get("part_id"), "unknown"),
        "line": text(row.get("line"), "unknown"),
        "sku": text(row.get("sku")),
        "object_key": text(row.get("object_key")),
        "sha256": text(row.get("sha256")),
        "scored_at": scored,
        "model_name": text(row.get("model_name"), "unknown"),
        "model_version": version if isinstance(version, int) and 0 <= version < 2**31 else 0,
        "model_alias": text(row.get("model_alias")),
        "predicted_class": "error",
        "probabilities": [],
        "error": f"log row refused: {problem}"[:1000],
    }


def _hour_prefix(plant: str, ts: datetime) -> str:
    ts = ts.astimezone(UTC)
    return join_key("predictions", plant, f"date={ts:%Y-%m-%d}", f"hour={ts:%H}")


COMPACTED = "compacted-"  # the name of an hour's compacted file starts so
COVERS = b"andon.covers"  # its footer key: JSON list of the file names it replaces
_covers_cache: dict[tuple[str, str], frozenset[str]] = {}  # compacted files never change


def _name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


@dataclass
class CompactionResult:
    hours: int = 0  # hours compacted
    files_in: int = 0  # files merged
    rows: int = 0  # rows in the compacted files written
    deleted: int = 0  # covered files removed (including a killed run's leftovers)


class PredictionLog:
    """Append and read one plant's predictions in an object store."""

    def __init__(self, store: ObjectStore, plant: str) -> None:
        self.store = store
        self.plant = plant
        self._fetched: dict[str, bytes] = {}  # compacted files read for their footer, until read whole
        self._collect = False

    def append(self, rows: Iterable[dict[str, Any]]) -> list[str]:
        """Write ``rows`` as one file per hour partition; returns the keys written."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = list(rows)
        if not rows:
            return []
        by_hour: dict[str, list[dict[str, Any]]] = {}
        for i, row in enumerate(rows):
            _check_required(i, row)
            by_hour.setdefault(_hour_prefix(self.plant, row["scored_at"]), []).append({**row, "plant": self.plant})
        keys = []
        sch = schema()
        for prefix, group in sorted(by_hour.items()):
            cols = {name: [r.get(name) for r in group] for name in sch.names}
            try:
                table = pa.Table.from_pydict(cols, schema=sch)
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                raise DataError(f"prediction rows do not fit the log's schema: {exc}") from None
            buf = io.BytesIO()
            pq.write_table(table, buf, compression="zstd")
            first = min(r["scored_at"] for r in group).astimezone(UTC)
            key = f"{prefix}/{first:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:12]}.parquet"
            self.store.put(key, buf.getvalue(), "application/vnd.apache.parquet")
            keys.append(key)
        return keys

    def row_problem(self, row: dict[str, Any]) -> str | None:
        """Why ``row`` would make :meth:`append` refuse its micro-batch (None when it fits)."""
        import pyarrow as pa

        try:
            _check_required(0, row)
            sch = schema()
            pa.Table.from_pydict({name: [row.get(name)] for name in sch.names}, schema=sch)
        except DataError as exc:
            return str(exc)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            return f"does not fit the log's schema: {type(exc).__name__}: {exc}"[:500]
        return None

    def files(self, start: datetime, end: datetime) -> list[str]:
        """Keys of the files to read for ``[start, end)``: each hour partition's compacted file and
        the micro-batch files no compacted file covers."""
        if end <= start:
            raise DataError(f"empty time window: {start} .. {end}")
        hours: list[datetime] = []
        hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        while hour < end:
            hours.append(hour)
            hour += timedelta(hours=1)
        if len(hours) <= 2:
            return [k for h in hours for k in self.visible(self.hour_files(h))]
        with ThreadPoolExecutor(max_workers=8) as pool:  # a year is 8,760 listings: overlap them
            return [k for keys in pool.map(lambda h: self.visible(self.hour_files(h)), hours) for k in keys]

    def hour_files(self, hour: datetime) -> list[str]:
        return sorted(
            o.key for o in self.store.list(_hour_prefix(self.plant, hour) + "/") if o.key.endswith(".parquet")
        )

    def covers(self, key: str) -> frozenset[str]:
        """The file names a compacted file replaces (from its footer; cached: it never changes)."""
        import pyarrow.parquet as pq

        cached = _covers_cache.get((self.store.url, key))
        if cached is None:
            data = self.store.get(key)
            if self._collect:  # a query over S3 reads these bytes next: one GET, not two
                self._fetched[key] = data
            meta = pq.read_metadata(io.BytesIO(data)).metadata or {}
            cached = frozenset(json.loads(meta.get(COVERS, b"[]")))
            _covers_cache[(self.store.url, key)] = cached
        return cached

    def visible(self, keys: list[str]) -> list[str]:
        """Of one hour's files, those a reader reads: every row exactly once. A file a compacted
        file covers is skipped; of compacted files, one covered by (or covering no more than)
        another is skipped too."""
        compacted = {k: self.covers(k) for k in keys if _name(k).startswith(COMPACTED)}
        covered = frozenset().union(*compacted.values()) if compacted else frozenset()
        accepted: list[str] = []
        for k in sorted(compacted, key=lambda k: (-len(compacted[k]), k)):
            if _name(k) not in covered and not any(compacted[k] <= compacted[a] for a in accepted):
                accepted.append(k)
        return [k for k in keys if k not in compacted and _name(k) not in covered] + accepted

    def compact_hour(self, hour: datetime) -> CompactionResult:
        """Merge one hour partition into one compacted file, then remove what it covers (see the
        module doc: safe to kill at any instant, safe to run twice)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        out = CompactionResult()
        keys = self.hour_files(hour)
        live = self.visible(keys)
        if len(live) > 1 or (len(live) == 1 and not _name(live[0]).startswith(COMPACTED)):
            with ThreadPoolExecutor(max_workers=8) as pool:
                tables = list(pool.map(lambda k: pq.read_table(io.BytesIO(self.store.get(k))), live))
            table = pa.concat_tables(tables, promote_options="default")  # older files may lack newer columns
            table = table.sort_by([("scored_at", "ascending"), ("part_id", "ascending")])
            names = {_name(k) for k in live}
            for k in live:  # transitive: what a merged compacted file covered stays covered
                if _name(k).startswith(COMPACTED):
                    names |= self.covers(k)
            digest = hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:24]
            key = f"{_hour_prefix(self.plant, hour)}/{COMPACTED}{digest}.parquet"
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), COVERS: json.dumps(sorted(names))})
            buf = io.BytesIO()
            pq.write_table(table, buf, compression="zstd", row_group_size=128 * 1024)
            self.store.put(key, buf.getvalue(), "application/vnd.apache.parquet")  # one atomic write
            out = CompactionResult(1, len(live), table.num_rows)
            keys = self.hour_files(hour)
            live = self.visible(keys)
        # what the visible files cover is read by nobody: remove it (a killed run's leftovers too)
        for k in keys:
            if k not in live:
                self.store.delete(k)
                out.deleted += 1
        return out

    def compact(
        self, before: datetime, after: datetime | None = None, progress: Callable[[int], None] | None = None
    ) -> CompactionResult:
        """Compact every hour partition that ends by ``before`` (and starts at ``after`` or later;
        default: the 48 hours before ``before``). Complete hours only: the service still writes
        into the current one."""
        end = before.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        hour = (after or end - timedelta(hours=48)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        total = CompactionResult()
        while hour < end:
            r = self.compact_hour(hour)
            total.hours, total.files_in = total.hours + r.hours, total.files_in + r.files_in
            total.rows, total.deleted = total.rows + r.rows, total.deleted + r.deleted
            hour += timedelta(hours=1)
            if progress:
                progress(1)
        return total

    def expire(self, before: datetime) -> int:
        """Remove every hour partition that ends by ``before`` (retention); returns files removed."""
        cutoff = before.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        removed = 0
        for o in list(self.store.list(f"predictions/{self.plant}/")):
            parts = o.key.split("/")
            try:
                day = datetime.strptime(parts[2], "date=%Y-%m-%d").replace(tzinfo=UTC)
                hour = day + timedelta(hours=int(parts[3].removeprefix("hour=")))
            except (IndexError, ValueError):
                continue  # not a partition file: left alone
            if hour + timedelta(hours=1) <= cutoff:
                self.store.delete(o.key)
                removed += 1
        return removed

    def read(
        self, start: datetime, end: datetime, where: str = "", columns: str = "*", params: list[Any] | None = None
    ) -> pd.DataFrame:
        """Rows as a pandas frame (see ``query``); list columns become Python lists, which costs
        seconds per million rows: ask for the columns you need, or use ``read_arrow``."""
        return self.query(start, end, where, columns, params).df()

    def read_arrow(
        self, start: datetime, end: datetime, where: str = "", columns: str = "*", params: list[Any] | None = None
    ) -> pa.Table:
        """Rows as an Arrow table: zero-copy list columns, the fast way to read whole rows."""
        return self.query(start, end, where, columns, params).to_arrow_table()

    def query(
        self, start: datetime, end: datetime, where: str = "", columns: str = "*", params: list[Any] | None = None
    ) -> Any:
        """A DuckDB result of the rows scored in ``[start, end)`` (optionally filtered by a DuckDB ``where`` clause with
        ``?`` placeholders bound to ``params``, and cut to ``columns``). On a local store DuckDB
        reads the files in place, in parallel, with the time filter pushed down; on S3 the files
        are fetched and handed over as Arrow."""
        import duckdb

        from andon.storage import LocalObjectStore

        self._collect = not isinstance(self.store, LocalObjectStore)
        try:
            keys = self.files(start, end)
        finally:
            self._collect = False
        con = duckdb.connect()
        if not keys:
            con.register("predictions", schema().empty_table())
            source = "predictions"
        elif isinstance(self.store, LocalObjectStore):
            paths = [str(self.store.root / k) for k in keys]
            source = "read_parquet(?, union_by_name = true)"  # older files may lack newer columns
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            def fetch(k: str) -> pa.Table:
                data = self._fetched.pop(k, None) or self.store.get(k)
                return pq.read_table(io.BytesIO(data))

            try:
                with ThreadPoolExecutor(max_workers=8) as pool:  # requests overlap (a day: 24 compacted files)
                    tables = list(pool.map(fetch, keys))
            finally:
                self._fetched.clear()
            con.register("predictions", pa.concat_tables(tables, promote_options="default"))
            source = "predictions"
        sql = f"select {columns} from {source} where scored_at >= ? and scored_at < ?"
        if where:
            sql += f" and ({where})"
        bound: list[Any] = [start, end, *(params or [])]
        if source.startswith("read_parquet"):
            bound = [paths, *bound]
        return con.sql(sql + " order by scored_at, part_id", params=bound)


class PredictionWriter:
    """Buffers rows and flushes a micro-batch every ``max_rows`` rows or ``max_seconds`` seconds
    (thread-safe; the online service logs through one of these, off the response path).

    One bad row never blocks the rows behind it: a micro-batch the log's schema refuses is
    checked row by row, and a row that does not fit is logged as an error row with the reason
    (counted in ``refused``); rows are not checked one by one when they are added (building a
    table per row cost the service more than its forward pass). A failed write (the store is
    away) keeps the rows for the next flush and shows in :meth:`health`; :meth:`spill` keeps them
    in a local file when the process must stop anyway, and :meth:`recover` logs such files on the
    next start.
    """

    def __init__(self, log: PredictionLog, max_rows: int = 500, max_seconds: float = 2.0) -> None:
        self.log = log
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.written = 0  # rows written to the log
        self.refused = 0  # rows that did not fit and were logged as error rows
        self.failed_flushes = 0  # consecutive failed writes (0: the log is healthy)
        self.last_error: str | None = None
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._since = time.monotonic()

    def _admit(self, row: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``row`` when it fits the log, else its error row (counted)."""
        problem = self.log.row_problem(row)
        if problem is None:
            return dict(row)
        logger.warning(
            "prediction row %r does not fit the log, logged as an error row: %s", row.get("part_id"), problem
        )
        with self._lock:
            self.refused += 1
        return error_row(row, problem)

    def buffer(self, row: dict[str, Any]) -> None:
        """Add a row without flushing (the caller flushes with ``flush_if_due``)."""
        row = dict(row)  # a caller changing its dict later changes nothing here
        with self._lock:
            if not self._rows:
                self._since = time.monotonic()
            self._rows.append(row)

    def add(self, row: dict[str, Any]) -> list[str]:
        row = dict(row)
        with self._lock:
            self._rows.append(row)
            due = len(self._rows) >= self.max_rows or time.monotonic() - self._since >= self.max_seconds
        return self.flush() if due else []

    @property
    def pending(self) -> int:
        return len(self._rows)

    def health(self) -> dict[str, Any]:
        return {
            "ok": self.failed_flushes == 0,
            "pending": self.pending,
            "written": self.written,
            "refused": self.refused,
            "failed_flushes": self.failed_flushes,
            "last_error": self.last_error,
        }

    def flush_if_due(self) -> int:
        """Flush when the oldest buffered row has waited ``max_seconds``; returns rows written."""
        with self._lock:
            due = bool(self._rows) and time.monotonic() - self._since >= self.max_seconds
            count = len(self._rows)
        if not due:
            return 0
        self.flush()
        return count

    def flush(self) -> list[str]:
        with self._lock:
            rows, self._rows = self._rows, []
            self._since = time.monotonic()
        try:
            try:
                keys = self.log.append(rows)
            except DataError:  # a row changed after it was added: isolate it, write the others
                rows = [self._admit(r) for r in rows]
                keys = self.log.append(rows)
        except Exception as exc:
            with self._lock:  # nothing is lost: the rows go back to the front of the buffer
                self._rows[:0] = rows
                self.failed_flushes += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            raise
        with self._lock:
            self.written += len(rows)
            self.failed_flushes, self.last_error = 0, None
        return keys

    def spill(self, folder: Path) -> Path | None:
        """Move the buffered rows into a parquet file in a local ``folder`` (when the log cannot be
        written and the process must stop); returns the file, or None when nothing was buffered."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return None
        sch = schema()
        path = folder / f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:12]}.parquet"
        tmp = path.with_suffix(".tmp")
        try:
            try:
                table = pa.Table.from_pydict({n: [r.get(n) for r in rows] for n in sch.names}, schema=sch)
            except (pa.ArrowException, TypeError, ValueError, OverflowError):  # one bad row: isolate it
                rows = [self._admit(r) for r in rows]
                table = pa.Table.from_pydict({n: [r.get(n) for r in rows] for n in sch.names}, schema=sch)
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, tmp)
            tmp.replace(path)
        except Exception:
            with self._lock:  # still buffered: the caller decides what to say
                self._rows[:0] = rows
            raise
        return path

    def recover(self, folder: Path) -> int:
        """Log the rows of every file :meth:`spill` left in ``folder``, then remove each file
        (a file is removed only once its rows are written); returns the rows logged."""
        import pyarrow.parquet as pq

        count = 0
        for path in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
            rows = pq.read_table(path).to_pylist()
            for row in rows:
                row.pop("plant", None)
            self.log.append(rows)
            path.unlink()
            with self._lock:
                self.written += len(rows)
            count += len(rows)
        return count
