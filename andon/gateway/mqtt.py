"""MES events from MQTT (a Unified Namespace): ``andon gateway --mqtt mqtt://host:1883`` also
subscribes to ``<mes.topic_prefix>/#`` of every plant that configures a prefix (default
``andon/<plant>/mes``) and feeds each message through the same schema, ids and outbox as the
webhook. A message must name the plant whose topic it came on. MQTT carries no request
signature: the broker authenticates publishers (its ACLs decide who may publish where).
Subscriptions use QoS 1, so the broker re-delivers until the gateway has taken a message; a
re-delivered message has the same message id and is a duplicate, not a second event. A message
is acknowledged to the broker only after it is committed to the outbox (or refused for good).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from andon.errors import ConfigError
from andon.httpkit import Rejected

if TYPE_CHECKING:
    from andon.config import PlantConfig
    from andon.gateway.app import Gateway

log = logging.getLogger(__name__)


def topic_prefix(cfg: PlantConfig) -> str:
    return (cfg.mes.topic_prefix or f"andon/{cfg.id}/mes").rstrip("/")


class MqttBridge:
    """Subscribes to every plant's MES topics and hands each message to ``gateway.receive``."""

    def __init__(self, gateway: Gateway, url: str, client_id: str = "andon-gateway") -> None:
        import paho.mqtt.client as mqtt

        parsed = urlparse(url)
        if parsed.scheme not in ("mqtt", "tcp") or not parsed.hostname:
            raise ConfigError(f"MQTT URL {url!r}: expected mqtt://host[:port]")
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
        self.connected = threading.Event()
        self.received = 0
        self.rejected: list[tuple[str, str]] = []  # (topic, why), the last 100

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT connection refused: %s", reason)
            return
        for prefix in self.prefixes:
            client.subscribe(f"{prefix}/#", qos=1)
        self.connected.set()

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        topic = message.topic
        plant = next((p for prefix, p in self.prefixes.items() if topic.startswith(prefix + "/")), None)
        try:
            try:
                raw = json.loads(message.payload)
            except ValueError as exc:
                raise self.gateway.reject("malformed", 400, f"malformed JSON: {exc}") from None
            if isinstance(raw, dict) and raw.get("plant") != plant:
                raise self.gateway.reject(
                    "unknown_plant", 400, f"plant: {raw.get('plant')!r} published on {plant}'s topic {topic}"
                )
            self.gateway.receive(raw, "mqtt")
            self.received += 1
        except Rejected as exc:  # it will never become valid: take it off the broker
            self.rejected = [*self.rejected[-99:], (topic, exc.detail)]
            log.warning("MQTT message on %s refused: %s", topic, exc.detail)
        except Exception:  # the outbox is away: no ack, the broker re-delivers after a reconnect
            log.exception("MQTT message on %s not stored", topic)
            return
        self.client.ack(message.mid, message.qos)

    def start(self, timeout: float = 10.0) -> None:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            self.stop()
            raise ConfigError(f"no MQTT broker answered at {self.host}:{self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
