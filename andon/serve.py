"""Online scoring: ``andon serve --plant P`` answers one part at a time, as an inspection station
asks, and logs every decision exactly like the batch path.

    POST /v1/score              body: the image (``Content-Type: image/png`` or ``image/jpeg``);
                                query: ``part_id`` (default: a new id), ``line``, ``sku``
    POST /v1/score              body: JSON ``{"object_key": ..., "part_id": ..., "line": ..., "sku": ...}``
    GET  /healthz               champion, queue depth, rows logged; 503 while no champion

The response (class, probabilities, model version, part id) is computed on the request thread;
everything else happens off the response path on one background worker: storing an uploaded
image, the saliency map of a flagged part, and the prediction-log row (micro-batches flushed every
``flush_seconds``; a crash loses at most those in flight). The champion alias is re-resolved
every ``reload_seconds`` by a watcher thread, so a promotion or rollback is served within
seconds without a restart. Requests over ``max_bytes`` are refused with 413 before the body is
read in full. (Import this module only to serve: it imports FastAPI.)
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request  # at module level: FastAPI resolves endpoint annotations here

from andon.config import PlantConfig
from andon.errors import AndonError, DataError, ObjectNotFoundError
from andon.httpkit import Rejected, read_capped, run_in_thread
from andon.predlog import PredictionLog, PredictionWriter
from andon.registry import CHAMPION
from andon.scoring import Champion, check_image, error_fields, explain_parts, prediction_rows, wants_explanation
from andon.storage import ObjectStore, join_key, validate_key

if TYPE_CHECKING:
    import numpy as np

MAX_BYTES = 4 * 1024 * 1024
IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/jpg": "jpg", "application/octet-stream": "bin"}


@dataclass
class _Job:
    row: dict[str, Any]
    image: np.ndarray | None = None
    champion: Champion | None = None  # the version that decided explains the decision
    upload: tuple[str, bytes, str] | None = None  # (key, data, content type)


@dataclass
class ServiceStats:
    requests: int = 0
    rejected: int = 0
    logged: int = 0
    explained: int = 0
    background_errors: list[str] = field(default_factory=list)


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
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.reload_seconds = reload_seconds
        self.max_bytes = max_bytes
        self.explain = explain
        self.writer = PredictionWriter(PredictionLog(store, cfg.id), max_rows=1000, max_seconds=flush_seconds)
        self.stats = ServiceStats()
        self.champion: Champion | None = None
        self.champion_error = "not loaded yet"
        self._infer_lock = threading.Lock()  # one forward pass at a time: the cores are shared anyway
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=10_000)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.refresh_champion()
        for target, name in ((self._watch, "andon-champion-watch"), (self._work, "andon-log-worker")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Drain the queue, flush the log, stop the threads (nothing accepted is lost)."""
        self._stop.set()
        self._jobs.put(None)
        for t in self._threads:
            t.join(timeout=30)
        self.stats.logged += self.writer.pending
        self.writer.flush()

    def refresh_champion(self) -> None:
        from andon.scoring import resolve_champion

        try:
            name, version = resolve_champion(self.cfg)
            current = self.champion
            if current is None or (current.name, current.version) != (name, version):
                self.champion = Champion.load(self.cfg)
            self.champion_error = ""
        except AndonError as exc:  # no champion yet, or the registry is briefly away: keep serving
            self.champion_error = str(exc)
            if "has no champion" in str(exc):
                self.champion = None

    def _watch(self) -> None:
        while not self._stop.wait(self.reload_seconds):
            self.refresh_champion()

    def _work(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=0.2)
            except queue.Empty:
                job = None
                if self._stop.is_set():
                    return
            if job is not None:
                self._handle(job)
            elif self._stop.is_set() and self._jobs.empty():
                return
            try:
                self.stats.logged += self.writer.flush_if_due()
            except Exception as exc:  # the rows stay buffered; the next flush retries them
                self._background_error(f"prediction log flush: {exc}")

    def _handle(self, job: _Job) -> None:
        row = job.row
        try:
            if job.upload is not None:
                key, data, ctype = job.upload
                self.store.put(key, data, ctype)
            if job.image is not None and job.champion is not None:
                explain_parts(self.store, self.cfg, job.champion, job.image[None], [row])
                self.stats.explained += 1
        except Exception as exc:  # the decision is still logged, with what went wrong
            self._background_error(f"{row['part_id']}: {exc}")
        self.writer.buffer(row)

    def _background_error(self, message: str) -> None:
        self.stats.background_errors = [*self.stats.background_errors[-19:], message]

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
    ) -> dict[str, Any]:
        """Score one part; returns the response body, or raises ``Rejected`` (the part is logged as
        an error row when the image itself is the problem)."""
        t0 = time.perf_counter()
        self.stats.requests += 1
        line = line or self.cfg.line_ids[0]
        if line not in self.cfg.line_ids:
            raise Rejected(422, f"unknown line {line!r} of {self.cfg.id}; known: {', '.join(self.cfg.line_ids)}")
        champion = self.champion
        if champion is None:
            raise Rejected(503, f"no model to score with: {self.champion_error}")
        part_id = part_id or f"{self.cfg.id}-{uuid.uuid4().hex[:16]}"
        now = datetime.now(UTC)
        upload = None
        if object_key is None:
            ext = IMAGE_TYPES.get(content_type, "bin")
            object_key = join_key(self.cfg.object_prefix, line, "online", f"{now:%Y-%m-%d}", f"{part_id}.{ext}")
            validate_key(object_key)
            upload = (object_key, data, content_type)
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
        fields, problem = check_image(object_key, data, self.cfg, line)
        row.update(fields)
        if problem:
            self.stats.rejected += 1
            self._enqueue(_Job({**row, **error_fields(problem), "scored_at": datetime.now(UTC)}, upload=upload))
            raise Rejected(422, f"{part_id}: {problem}")
        image = champion.model_input(data)
        with self._infer_lock:
            probs, emb = champion.predict(image[None])
        (pred,) = prediction_rows(champion.classes, probs, emb, champion.threshold)
        latency_ms = (time.perf_counter() - t0) * 1000
        row.update(pred, scored_at=datetime.now(UTC), latency_ms=latency_ms)
        explain = self.explain and wants_explanation(self.cfg, part_id, pred["predicted_class"])
        self._enqueue(_Job(row, image=image if explain else None, champion=champion, upload=upload))
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
        try:
            validate_key(object_key)
            data = self.store.get(object_key)
        except ObjectNotFoundError:
            raise Rejected(404, f"no object {object_key!r} in the store") from None
        except DataError as exc:
            raise Rejected(422, str(exc)) from None
        return self.score(data, object_key=object_key, **kw)

    def _enqueue(self, job: _Job) -> None:
        try:
            self._jobs.put(job, timeout=5)
        except queue.Full:
            raise Rejected(503, "the prediction log is backed up; retry shortly") from None

    def health(self) -> dict[str, Any]:
        c = self.champion
        return {
            "status": "ok" if c is not None else "no-champion",
            "plant": self.cfg.id,
            "model_name": c.name if c else None,
            "model_version": c.version if c else None,
            "champion_error": self.champion_error or None,
            "queue": self._jobs.qsize(),
            "requests": self.stats.requests,
            "rejected": self.stats.rejected,
            "logged": self.stats.logged,
            "explained": self.stats.explained,
            "background_errors": self.stats.background_errors[-5:],
        }


