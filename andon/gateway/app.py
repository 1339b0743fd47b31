"""``andon gateway``: the MES webhook service (FastAPI; import this module only to serve).

    POST /v1/mes/events     a signed MES message (see andon/gateway/signing.py and schemas.py)
                            202 {"event_id", "event", "duplicate"} once it is committed to the outbox
                            401 unsigned / forged / expired / replayed; 400 malformed JSON, unknown
                            type, a wrong field (named), unknown plant or line, a control character;
                            408 a body too slow; 413 over 1 MB; 503 the outbox is away
    GET  /healthz           outbox counts and the forwarder's state
    GET  /metrics           Prometheus (prometheus-client): received, duplicates, rejected by
                            reason, pending, delivered, dead, request and delivery-lag histograms

Every refusal is counted by reason; nothing is enqueued for a rejected request, and no input
gets a 500 (whatever a body holds, it is a counted 4xx). A message id already in the outbox is
acknowledged again (``duplicate: true``) and not enqueued twice, so an MES that retries never retrains twice.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any

from fastapi import FastAPI, Request, Response  # at module level: FastAPI resolves endpoint annotations here

from andon.config import PlantConfig
from andon.errors import ConfigError, DataError
from andon.gateway.forwarder import Forwarder
from andon.gateway.outbox import Outbox, OutboxError, ReplayError
from andon.gateway.schemas import decode_json, parse_message, to_event
from andon.gateway.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureError, verify
from andon.httpkit import Rejected, read_capped
from andon.settings import MIN_SECRET_BYTES

MAX_BYTES = 1024 * 1024

log = logging.getLogger(__name__)


def check_secret(secret: str) -> str:
    """``secret`` when it is long enough to sign with (HMAC-SHA256 wants >= 32 bytes of key)."""
    if not secret:
        raise ConfigError("the gateway needs the MES signing secret: set ANDON_MES_SECRET")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"ANDON_MES_SECRET is {len(secret.encode())} bytes: use at least {MIN_SECRET_BYTES} random bytes "
            "(e.g. `openssl rand -hex 32`) and give the MES the same value"
        )
    return secret


class Gateway:
    """Checks, persists and forwards MES messages (HTTP and MQTT share it)."""

    def __init__(
        self,
        outbox: Outbox,
        plants: dict[str, PlantConfig],
        secret: str,
        forwarder: Forwarder | None = None,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.outbox, self.plants, self.secret = outbox, plants, check_secret(secret)
        self.forwarder = forwarder
        self.max_bytes = max_bytes
        self.accepted: Counter[str] = Counter()  # by source
        self.duplicates = 0
        self.rejected: Counter[str] = Counter()  # by reason
        self._lock = threading.Lock()
        self.prom = GatewayMetrics(self)
        if forwarder is not None:
            forwarder.on_confirmed = self.prom.delivered

    def reject(self, reason: str, status: int, detail: str) -> Rejected:
        with self._lock:
            self.rejected[reason] += 1
        self.prom.rejected.labels(reason).inc()
        return Rejected(status, detail)

    def receive_http(self, body: bytes, timestamp: str | None, signature: str | None) -> dict[str, Any]:
        try:
            sig = verify(body, timestamp, signature, self.secret)
        except SignatureError as exc:
            raise self.reject(exc.reason, 401, str(exc)) from None
        raw = self.decode(body)
        try:
            return self.receive(raw, "http", sig)
        except OutboxError as exc:
            raise self.reject("outbox_unavailable", 503, f"not stored, send it again later: {exc}") from None

    def decode(self, body: bytes) -> Any:
        """The JSON of a body or MQTT payload, or a counted rejection."""
        try:
            return decode_json(body)
        except DataError as exc:
            raise self.reject("malformed", 400, str(exc)) from None

    def check(self, raw: Any) -> dict[str, Any]:
        """The Prefect event of ``raw`` (decoded JSON), or a counted rejection (Rejected) that
        names what is wrong: whatever ``raw`` holds, nothing else is raised."""
        try:
            msg = parse_message(raw)
            cfg = self.plants.get(msg.plant)
            if cfg is None:
                known = ", ".join(sorted(self.plants))
                raise self.reject("unknown_plant", 400, f"plant: unknown plant {msg.plant!r} (known: {known})")
            return to_event(msg, cfg)
        except Rejected:
            raise
        except DataError as exc:
            reason = "unknown_type" if str(exc).startswith("type:") else "schema"
            raise self.reject(reason, 400, str(exc)) from None
        except Exception as exc:  # a validator's surprise: still the message's fault, never a 500
            log.warning("MES message refused: %s while checking it", type(exc).__name__)
            raise self.reject("invalid", 400, f"unusable message ({type(exc).__name__})") from None

    def receive(self, raw: Any, source: str, signature: str | None = None) -> dict[str, Any]:
        """Check ``raw`` (decoded JSON), persist its event; the answer for the sender. Rejected
        for a message that will never be valid; OutboxError when it could not be stored now."""
        event = self.check(raw)
        try:
            new = self.outbox.put(event, source, signature)
        except ReplayError as exc:
            raise self.reject("replayed", 401, str(exc)) from None
        except DataError as exc:  # the database refuses a value the schema let through
            raise self.reject("schema", 400, str(exc)) from None
        with self._lock:
            if new:
                self.accepted[source] += 1
            else:
                self.duplicates += 1
        (self.prom.received.labels(source) if new else self.prom.duplicates).inc()
        if new and self.forwarder:
            self.forwarder.wake()
        plant = event["resource"]["plant.id"]
        return {"event_id": event["id"], "event": event["event"], "plant": plant, "duplicate": not new}

    def health(self) -> dict[str, Any]:
        counts = self.outbox.counts()
        fw = self.forwarder.stats if self.forwarder else None
        return {
            "status": "ok",
            "plants": sorted(self.plants),
            **counts,
            "forwarder": None
            if fw is None
            else {
                "last_error": fw.last_error or None,
                "backoff_s": fw.backoff,
                "failures": fw.failures,
                "resent": fw.resent,
                "failovers": fw.failovers,
                "api_url": self.forwarder.api_url if self.forwarder else None,
            },
        }

    def metrics(self) -> tuple[bytes, str]:
        """Prometheus exposition (body, content type)."""
        return self.prom.render()


class GatewayMetrics:
    """The gateway's Prometheus metrics (prometheus-client, a registry per gateway): counters as
    events happen, the outbox's counts read at each scrape."""

    def __init__(self, gateway: Gateway) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.gateway = gateway
        self.registry = r = CollectorRegistry()
        self.received = Counter(
            "andon_gateway_events_received", "MES events accepted and committed to the outbox", ["source"], registry=r
        )
        self.duplicates = Counter(
            "andon_gateway_events_duplicate", "MES messages whose id was already in the outbox", registry=r
        )
        self.rejected = Counter(
            "andon_gateway_events_rejected", "requests refused, by reason (nothing enqueued)", ["reason"], registry=r
        )
        self.request_seconds = Histogram(
            "andon_gateway_request_seconds", "a signed MES message, received to answered", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
        )  # fmt: skip
        self.lag = Histogram(
            "andon_gateway_delivery_lag_seconds", "receipt to confirmed delivery at the Prefect server", registry=r,
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
        )  # fmt: skip
        r.register(self)  # the outbox gauges, read at each scrape (collect below)

    def delivered(self, lags: list[float]) -> None:
        for lag in lags:
            self.lag.observe(lag)

    def describe(self) -> list[Any]:
        return []  # collected lazily: the outbox may be away when the registry is built

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        counts = self.gateway.outbox.counts()
        yield GaugeMetricFamily(
            "andon_gateway_outbox_pending", "events in the outbox not yet confirmed by the Prefect server",
            value=counts["pending"],
        )  # fmt: skip
        yield CounterMetricFamily(
            "andon_gateway_events_delivered", "events the Prefect server confirmably stored", value=counts["delivered"]
        )
        yield GaugeMetricFamily(
            "andon_gateway_events_dead", "events the Prefect server refused for good, parked with a reason",
            value=counts["dead"],
        )  # fmt: skip
        fw = self.gateway.forwarder
        if fw is not None:
            yield CounterMetricFamily(
                "andon_gateway_forwarder_failures", "failed deliveries to the Prefect server", value=fw.stats.failures
            )

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def create_app(gateway: Gateway) -> FastAPI:
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title="Andon MES gateway", version="1")

    @app.exception_handler(Rejected)
    async def _rejected(_request: Request, exc: Rejected) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.post("/v1/mes/events", status_code=202)
    async def receive(request: Request) -> JSONResponse:
        try:
            body = await read_capped(request, gateway.max_bytes)
        except Rejected as exc:
            reason = {413: "too_large", 408: "body_timeout", 400: "disconnected"}.get(exc.status, "body")
            raise gateway.reject(reason, exc.status, exc.detail) from None
        with gateway.prom.request_seconds.time():
            answer = await run_in_threadpool(
                gateway.receive_http, body, request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER)
            )
        return JSONResponse(answer, status_code=202)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse(await run_in_threadpool(gateway.health))

    @app.get("/metrics")
    async def metrics() -> Response:
        body, ctype = await run_in_threadpool(gateway.metrics)
        return Response(body, media_type=ctype)

    return app


def build_gateway(api_url: str | None = None, outbox_url: str | None = None, forward: bool = True) -> Gateway:
    """A gateway from the settings: every plant of ``configs/``, the outbox, a started forwarder."""
    from andon.config import list_plants, load_plant
    from andon.settings import get_settings

    settings = get_settings()
    secret = check_secret(settings.mes_secret.get_secret_value() if settings.mes_secret else "")
    url = outbox_url or settings.gateway_outbox_url
    if url.startswith("sqlite:///"):
        from pathlib import Path

        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    outbox = Outbox(url)
    forwarder = Forwarder(outbox, api_url or settings.gateway_api_urls or settings.prefect_api_url) if forward else None
    gateway = Gateway(outbox, {p: load_plant(p) for p in list_plants()}, secret, forwarder)
    if forwarder:
        forwarder.start()
    return gateway
