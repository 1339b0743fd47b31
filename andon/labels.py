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
        frame["reviewed_at"] = pd.to_datetime(frame["reviewed_at"], utc=True)
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