def create_app(service: ScoringService) -> FastAPI:
    """The FastAPI app around a started ``service`` (the caller starts and stops it)."""
    import json
    from contextlib import asynccontextmanager

    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        yield
        await run_in_threadpool(service.stop)

    app = FastAPI(title=f"Andon scoring: {service.cfg.id}", version="1", lifespan=lifespan)

    @app.exception_handler(Rejected)
    async def _rejected(_request: Request, exc: Rejected) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        body = service.health()
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.post("/v1/score")
    async def score(
        request: Request, part_id: str | None = None, line: str | None = None, sku: str | None = None
    ) -> JSONResponse:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await read_capped(request, service.max_bytes)
        if not body:
            raise Rejected(422, "empty request: send the image as the body, or JSON with an object_key")
        if ctype == "application/json":
            try:
                req = json.loads(body)
                assert isinstance(req, dict) and isinstance(req.get("object_key"), str)
            except (ValueError, AssertionError):
                raise Rejected(422, 'JSON body must be {"object_key": "...", "part_id"?, "line"?, "sku"?}') from None
            result = await run_in_threadpool(
                service.score_key,
                req["object_key"],
                part_id=req.get("part_id") or part_id,
                line=req.get("line") or line,
                sku=req.get("sku") or sku,
            )
        elif ctype in IMAGE_TYPES:
            result = await run_in_threadpool(
                service.score, body, part_id=part_id, line=line, sku=sku, content_type=ctype
            )
        else:
            raise Rejected(415, f"content type {ctype or 'missing'}: send image/png, image/jpeg or application/json")
        return JSONResponse(result)

    return app


def serve(cfg: PlantConfig, store: ObjectStore, host: str, port: int, **options: Any) -> None:
    """Run the service in the foreground until interrupted."""
    import uvicorn

    service = ScoringService(store, cfg, **options)
    service.start()
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning", access_log=False)


@contextmanager
def serve_in_thread(service: ScoringService, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Start ``service`` and its HTTP server on a background thread; yields the base URL and on
    exit shuts both down (the log is flushed). For tests, benchmarks and embedding."""
    service.start()
    with run_in_thread(create_app(service), host, port, "andon-scoring", on_fail=service.stop) as url:
        yield url
