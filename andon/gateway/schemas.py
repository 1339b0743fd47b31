"""The MES messages Andon understands, one pydantic model per type, and how a message becomes a
Prefect event (name ``mes.<type>``, resource ``andon.plant.<plant>``, a deterministic id).

Every message: ``type``, ``message_id`` (the MES's own id: retries send the same one),
``plant``, optional ``line``, ``occurred_at`` (with a timezone). Per type:

- ``sku.introduced``: ``sku``, optional ``description``
- ``failure_type.logged``: ``failure_type`` (e.g. ``TWF`` on AI4I), optional ``machine``
- ``product_mix.changed``: ``mix`` (share per SKU, summing to 1) and ``previous_mix``; the
  shift (total variation distance) is computed here, and the event is significant when it
  reaches the plant's ``mes.product_mix_threshold``
- ``line.reconfigured``: ``line`` (required), ``change``
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from andon.errors import DataError
from andon.events import SIGNIFICANT, mes_event_id, plant_resource

if TYPE_CHECKING:
    from andon.config import PlantConfig

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:/ -]{0,127}$"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    message_id: str = Field(min_length=1, max_length=200)
    plant: str = Field(min_length=1, max_length=64)
    line: str | None = Field(default=None, max_length=64)
    occurred_at: datetime

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("needs a timezone (e.g. 2026-11-26T08:00:00Z)")
        return value.astimezone(UTC)


class SkuIntroduced(_Message):
    type: Literal["sku.introduced"]
    sku: str = Field(pattern=NAME)
    description: str = Field(default="", max_length=500)


class FailureTypeLogged(_Message):
    type: Literal["failure_type.logged"]
    failure_type: str = Field(pattern=NAME)
    machine: str | None = Field(default=None, max_length=64)


class ProductMixChanged(_Message):
    type: Literal["product_mix.changed"]
    mix: dict[str, float] = Field(min_length=1)
    previous_mix: dict[str, float] = Field(min_length=1)

    @field_validator("mix", "previous_mix")
    @classmethod
    def _shares(cls, value: dict[str, float]) -> dict[str, float]:
        if any(not math.isfinite(v) or v < 0 for v in value.values()):
            raise ValueError("shares must be finite and >= 0")
        total = sum(value.values())
        if not math.isclose(total, 1.0, abs_tol=0.01):
            raise ValueError(f"shares must sum to 1 (they sum to {total:.3f})")
        return value

    @property
    def shift(self) -> float:
        """Total variation distance between the two mixes (0: same, 1: disjoint)."""
        skus = set(self.mix) | set(self.previous_mix)
        return 0.5 * sum(abs(self.mix.get(s, 0.0) - self.previous_mix.get(s, 0.0)) for s in skus)


class LineReconfigured(_Message):
    type: Literal["line.reconfigured"]
    line: str = Field(min_length=1, max_length=64)
    change: str = Field(min_length=1, max_length=500)


MesMessage = Annotated[
    SkuIntroduced | FailureTypeLogged | ProductMixChanged | LineReconfigured, Field(discriminator="type")
]
MESSAGE_TYPES = ("sku.introduced", "failure_type.logged", "product_mix.changed", "line.reconfigured")
_ADAPTER: TypeAdapter[Any] = TypeAdapter(MesMessage)


def parse_message(raw: Any) -> SkuIntroduced | FailureTypeLogged | ProductMixChanged | LineReconfigured:
    """A message from decoded JSON; DataError names the field that is wrong."""
    if not isinstance(raw, dict):
        raise DataError("the body must be a JSON object")
    kind = raw.get("type")
    if kind not in MESSAGE_TYPES:
        raise DataError(f"type: unknown event type {kind!r}; known: {', '.join(MESSAGE_TYPES)}")
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"][1:]) or "body"  # drop the union tag
        raise DataError(f"{loc}: {first['msg']}") from None


def to_event(
    msg: SkuIntroduced | FailureTypeLogged | ProductMixChanged | LineReconfigured, cfg: PlantConfig
) -> dict[str, Any]:
    """The Prefect event for ``msg`` of plant ``cfg`` (checked: the plant and line exist)."""
    if msg.line is not None and msg.line not in cfg.line_ids:
        raise DataError(f"line: {msg.line!r} is not a line of {cfg.id} ({', '.join(cfg.line_ids)})")
    payload = msg.model_dump(mode="json")
    significant = True
    if isinstance(msg, ProductMixChanged):
        payload["shift"] = round(msg.shift, 4)
        payload["threshold"] = cfg.mes.product_mix_threshold
        significant = msg.shift >= cfg.mes.product_mix_threshold
    resource = plant_resource(cfg.id, msg.line) | {SIGNIFICANT: str(significant).lower()}
    return {
        "id": str(mes_event_id(cfg.id, msg.message_id)),
        "occurred": datetime.now(UTC).isoformat(),  # when Andon learned it (the MES time is in the payload)
        "event": f"mes.{msg.type}",
        "resource": resource,
        "payload": payload,
    }
