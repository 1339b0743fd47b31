"""MES events from MQTT (a Unified Namespace): ``andon gateway --mqtt mqtt://host:1883`` also
subscribes to ``<mes.topic_prefix>/#`` of every plant that configures a prefix (default
``andon/<plant>/mes``) and feeds each message through the same schema, ids and outbox as the
webhook. A message must name the plant whose topic it came on. MQTT carries no request
signature: the broker authenticates publishers (its ACLs decide who may publish where).
Subscriptions use QoS 1, so the broker re-delivers until the gateway has taken a message; a
re-delivered message has the same message id and is a duplicate, not a second event. A message
is acknowledged to the broker only after it is committed to the outbox, or refused for good: any
failure to parse or validate it (bad JSON, nesting too deep, a time out of range, a wrong field...)
is a refusal, acknowledged, recorded and counted. Only an outbox that is away leaves a message
unacknowledged (the broker re-delivers it after a reconnect): Mosquitto holds at most 20
unacknowledged messages per client, so an unacknowledged poison message would stop all delivery.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from andon.errors import ConfigError
from andon.gateway.outbox import OutboxError
from andon.httpkit import Rejected

if TYPE_CHECKING:
    from andon.config import PlantConfig
    from andon.gateway.app import Gateway

log = logging.getLogger(__name__)


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: for logs and start-up lines."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    user = f"{parsed.username}:***@" if parsed.username else ":***@"
    return parsed._replace(netloc=user + parsed.netloc.rsplit("@", 1)[1]).geturl()


def topic_prefix(cfg: PlantConfig) -> str:
    return (cfg.mes.topic_prefix or f"andon/{cfg.id}/mes").rstrip("/")


class MqttBridge:
    """Subscribes to every plant's MES topics and hands each message to ``gateway.receive``."""

    def __init__(self, gateway: Gateway, url: str, client_id: str = "andon-gateway") -> None:
        import paho.mqtt.client as mqtt

        parsed = urlparse(url)
        if parsed.scheme not in ("mqtt", "tcp") or not parsed.hostname:
            raise ConfigError(f"MQTT URL {redact(url)!r}: expected mqtt://user:password@host[:port]")
        self.gateway = gateway
        self.host, self.port = parsed.hostname, parsed.port or 1883
        self.prefixes = {topic_prefix(cfg): plant for plant, cfg in gateway.plants.items()}
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, manual_ack=True
        )
        if parsed.username:
            self.client.username_pw_set(parsed.username, parsed.password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._pending_subs: set[int] = set()
        self.connected = threading.Event()
        self.received = 0
        self.refused = 0  # acknowledged without an event (they also count in gateway.rejected)
        self.unstored = 0  # left unacknowledged: the outbox was away
        self.rejected: list[tuple[str, str]] = []  # (topic, why), the last 100

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT connection refused: %s", reason)
            return
        mids = {client.subscribe(f"{prefix}/#", qos=1)[1] for prefix in self.prefixes}
        self._pending_subs |= mids
        if not mids:
            self.connected.set()

    def _on_subscribe(self, _client: Any, _userdata: Any, mid: int, _reasons: Any, _props: Any = None) -> None:
        self._pending_subs.discard(mid)
        if not self._pending_subs:  # subscribed: from now on nothing published is missed
            self.connected.set()

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        topic = message.topic
        try:
            self._receive(topic, message.payload)
            self.received += 1
        except OutboxError as exc:  # the outbox is away: no ack, the broker re-delivers after a reconnect
            self.unstored += 1
            log.error("MQTT message on %r not stored (left on the broker): %s", topic, exc)
            return
        except Rejected as exc:  # it will never become valid: take it off the broker
            self._refuse(topic, exc.detail)
        except Exception as exc:  # any other failure to take it is the message's too: never stall
            detail = self.gateway.reject("invalid", 400, f"unusable message ({type(exc).__name__})").detail
            self._refuse(topic, detail)
        self.client.ack(message.mid, message.qos)

    def _receive(self, topic: str, payload: bytes) -> None:
        plant = next((p for prefix, p in self.prefixes.items() if topic.startswith(prefix + "/")), None)
        raw = self.gateway.decode(payload)
        if isinstance(raw, dict) and raw.get("plant") != plant:
            shown = repr(raw.get("plant"))[:80]
            raise self.gateway.reject("unknown_plant", 400, f"plant: {shown} published on {plant}'s topic {topic!r}")
        self.gateway.receive(raw, "mqtt")

    def _refuse(self, topic: str, detail: str) -> None:
        self.refused += 1
        self.rejected = [*self.rejected[-99:], (topic, detail[:500])]
        log.warning("MQTT message on %r refused: %s", topic, detail[:500])

    def start(self, timeout: float = 10.0) -> None:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            self.stop()
            raise ConfigError(f"no MQTT broker answered at {self.host}:{self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
