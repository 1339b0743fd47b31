"""Reviewed labels: what a person said a part really was, joined to predictions by part id.

    labels/<plant>/date=<YYYY-MM-DD>/<reviewed-at>-<uuid>.parquet   part_id, label, reviewed_at, reviewer, line

Append-only like the prediction log (one new file per append, written atomically); a part
reviewed twice keeps both rows and readers take the latest.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from andon.errors import DataError
from andon.storage import ObjectStore, join_key

if TYPE_CHECKING:
    import pandas as pd


EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)


def parse_reviewed_at(value: Any) -> pd.Timestamp:
    """A review time from outside (a Label Studio export, a CSV): an ISO time, a datetime or a
    pandas timestamp, with a timezone or taken as UTC, in the years 1970-2199 (no real review lies
    outside, and the log keeps nanoseconds). Anything else is a :class:`DataError` with the
    reason, never a traceback."""
    import pandas as pd

    if not isinstance(value, str | datetime | pd.Timestamp) or isinstance(value, bool):
        raise DataError(
            f"reviewed_at {str(value)[:40]!r} is not a time (give an ISO time such as 2026-11-26T08:00:00Z)"
        )
    if isinstance(value, str) and (len(value) > 64 or not value.isascii()):
        raise DataError(f"reviewed_at {value[:40]!r}... is not an ISO time")
    try:
        ts = pd.Timestamp(value)
        if pd.isna(ts):
            raise ValueError("empty")
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        if not EARLIEST <= ts < LATEST:
            raise ValueError(f"outside {EARLIEST:%Y} .. {LATEST:%Y}")
        return ts.as_unit("ns")
    except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:  # OutOfBoundsDatetime is a ValueError
        raise DataError(f"reviewed_at {str(value)[:40]!r} is not a usable time ({str(exc)[:120]})") from None


class ReviewLog:
    def __init__(self, store: ObjectStore, plant: str) -> None:
        self.store = store
        self.plant = plant

    def append(self, rows: Iterable[dict[str, Any]]) -> list[str]:
        import pandas as pd

        frame = pd.DataFrame(list(rows))
        if frame.empty:
            return []
        missing = [c for c in ("part_id", "label", "reviewed_at") if c not in frame.columns]
        if missing:
            raise DataError(f"review rows lack {missing}")
        if frame["part_id"].isna().any() or frame["label"].isna().any():
            raise DataError("review rows need a part_id and a label")
        bad = []
        stamps = []
        for pid, value in zip(frame["part_id"], frame["reviewed_at"], strict=True):
            try:
                stamps.append(parse_reviewed_at(value))
            except DataError as exc:
                bad.append(f"part {str(pid)[:80]!r}: {exc}")
        if bad:
            raise DataError(
                f"{len(bad)} review row(s) have an unusable reviewed_at (nothing was written): " + "; ".join(bad[:5])
            )
        frame["reviewed_at"] = pd.to_datetime(pd.Series(stamps, index=frame.index), utc=True)
        for col in ("reviewer", "line"):
            if col not in frame.columns:
                frame[col] = None
        frame = frame[["part_id", "label", "reviewed_at", "reviewer", "line"]].astype({"part_id": str, "label": str})
        keys = []
        for day, group in frame.groupby(frame["reviewed_at"].dt.strftime("%Y-%m-%d")):
            buf = io.BytesIO()
            group.to_parquet(buf, index=False)
            first = group["reviewed_at"].min()
            key = join_key(
                "labels", self.plant, f"date={day}", f"{first:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:12]}.parquet"
            )
            self.store.put(key, buf.getvalue(), "application/vnd.apache.parquet")
            keys.append(key)
        return keys

    def read(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Labels reviewed in ``[start, end)``, the latest per part."""
        import pandas as pd

        frames = []
        day = start.astimezone(UTC).date()
        while day <= end.astimezone(UTC).date():
            for obj in self.store.list(join_key("labels", self.plant, f"date={day:%Y-%m-%d}") + "/"):
                frames.append(pd.read_parquet(io.BytesIO(self.store.get(obj.key))))
            day += timedelta(days=1)
        if not frames:
            return pd.DataFrame(columns=["part_id", "label", "reviewed_at", "reviewer", "line"])
        out = pd.concat(frames, ignore_index=True)
        out = out[(out.reviewed_at >= start) & (out.reviewed_at < end)]
        return out.sort_values("reviewed_at").drop_duplicates("part_id", keep="last").reset_index(drop=True)
