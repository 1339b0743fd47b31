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

Every text is refused with a control character in it (NUL, ESC, ... : Prefect on PostgreSQL
refuses a NUL in an event's JSON, and escapes reach operators' terminals); free text
(``description``, ``change``) may hold tabs and line breaks. ``decode_json`` and
``parse_message`` are the one validation path of HTTP and MQTT: whatever a body holds, they
answer a message or a DataError naming the field, never another exception.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from andon.errors import DataError
from andon.events import SIGNIFICANT, mes_event_id, plant_resource

if TYPE_CHECKING:
    from andon.config import PlantConfig

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:/ -]{0,127}$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # C0 and DEL
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # ... but tab, CR and LF


def _plain(value: str) -> str:
    if found := _CONTROL.search(value):
        raise ValueError(f"control character {found.group()!r} at position {found.start()} is not allowed")
    return value


def _text(value: str) -> str:
    if found := _CONTROL_IN_TEXT.search(value):
        raise ValueError(f"control character {found.group()!r} at position {found.start()} is not allowed")
    return value


Plain = Annotated[str, AfterValidator(_plain)]
"""A one-line string: no control character."""
Text = Annotated[str, AfterValidator(_text)]
"""Free text: tabs and line breaks allowed, no other control character."""
SkuName = Annotated[str, Field(pattern=NAME)]


def decode_json(body: bytes | str) -> Any:
    """The decoded JSON of a request body or MQTT payload; DataError for anything that is not
    JSON (bad UTF-8, nesting too deep for the decoder, an integer of 5,000 digits...)."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise DataError(f"malformed JSON: {reason}") from None


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    message_id: Plain = Field(min_length=1, max_length=200)
    plant: Plain = Field(min_length=1, max_length=64)
    line: Plain | None = Field(default=None, max_length=64)
    occurred_at: datetime

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("needs a timezone (e.g. 2026-11-26T08:00:00Z)")
        try:  # year 1 at +14:00 or 9999 at -14:00 has no UTC time
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("is out of range in UTC") from None


class SkuIntroduced(_Message):
    type: Literal["sku.introduced"]
    sku: str = Field(pattern=NAME)
    description: Text = Field(default="", max_length=500)


class FailureTypeLogged(_Message):
    type: Literal["failure_type.logged"]
    failure_type: str = Field(pattern=NAME)
    machine: Plain | None = Field(default=None, max_length=64)


class ProductMixChanged(_Message):
    type: Literal["product_mix.changed"]
    mix: dict[SkuName, float] = Field(min_length=1, max_length=1000)
    previous_mix: dict[SkuName, float] = Field(min_length=1, max_length=1000)

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
    line: Plain = Field(min_length=1, max_length=64)
    change: Text = Field(min_length=1, max_length=500)


MesMessage = Annotated[
    SkuIntroduced | FailureTypeLogged | ProductMixChanged | LineReconfigured, Field(discriminator="type")
]
MESSAGE_TYPES = ("sku.introduced", "failure_type.logged", "product_mix.changed", "line.reconfigured")
_ADAPTER: TypeAdapter[Any] = TypeAdapter(MesMessage)
_JSON_TYPES = {dict: "object", list: "array", int: "number", float: "number", bool: "boolean"}


def parse_message(raw: Any) -> SkuIntroduced | FailureTypeLogged | ProductMixChanged | LineReconfigured:
    """A message from decoded JSON; DataError names the field that is wrong (and is the only
    exception: a validator's surprise is a refusal too, never a 500 or an unacknowledged message)."""
    if not isinstance(raw, dict):
        raise DataError("the body must be a JSON object")
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
        shown = (
            repr(kind)[:80]
            if isinstance(kind, str) or kind is None
            else f"of JSON type {_JSON_TYPES.get(type(kind), '?')}"
        )
        raise DataError(f"type: unknown event type {shown}; known: {', '.join(MESSAGE_TYPES)}")
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        loc = ".".join(str(p)[:64] for p in first["loc"][1:]) or "body"  # drop the union tag
        raise DataError(f"{_plain_repr(loc)}: {first['msg'][:300]}") from None
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        raise DataError(f"body: unusable message ({type(exc).__name__})") from None


def _plain_repr(text: str) -> str:
    """``text`` safe for a log line and a terminal (a key may hold anything)."""
    return text if not _CONTROL.search(text) else repr(text)


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
