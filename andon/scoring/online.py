"""Online scoring: ``andon serve --plant P`` answers one part at a time, as an inspection station
asks, and logs every decision exactly like the batch path.

    POST /v1/score              body: the image (``Content-Type: image/png``, ``image/jpeg``, ``image/bmp``);
                                query: ``part_id`` (default: a new id), ``line``, ``sku``
    POST /v1/score              body: JSON ``{"object_key": ..., "part_id": ..., "line": ..., "sku": ...}``
    GET  /healthz               champion, queue depth, rows logged, the log's health, refusals by
                                reason; 503 while there is no champion or the log cannot be written
    GET  /metrics               Prometheus (prometheus-client): requests, refusals by reason,
                                decisions by class, latency and batch-size histograms, in flight

The response (class, probabilities, model version, part id) is computed on the request thread,
the forward pass shared with concurrent requests (andon/scoring/microbatch.py: up to
``max_batch`` images, waiting at most ``batch_wait_ms`` for requests already on their way), on
the fastest runtime verified for the version (andon/models/runtimes.py). Past ``max_in_flight``
requests at once the service answers 429 with ``Retry-After`` at once instead of queueing
(backpressure: a client backs off, nothing grows without bound). Everything else happens off
the response path, in the background: ``store_threads`` store uploaded images at once (on S3
each is a round trip), the saliency map of a flagged part is made one at a time, and then the
part's prediction-log row is buffered (micro-batches flushed every ``flush_seconds``; a crash
loses at most those in flight). The champion alias is re-resolved every ``reload_seconds`` by a
watcher thread, so a promotion or rollback is served within seconds without a restart; a third
thread compacts the prediction log's complete hours every ``compact_seconds``
(andon/scoring/predlog.py). (Import this module only to serve: it imports FastAPI.)

The door is hostile-input safe: every refusal is a 4xx (503 when the service itself cannot serve)
with a reason, counted in ``/healthz`` under ``rejected_by_reason``, never a 500.

- Requests over ``max_bytes`` are refused with 413 before the body is read in full; a JSON body
  must be an object with exactly the fields above, each a string (``part_id`` and ``sku`` as
  ``[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}``: they become object keys), at most 16 KB.
- An image passes the gate's per-image rules (``camera_image_rules``: a camera format, the
  camera's size and colour mode); its header is checked before any pixel is decoded, and at most
  ``max_decodes`` images are decoded at once. A refused image is still logged as an error row.
- An ``object_key`` must lie inside the plant's prefix; a foreign key gets the same 404 as a
  missing one, so the answer never tells which keys exist elsewhere.
- Stored evidence is write-once: a second, different image for a part id that already has one is
  stored apart (``<part-id>.<sha256[:16]>.<ext>``), logged, and counted (``evidence_conflicts``);
  the first is never overwritten, so a logged sha256 always matches its object.
- A prediction row that does not fit the log's schema becomes an error row and never blocks the
  rows behind it; when the store is away the rows stay buffered (``/healthz`` says "log-failing"),
  and at shutdown they go to a local spool (``$ANDON_HOME/spool/predictions/<plant>/``) that the
  next start logs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response  # at module level: FastAPI resolves endpoint annotations here

from andon.config import PlantConfig
from andon.errors import AndonError, ConfigError, InvalidKeyError, ObjectNotFoundError, StorageError
from andon.httpkit import Rejected, read_capped, run_in_thread
from andon.lifecycle.registry import CHAMPION
from andon.models.runtimes import usable_cores
from andon.scoring.batch import Champion, error_fields, explain_parts, inspect_image, prediction_rows, wants_explanation
from andon.scoring.microbatch import MicroBatcher, Ticket
from andon.scoring.predlog import PredictionLog, PredictionWriter
from andon.storage import ObjectStore, join_key, validate_key

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

MAX_BYTES = 4 * 1024 * 1024
MAX_JSON_BYTES = 16 * 1024  # a JSON request names an object; it never needs more
MAX_DECODES = 2  # images decoded at once (the cores are shared anyway); more wait their turn
MAX_IN_FLIGHT = 64  # requests admitted at once; past it: 429 + Retry-After
MAX_BATCH = 64  # images per shared forward pass
BATCH_WAIT_MS = 4.0  # how long a batch waits for admitted requests still decoding
MAX_QUEUED_BYTES = 256 * 1024 * 1024  # images waiting to be stored or explained; past it: 503
DECODE_WAIT_S = 30.0  # how long a request waits for a decode slot before a 503
STORE_THREADS = 8  # evidence stored at once (on S3 each is a round trip: one thread stored 154-171 parts/s vs moto)
IMAGE_TYPES = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/bmp": "bmp",
    "application/octet-stream": "bin",
}
JSON_FIELDS = ("object_key", "part_id", "line", "sku")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}")
MAX_SEGMENT_BYTES = 255  # the longest file name a local store can hold
LOOPBACK = ("127.0.0.1", "::1", "localhost")  # where a service of the embedded stack may run without a token


@dataclass
class _Job:
    row: dict[str, Any]
    image: np.ndarray | None = None
    champion: Champion | None = None  # the version that decided explains the decision
    upload: tuple[str, bytes, str] | None = None  # (key, data, content type)
    owns_claim: bool = False  # this request claimed ``upload``'s key (a replay of the part did not)


def _apart(key: str, sha: str) -> str:
    """Where a second, different image for a part is kept: ``<part-id>.<sha256[:16]>.<ext>``."""
    stem, ext = key.rsplit(".", 1)
    return f"{stem}.{sha[:16]}.{ext}"


def _job_bytes(job: _Job) -> int:
    return (len(job.upload[1]) if job.upload else 0) + (job.image.nbytes if job.image is not None else 0)


class ServiceMetrics:
    """The service's Prometheus metrics, in a registry of its own (two services in one process
    never share counters). One service serves one plant: the scrape job names it."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        # one of several serving processes (``andon serve --processes N``): every process's values
        # go to files in PROMETHEUS_MULTIPROC_DIR and a scrape of any process sums them
        self.shared = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = r = CollectorRegistry()
        self.requests = Counter("andon_score_requests", "score requests received", registry=r)
        self.rejected = Counter("andon_score_rejected", "requests refused, by reason", ["reason"], registry=r)
        self.decisions = Counter("andon_score_decisions", "parts decided, by class", ["predicted_class"], registry=r)
        self.latency = Histogram(
            "andon_score_latency_seconds", "request to response of a scored part", registry=r,
            buckets=(0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )  # fmt: skip
        self.batch_size = Histogram(
            "andon_score_batch_size", "images per shared forward pass", registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "andon_score_batch_seconds", "one shared forward pass", registry=r,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
        )  # fmt: skip
        live: Any = {"multiprocess_mode": "livesum"}  # the live processes' sum
        self.in_flight = Gauge("andon_score_in_flight", "requests being scored now", registry=r, **live)
        self.queue = Gauge("andon_score_background_jobs", "rows and evidence waiting", registry=r, **live)
        self.logged = Gauge("andon_predictions_logged", "prediction rows written", registry=r, **live)

    def batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self, service: ScoringService) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        registry = self.registry
        if self.shared:
            from prometheus_client import CollectorRegistry, multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST


@dataclass
class ServiceStats:
    requests: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # by reason
    explained: int = 0
    evidence_conflicts: int = 0  # a second, different image for a part id (kept apart)
    background_errors: list[str] = field(default_factory=list)


def check_id(what: str, value: Any) -> str | None:
    """``value`` if it is a usable part id or SKU (a string that can become part of a key), None
    when absent (or empty); raises ``ValueError`` naming ``what`` otherwise."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    if not _ID.fullmatch(value):
        shown = value[:40].encode("unicode_escape").decode()
        raise ValueError(f"{what} {shown!r} must match {_ID.pattern} (letters, digits, . _ : + -; at most 128)")
    return value


def parse_json_request(body: bytes) -> dict[str, str | None]:
    """The fields of a JSON score request; raises ``ValueError`` with what is wrong (deep nesting,
    another type, an unknown field)."""
    try:
        req = json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(req, dict):
        raise ValueError(f"the JSON body must be an object, got {type(req).__name__}")
    unknown = sorted(set(req) - set(JSON_FIELDS))
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise ValueError(f"unknown field(s) {shown}; known: {', '.join(JSON_FIELDS)}")
    key = req.get("object_key")
    if not isinstance(key, str):
        raise ValueError(f"object_key must be a string, got {type(key).__name__}")
    line = req.get("line")
    if line is not None and not isinstance(line, str):
        raise ValueError(f"line must be a string, got {type(line).__name__}")
    return {
        "object_key": key,
        "part_id": check_id("part_id", req.get("part_id")),
        "line": line,
        "sku": check_id("sku", req.get("sku")),
    }


class ScoringService:
    """The plant's champion, a watcher that keeps it current, and the background log worker."""

    def __init__(
        self,
        store: ObjectStore,
        cfg: PlantConfig,
        *,
        reload_seconds: float = 2.0,
        flush_seconds: float = 1.0,
        max_bytes: int = MAX_BYTES,
        explain: bool = True,
        max_decodes: int = MAX_DECODES,
        decode_wait_s: float = DECODE_WAIT_S,
        spool_dir: Path | None = None,
        token: str | None = None,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_batch: int = MAX_BATCH,
        batch_wait_ms: float = BATCH_WAIT_MS,
        compact_seconds: float = 3600.0,
        process: tuple[int, int] = (0, 1),
        store_threads: int = STORE_THREADS,
        drain_seconds: float = 30.0,
    ) -> None:
        self.store = store
        self.process = process  # (index, count) of the serving processes; only the first recovers the spool
        self.token = token  # when set, /v1/score needs `Authorization: Bearer <token>` (docs/security.md)
        self.cfg = cfg
        self.reload_seconds = reload_seconds
        self.max_bytes = max_bytes
        self.explain = explain
        self.writer = PredictionWriter(PredictionLog(store, cfg.id), max_rows=1000, max_seconds=flush_seconds)
        self.spool_dir = spool_dir
        self.stats = ServiceStats()
        self.champion: Champion | None = None
        self.champion_error = "not loaded yet"
        self.metrics = ServiceMetrics()
        # one batch per core at once, each on a one-thread runtime (andon/scoring/microbatch.py)
        self.batcher = MicroBatcher(
            max(1, max_batch), max(0.0, batch_wait_ms) / 1000, self.metrics.batch, parallel=usable_cores()
        )
        self.max_in_flight = max(1, max_in_flight)
        self.compact_seconds = compact_seconds  # 0: never (another process compacts)
        self._in_flight = 0  # under _stats_lock
        self._decodes = threading.BoundedSemaphore(max(1, max_decodes))
        self.decode_wait_s = decode_wait_s
        self._stats_lock = threading.Lock()
        self._evidence_lock = threading.Lock()
        self._claimed: dict[str, str] = {}  # evidence key -> sha256, queued but not yet stored
        self._asking: dict[str, threading.Event] = {}  # evidence keys whose store check is under way
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=10_000)
        self.store_threads = max(1, store_threads)
        self.drain_seconds = drain_seconds  # at stop, how long the background may take to store what is queued
        self._storing = threading.BoundedSemaphore(self.store_threads)  # a job per store thread, the rest queued
        self._store_pool: ThreadPoolExecutor | None = None
        self._busy_jobs = 0  # jobs in the store threads (under _stats_lock)
        self._explaining = threading.Lock()  # one saliency map at a time (torch spreads it over the cores)
        self.max_queued_bytes = max_queued_bytes
        self._queued_bytes = 0  # bytes of images held by queued jobs (under _stats_lock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def authorize(self, header: str | None) -> None:
        """Refuse (401, counted) a request without the service's bearer token, when it has one.
        Constant-time comparison; the token is never logged."""
        if self.token is None:
            return
        scheme, _, given = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise self.reject("unauthenticated", 401, "send `Authorization: Bearer <ANDON_SERVICE_TOKEN>`")

    # ---------------------------------------------------------------- lifecycle
    def _spool(self) -> Path:
        if self.spool_dir is None:
            from andon.settings import get_settings

            self.spool_dir = get_settings().home / "spool" / "predictions" / self.cfg.id
        return self.spool_dir

    def start(self) -> None:
        self._stop.clear()
        self._threads = []
        try:  # rows a previous run could not log before it stopped (once, not by every process)
            if self.process[0] == 0 and (recovered := self.writer.recover(self._spool())):
                logger.warning("%s: logged %d prediction rows spooled by a previous run", self.cfg.id, recovered)
        except Exception as exc:  # the store is away: the files stay for the next start
            self._background_error(f"spooled prediction rows not logged yet: {exc}")
        self.refresh_champion()
        self._store_pool = ThreadPoolExecutor(self.store_threads, thread_name_prefix="andon-store")
        loops = [(self._watch, "andon-champion-watch"), (self._work, "andon-log-worker")]
        if self.compact_seconds > 0:
            loops.append((self._compact, "andon-log-compact"))
        for target, name in loops:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Drain the queue, flush the log, stop the threads (nothing accepted is lost: rows the
        store cannot take now go to the local spool, logged at the next start)."""
        self._stop.set()
        self._jobs.put(None)
        for t in self._threads:
            t.join(timeout=self.drain_seconds)
        while True:  # the store too slow to drain in time: the rest are logged, their images not stored
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._keep_row(job, "the service stopped before its image was stored")
        if self._store_pool is not None:  # every job handed over is stored and its row buffered
            self._store_pool.shutdown(wait=True)
        for t in self._threads:  # a worker that held a job when the pool closed logs its row too
            t.join(timeout=self.drain_seconds)
        try:
            self.writer.flush()
        except Exception as exc:
            try:
                path = self.writer.spill(self._spool())
            except OSError as spill_exc:  # the local disk too: say loudly how many rows are lost
                logger.critical(
                    "%s: %d prediction rows lost at shutdown: %s; %s", self.cfg.id, self.writer.pending, exc, spill_exc
                )
                return
            logger.error(
                "%s: the prediction log cannot be written at shutdown (%s); %s",
                self.cfg.id,
                exc,
                f"its rows are spooled in {path} and logged at the next start" if path else "nothing was buffered",
            )

    def refresh_champion(self) -> None:
        from andon.scoring.batch import resolve_champion

        try:
            name, version = resolve_champion(self.cfg)
            current = self.champion
            if current is None or (current.name, current.version) != (name, version):
                self.champion = champion = Champion.load(self.cfg, threads=1)
                # torch (no verified runtime) spreads each pass over every core already
                self.batcher.parallel = usable_cores() if champion.runner is not None else 1
            self.champion_error = ""
        except AndonError as exc:  # no champion yet, or the registry is briefly away: keep serving
            self.champion_error = str(exc)
            if "has no champion" in str(exc):
                self.champion = None

    def _watch(self) -> None:
        while not self._stop.wait(self.reload_seconds):
            self.refresh_champion()

    def _compact(self) -> None:
        """Merge the log's complete hours (one file a second -> one an hour), first 60 s after
        the start, then every ``compact_seconds``; kill-safe (see PredictionLog.compact)."""
        wait = min(60.0, self.compact_seconds)
        while not self._stop.wait(wait):
            wait = self.compact_seconds
            try:
                r = self.writer.log.compact(datetime.now(UTC))
                if r.hours:
                    logger.info(
                        "%s: compacted %d hour(s) of the prediction log (%d files)", self.cfg.id, r.hours, r.files_in
                    )
            except Exception as exc:  # the store is away: the next round tries again
                self._background_error(f"prediction log compaction: {exc}")

    def _work(self) -> None:
        """Hand each queued job to a store thread (at most ``store_threads`` at once; the rest wait
        in the bounded queue) and flush the log's micro-batches when due."""
        while True:
            try:
                job = self._jobs.get(timeout=0.2)
            except queue.Empty:
                job = None
                if self._stop.is_set():
                    return
            if job is not None:
                while not self._storing.acquire(timeout=0.2):
                    self._flush_due()
                with self._stats_lock:
                    self._busy_jobs += 1
                pool = self._store_pool
                if pool is None:  # not started (a test drives the worker): in this thread
                    self._handle_and_release(job)
                    continue
                try:
                    pool.submit(self._handle_and_release, job)
                except RuntimeError:  # stop() closed the pool: the row is kept, the image not stored
                    with self._stats_lock:
                        self._busy_jobs -= 1
                    self._storing.release()
                    self._keep_row(job, "the service stopped before its image was stored")
            elif self._stop.is_set() and self._jobs.empty():
                return
            self._flush_due()

    def _flush_due(self) -> None:
        try:
            self.writer.flush_if_due()
        except Exception as exc:  # the rows stay buffered; the next flush retries them
            self._background_error(f"prediction log flush: {exc}")
        # here, not at a scrape: with several processes a scrape reaches one, and sums them all
        self.metrics.queue.set(self._backlog())
        self.metrics.logged.set(self.writer.written)

    def _backlog(self) -> int:
        """Jobs queued or being stored."""
        return self._jobs.qsize() + self._busy_jobs

    def _keep_row(self, job: _Job, why: str) -> None:
        """Log ``job``'s decision without storing its image (its key is cleared: a row never names
        an image that is not there), the reason among the background errors."""
        row = dict(job.row)
        if job.upload is not None:
            row["object_key"] = None
            self._background_error(f"{row['part_id']}: {why} ({job.upload[0]})")
        with self._stats_lock:
            self._queued_bytes -= _job_bytes(job)
        self.writer.buffer(row)

    def _handle_and_release(self, job: _Job) -> None:
        try:
            self._handle(job)
        finally:
            with self._stats_lock:
                self._busy_jobs -= 1
            self._storing.release()

    def _handle(self, job: _Job) -> None:
        """Store the part's evidence, explain it when asked, then buffer its row (a row never
        names an image that is not stored yet)."""
        row = job.row
        stored = job.upload is None
        try:
            if job.upload is not None:
                key, data, ctype = job.upload
                try:  # write-once: claimed at request time, stored here only if nothing is there
                    if not self.store.put_new(key, data, ctype) and self.store.get(key) != data:
                        # another process stored a different image for this part a moment ago:
                        # this one is kept apart, and the row names where it is
                        apart = _apart(key, row["sha256"])
                        self.store.put_new(apart, data, ctype)  # False: the same content is there
                        row["object_key"] = apart
                        with self._stats_lock:
                            self.stats.evidence_conflicts += 1
                        logger.warning("%s: %s was just taken by another process: %s", self.cfg.id, key, apart)
                    stored = True
                finally:
                    if job.owns_claim:
                        with self._evidence_lock:
                            self._claimed.pop(key, None)
            if job.image is not None and job.champion is not None:
                with self._explaining:
                    explain_parts(self.store, self.cfg, job.champion, job.image[None], [row])
                    self.stats.explained += 1
        except Exception as exc:  # the decision is still logged, with what went wrong
            self._background_error(f"{row['part_id']}: {exc}")
            if not stored:  # the store failed: the row names no image that is not there
                row["object_key"] = None
        finally:
            with self._stats_lock:
                self._queued_bytes -= _job_bytes(job)
        self.writer.buffer(row)

    def _background_error(self, message: str) -> None:
        with self._stats_lock:
            self.stats.background_errors = [*self.stats.background_errors[-19:], message]

    def reject(self, reason: str, status: int, detail: str, retry_after_s: int | None = None) -> Rejected:
        """A counted refusal (``/healthz``: ``rejected_by_reason``; ``/metrics``)."""
        with self._stats_lock:
            self.stats.rejected[reason] += 1
        self.metrics.rejected.labels(reason).inc()
        return Rejected(status, detail, retry_after_s)

    def busy(self, detail: str) -> Rejected:
        """Backpressure: a counted 429 with Retry-After, before anything queues without bound."""
        return self.reject("busy", 429, detail, retry_after_s=1)

    # ---------------------------------------------------------------- evidence
    def _evidence_key(self, line: str, now: datetime, part_id: str, ext: str, sha: str) -> tuple[str, bool]:
        """(the key of this image's evidence, whether it still has to be stored). The first image
        of a part id gets ``<part-id>.<ext>``; a different one later is kept apart under its
        content's hash, never over the first."""
        folder = join_key(self.cfg.object_prefix, line, "online", f"{now:%Y-%m-%d}")
        key = join_key(folder, f"{part_id}.{ext}")
        held = self._claim(key, sha)
        if held is None or held == sha:
            return key, held is None
        apart = _apart(key, sha)
        with self._stats_lock:
            self.stats.evidence_conflicts += 1
        new = self._claim(apart, sha) is None
        logger.warning(
            "%s: part %s already has another image at %s; this one is kept apart at %s",
            self.cfg.id,
            part_id,
            key,
            apart,
        )
        return apart, new

    def _claim(self, key: str, sha: str) -> str | None:
        """None when this request claimed ``key`` (nothing is there or queued for it: the caller
        stores its image there), else the sha256 of what ``key`` holds or is about to hold. The
        store is asked outside the service-wide lock (on S3 a round trip, which must not hold up
        every other part); requests for the same key wait for the one asking."""
        while True:
            with self._evidence_lock:
                held = self._claimed.get(key)
                if held is not None:
                    return held
                asking = self._asking.get(key)
                if asking is None:
                    asking = self._asking[key] = threading.Event()
                    break
            asking.wait()
        stored: str | None = None
        claimed = False
        try:
            if self.store.exists(key):
                stored = hashlib.sha256(self.store.get(key)).hexdigest()
            claimed = stored is None
        finally:  # a store error: the waiting requests ask again themselves
            with self._evidence_lock:
                if claimed:
                    self._claimed[key] = sha
                del self._asking[key]
            asking.set()
        return stored

    # ---------------------------------------------------------------- scoring
    def score(
        self,
        data: bytes,
        *,
        part_id: str | None = None,
        line: str | None = None,
        sku: str | None = None,
        object_key: str | None = None,
        content_type: str = "image/png",
        admitted: bool = False,
    ) -> dict[str, Any]:
        """Score one part; returns the response body, or raises ``Rejected`` (the part is logged as
        an error row when the image itself is the problem). ``admitted``: the caller holds a place
        already (:meth:`admission`)."""
        with nullcontext() if admitted else self.admission():
            ticket = self.batcher.announce()  # a forward pass about to run waits for this request
            try:
                return self._score(ticket, time.perf_counter(), data, part_id, line, sku, object_key, content_type)
            finally:
                self.batcher.withdraw(ticket)  # refused on the way: nobody waits for it

    @contextmanager
    def admission(self) -> Iterator[None]:
        """Count a request and hold one of the ``max_in_flight`` places while it runs, or refuse it
        at once: a counted 429 with Retry-After (backpressure). The app takes the place on the
        event loop once the body is in (a slow upload holds a connection, not a place), so a
        flood is refused there, not queued for threads."""
        self.metrics.requests.inc()
        with self._stats_lock:
            self.stats.requests += 1
            admitted = self._in_flight < self.max_in_flight
            if admitted:
                self._in_flight += 1
                self.metrics.in_flight.set(self._in_flight)
        if not admitted:
            raise self.busy(f"{self.cfg.id} has {self.max_in_flight} requests in flight; retry after a second")
        try:
            yield
        finally:
            with self._stats_lock:
                self._in_flight -= 1
                self.metrics.in_flight.set(self._in_flight)

    def _score(
        self,
        ticket: Ticket,
        t0: float,
        data: bytes,
        part_id: str | None,
        line: str | None,
        sku: str | None,
        object_key: str | None,
        content_type: str,
    ) -> dict[str, Any]:
        try:
            part_id, sku = check_id("part_id", part_id), check_id("sku", sku)
        except ValueError as exc:
            raise self.reject("bad_request", 422, str(exc)) from None
        line = line or self.cfg.line_ids[0]
        if line not in self.cfg.line_ids:
            shown = line[:40].encode("unicode_escape").decode()
            raise self.reject(
                "unknown_line", 422, f"unknown line {shown!r} of {self.cfg.id}; known: {', '.join(self.cfg.line_ids)}"
            )
        champion = self.champion
        if champion is None:
            raise self.reject("no_champion", 503, f"no model to score with: {self.champion_error}")
        part_id = part_id or f"{self.cfg.id}-{uuid.uuid4().hex[:16]}"
        now = datetime.now(UTC)
        row: dict[str, Any] = {
            "part_id": part_id,
            "line": line,
            "sku": sku,
            "captured_at": now,
            "object_key": object_key,
            "model_name": champion.name,
            "model_version": champion.version,
            "model_alias": CHAMPION,
        }
        if not self._decodes.acquire(timeout=self.decode_wait_s):
            raise self.busy(f"{self.cfg.id} is decoding other images; retry shortly")
        try:  # the header before any pixel
            fields, problem, image = inspect_image(object_key or f"upload:{part_id}", data, self.cfg, line, champion)
        finally:
            self._decodes.release()
        row.update(fields)
        if problem or image is None:
            # a refused upload is not stored: its sha256 and the reason are logged (a flood of
            # bombs must not fill the queue, the memory or the store with their bodies)
            self._enqueue(_Job({**row, **error_fields(str(problem)), "scored_at": datetime.now(UTC)}))
            raise self.reject("bad_image", 422, f"{part_id}: {problem}")
        upload = None
        owns_claim = False
        if object_key is None:
            ext = IMAGE_TYPES.get(content_type, "bin")
            object_key, owns_claim = self._evidence_key(line, now, part_id, ext, fields["sha256"])
            row["object_key"] = object_key
            # a replay of a part queued here is stored too: the conditional write keeps the first,
            # and finds another process's different image, which sends this one apart
            upload = (object_key, data, content_type)
        queued = False
        try:
            try:
                probs, emb = self.batcher.predict(ticket, champion, image)
            except Exception as exc:  # the runtime failed: the part is logged with the reason, not lost
                problem = f"the model could not score the part: {type(exc).__name__}: {exc}"[:500]
                logger.error("%s: %s: %s", self.cfg.id, part_id, problem)
                failed = {**row, **error_fields(problem), "scored_at": datetime.now(UTC)}
                self._enqueue(_Job(failed, upload=upload, owns_claim=owns_claim))
                queued = True
                raise self.reject(
                    "model_failed",
                    503,
                    f"{part_id}: the model failed on this part (logged as an error row); retry",
                    retry_after_s=1,
                ) from None
            (pred,) = prediction_rows(champion.classes, probs[None], emb[None], champion.threshold)
            latency_ms = (time.perf_counter() - t0) * 1000
            self.metrics.latency.observe(latency_ms / 1000)
            self.metrics.decisions.labels(pred["predicted_class"]).inc()
            row.update(pred, scored_at=datetime.now(UTC), latency_ms=latency_ms)
            explain = self.explain and wants_explanation(self.cfg, part_id, pred["predicted_class"])
            self._enqueue(
                _Job(row, image=image if explain else None, champion=champion, upload=upload, owns_claim=owns_claim)
            )
            queued = True
        finally:
            if upload is not None and owns_claim and not queued:  # claimed, never queued: the next request stores it
                with self._evidence_lock:
                    self._claimed.pop(upload[0], None)
        return {
            "part_id": part_id,
            "plant": self.cfg.id,
            "line": line,
            "predicted_class": pred["predicted_class"],
            "probabilities": dict(zip(champion.classes, pred["probabilities"], strict=True)),
            "defect_score": round(pred["defect_score"], 6),
            "threshold": champion.threshold,
            "uncertain": pred["margin"] < self.cfg.recipe.thresholds.uncertain_margin,
            "model_name": champion.name,
            "model_version": champion.version,
            "model_alias": CHAMPION,
            "object_key": object_key,
            "explanation": "queued" if explain else None,
            "latency_ms": round(latency_ms, 3),
        }

    def score_key(self, object_key: str, **kw: Any) -> dict[str, Any]:
        """Score the object at ``object_key``, which must lie inside this plant's prefix: a key
        elsewhere gets the same 404 as a missing one (nothing is read outside the fence)."""
        try:
            validate_key(object_key)
            if any(len(p.encode()) > MAX_SEGMENT_BYTES for p in object_key.split("/")):
                raise InvalidKeyError(f"object key has a segment over {MAX_SEGMENT_BYTES} bytes")
        except InvalidKeyError as exc:
            raise self.reject("bad_key", 422, str(exc)) from None
        missing = f"no object {object_key!r} for plant {self.cfg.id}"
        if not object_key.startswith(self.cfg.object_prefix + "/"):
            raise self.reject("not_found", 404, missing)
        try:
            data = self.store.get(object_key)
        except ObjectNotFoundError:
            raise self.reject("not_found", 404, missing) from None
        except StorageError as exc:
            logger.warning("%s: the store failed reading %r: %s", self.cfg.id, object_key, exc)
            raise self.reject("store_unavailable", 503, "the object store is unavailable; retry shortly") from None
        return self.score(data, object_key=object_key, **kw)

    def _enqueue(self, job: _Job) -> None:
        """Queue ``job`` for the background worker, within a byte budget (images to store and to
        explain): past it the request gets a counted 503, so a flood cannot grow the memory."""
        size = _job_bytes(job)
        with self._stats_lock:
            held = self._queued_bytes
            full = held + size > self.max_queued_bytes and held > 0
            if not full:
                self._queued_bytes += size
        if full:
            raise self.busy(f"the background queue holds {held / 1e6:.1f} MB of images; retry shortly")
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            with self._stats_lock:
                self._queued_bytes -= size
            raise self.busy("the prediction log is backed up; retry shortly") from None

    def health(self) -> dict[str, Any]:
        c = self.champion
        log = self.writer.health()
        status = "no-champion" if c is None else "log-failing" if not log["ok"] else "ok"
        with self._stats_lock:
            rejected = dict(sorted(self.stats.rejected.items()))
        return {
            "status": status,
            "plant": self.cfg.id,
            "model_name": c.name if c else None,
            "model_version": c.version if c else None,
            "runtime": c.runtime if c else None,
            "champion_error": self.champion_error or None,
            "in_flight": self._in_flight,
            "batches": self.batcher.batches,
            "mean_batch": round(self.batcher.images / self.batcher.batches, 2) if self.batcher.batches else 0,
            "queue": self._backlog(),
            "queued_mb": round(self._queued_bytes / 1e6, 1),
            "requests": self.stats.requests,
            "rejected": sum(rejected.values()),
            "rejected_by_reason": rejected,
            "logged": log["written"],
            "log": log,
            "explained": self.stats.explained,
            "evidence_conflicts": self.stats.evidence_conflicts,
            "background_errors": self.stats.background_errors[-5:],
            "process": f"{self.process[0] + 1}/{self.process[1]}",  # /healthz is this process's view
        }


def create_app(service: ScoringService) -> FastAPI:
    """The FastAPI app around a started ``service`` (the caller starts and stops it)."""
    import asyncio
    from contextlib import asynccontextmanager
    from functools import partial

    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    # a thread for every admitted request (admission is taken on the event loop, so nothing else
    # waits for one): before, anyio's pool of 40 held requests 41-64 waiting for a thread, where
    # past ``max_in_flight`` they get a 429
    pool = ThreadPoolExecutor(service.max_in_flight, thread_name_prefix="andon-score")

    async def in_pool(fn: Any, *args: Any, **kw: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, partial(fn, *args, **kw))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        yield
        await asyncio.to_thread(pool.shutdown)  # requests still scoring finish and queue their rows
        await asyncio.to_thread(service.stop)

    app = FastAPI(title=f"Andon scoring: {service.cfg.id}", version="1", lifespan=lifespan)

    @app.exception_handler(Rejected)
    async def _rejected(_request: Request, exc: Rejected) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        rejected = service.reject("bad_request", 422, "; ".join(str(e.get("msg", e)) for e in exc.errors())[:500])
        return JSONResponse({"detail": rejected.detail}, status_code=rejected.status)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        body = service.health()
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        body, ctype = service.metrics.render(service)
        return Response(body, media_type=ctype)

    @app.post("/v1/score")
    async def score(
        request: Request, part_id: str | None = None, line: str | None = None, sku: str | None = None
    ) -> JSONResponse:
        service.authorize(request.headers.get("authorization"))
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:  # a slow body holds a connection (bounded by the server's limits), not a scoring place
            body = await read_capped(request, service.max_bytes)
        except Rejected as exc:
            raise service.reject(
                "too_large" if exc.status == 413 else "incomplete_body", exc.status, exc.detail
            ) from None
        if not body:
            raise service.reject("empty", 422, "empty request: send the image as the body, or JSON with an object_key")
        if ctype == "application/json":
            if len(body) > MAX_JSON_BYTES:
                raise service.reject("too_large", 413, f"a JSON request is at most {MAX_JSON_BYTES} bytes")
            try:
                req = parse_json_request(body)
            except ValueError as exc:
                shape = '{"object_key": "...", "part_id"?, "line"?, "sku"?}'
                raise service.reject("bad_request", 422, f"JSON body must be {shape}: {exc}") from None
            with service.admission():  # past the limit: a 429 at once, never queued for a thread
                result = await in_pool(
                    service.score_key,
                    str(req["object_key"]),
                    part_id=req["part_id"] or part_id,
                    line=req["line"] or line,
                    sku=req["sku"] or sku,
                    admitted=True,
                )
        elif ctype in IMAGE_TYPES:
            with service.admission():
                result = await in_pool(
                    service.score, body, part_id=part_id, line=line, sku=sku, content_type=ctype, admitted=True
                )
        else:
            shown = ctype[:40].encode("unicode_escape").decode() or "missing"
            raise service.reject(
                "unsupported_type",
                415,
                f"content type {shown}: send image/png, image/jpeg, image/bmp or application/json",
            )
        return JSONResponse(result)

    return app


def serve(cfg: PlantConfig, store: ObjectStore, host: str, port: int, *, processes: int = 1, **options: Any) -> None:
    """Run the service in the foreground until interrupted (with the timeouts and connection cap
    every Andon service has: andon.httpkit.ServerLimits). ``processes`` > 1: that many serving
    processes share one listening socket (see :func:`serve_processes`)."""
    from andon.httpkit import run_server
    from andon.settings import get_settings

    settings = get_settings()
    token = settings.service_token.get_secret_value() if settings.service_token else None
    if token is None and (host not in LOOPBACK or settings.authenticated):
        raise ConfigError(
            f"andon serve on {host}{' in the authenticated configuration' if settings.authenticated else ''} "
            "needs ANDON_SERVICE_TOKEN (>= 32 bytes, e.g. `openssl rand -hex 32`): clients then send "
            "`Authorization: Bearer <token>`; only a loopback service of the embedded stack may stay open"
        )
    if processes > 1:
        serve_processes(cfg, host, port, processes, token=token, **options)
        return
    service = ScoringService(store, cfg, token=token, **options)
    service.start()
    run_server(create_app(service), host, port)


def serve_processes(cfg: PlantConfig, host: str, port: int, processes: int, **options: Any) -> None:
    """``processes`` copies of the service behind one listening socket, bound here first (a port
    in use fails at once): the kernel hands each new connection to one of them, so one Python
    event loop and one GIL no longer bound the plant's throughput. Each process has its own
    champion, micro-batcher, log writer (its own files) and limits; only the first compacts the
    log and recovers the spool; ``/metrics`` sums every process (prometheus-client's
    multiprocess mode), ``/healthz`` is the answering process's view. A process that dies stops
    the others and this call raises: the supervisor (systemd, Kubernetes) restarts the service."""
    import multiprocessing
    import shutil
    import signal
    import socket
    import tempfile

    from prometheus_client import multiprocess

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"andon serve cannot listen on {host}:{port}: {exc}") from None
    sock.listen(2048)
    metrics_dir = tempfile.mkdtemp(prefix="andon-serve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # inherited by the children, read at their import
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no threads or OpenMP pools forked
    children = [
        ctx.Process(target=_serve_child, args=(cfg, sock, host, port, (k, processes), options), name=f"andon-serve-{k}")
        for k in range(processes)
    ]
    stopping = False

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for child in children:
            child.start()
        sock.close()  # the children hold it now
        while not stopping and all(c.is_alive() for c in children):
            time.sleep(0.2)
        died = [c for c in children if not c.is_alive()]
    finally:
        started = [c for c in children if c.pid is not None]
        for child in started:
            if child.is_alive():
                child.terminate()  # SIGTERM: uvicorn shuts down gracefully, the service flushes its log
        for child in started:
            child.join(timeout=150)  # longer than a service's stop (its threads, then the log flush)
            if child.is_alive():
                logger.error("%s did not stop within 150 s: killed", child.name)
                child.kill()
                child.join(timeout=10)
            multiprocess.mark_process_dead(child.pid, metrics_dir)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if died and not stopping:
        codes = ", ".join(f"{c.name} exit {c.exitcode}" for c in died)
        raise AndonError(f"a serving process stopped ({codes}); the others were stopped too")


def _serve_child(
    cfg: PlantConfig, sock: Any, host: str, port: int, process: tuple[int, int], options: dict[str, Any]
) -> None:
    """One serving process of :func:`serve_processes` (in a spawned interpreter); it stops itself
    when the parent is gone (killed with SIGKILL, it could not stop its children)."""
    import multiprocessing
    import signal
    from multiprocessing.connection import wait

    from andon.httpkit import run_server
    from andon.storage import open_store

    parent = multiprocessing.parent_process()

    def orphaned() -> None:
        if parent is not None:
            wait([parent.sentinel])  # readable once the parent is gone, even if it went before this line
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown: the log is flushed

    threading.Thread(target=orphaned, name="andon-serve-orphan-watch", daemon=True).start()
    if process[0] > 0:
        options = {**options, "compact_seconds": 0}  # one process compacts
    service = ScoringService(open_store(), cfg, process=process, **options)
    service.start()
    run_server(create_app(service), host, port, sock=sock)


@contextmanager
def serve_in_thread(service: ScoringService, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Start ``service`` and its HTTP server on a background thread; yields the base URL and on
    exit shuts both down (the log is flushed). For tests, benchmarks and embedding."""
    service.start()
    with run_in_thread(create_app(service), host, port, "andon-scoring", on_fail=service.stop) as url:
        yield url
