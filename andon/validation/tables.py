"""Checks of a table (metadata, sensors, an external data set) against its spec and profile.

Raw values that GX cannot compare (strings or infinities in a numeric column, unparseable or
naive timestamps) are first turned into helper columns, so each problem is its own named rule
and the remaining rules run on clean, coerced values. The raw table is never changed.

A timestamp must also not lie in the future (beyond ``FUTURE_TOLERANCE`` of clock skew): a part
stamped in 2262 is a broken clock or a forged row, and it would sit at the end of every window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from andon.validation.gx import Rule, RuleResult, run_rules

if TYPE_CHECKING:
    import pandas as pd

    from andon.validation.profile import TableProfile
    from andon.validation.spec import TableSpec

_TZ_SUFFIX = re.compile(r"(?:Z|[+-]\d\d:?\d\d)$")
FUTURE_TOLERANCE = timedelta(minutes=15)  # camera and MES clocks run a little fast; 2262 does not


@dataclass
class TableReport:
    table: str
    rows: int
    results: list[RuleResult] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results)

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.results if not r.success]

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "rows": self.rows,
            "success": self.success,
            "results": [r.as_dict() for r in self.results],
        }


def _fmt(x: float | None) -> str:
    return "-inf" if x is None else f"{x:.6g}"


def _parse_timestamps(raw: pd.Series, spec: TableSpec) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(parsed UTC timestamps, parse ok, timezone-aware) for each row."""
    import pandas as pd

    present = raw.notna()
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return raw.dt.tz_convert("UTC"), present | ~present, pd.Series(True, index=raw.index)
    if pd.api.types.is_datetime64_dtype(raw.dtype):
        aware = pd.Series(spec.assume_timezone is not None, index=raw.index)
        parsed = raw.dt.tz_localize(spec.assume_timezone).dt.tz_convert("UTC") if spec.assume_timezone else raw
        return parsed.dt.tz_localize("UTC") if not spec.assume_timezone else parsed, present | ~present, aware
    text = raw.astype("string")
    has_zone = text.str.strip().str.contains(_TZ_SUFFIX, na=False)
    aware = has_zone | (spec.assume_timezone is not None)
    fmt = spec.timestamp_format
    parsed = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    # zoned and naive strings are parsed apart: one bad row never poisons the rest
    zoned = present & has_zone
    if zoned.any():
        parsed[zoned] = pd.to_datetime(text[zoned], errors="coerce", utc=True, format="ISO8601")
    naive = present & ~has_zone
    if naive.any():
        values = pd.to_datetime(text[naive], errors="coerce", format=fmt or "ISO8601")
        if spec.assume_timezone:
            values = values.dt.tz_localize(spec.assume_timezone, ambiguous="NaT", nonexistent="NaT")
            parsed[naive] = values.dt.tz_convert("UTC")
        else:
            parsed[naive] = values.dt.tz_localize("UTC")  # kept for ordering; flagged as naive
    ok = ~present | parsed.notna()
    return parsed, ok, aware | ~present | ~ok  # an unparseable value fails "parseable", not this


def table_rules(frame: pd.DataFrame, spec: TableSpec) -> list[Rule]:
    """Rules about the table as a whole, run on the raw frame."""
    # required columns, plus the optional ones that came; GX names what is missing or extra
    expected = sorted(c for c, r in spec.columns.items() if r.required or c in frame.columns)
    return [
        Rule("table: at least one row", "ExpectTableRowCountToBeBetween", {"min_value": 1}),
        Rule(
            "schema: columns match the spec" + ("" if spec.allow_extra_columns else " (no extras)"),
            "ExpectTableColumnsToMatchSet",
            {"column_set": expected, "exact_match": not spec.allow_extra_columns},
        ),
    ]


def prepare(frame: pd.DataFrame, spec: TableSpec, now: datetime | None = None) -> tuple[pd.DataFrame, list[Rule]]:
    """The frame GX sees (coerced values + helper columns) and the column rules to run on it;
    ``now`` (default: the clock) is what timestamps may not lie beyond."""
    import numpy as np
    import pandas as pd

    latest_ok = pd.Timestamp((now or datetime.now(UTC)) + FUTURE_TOLERANCE)

    rules: list[Rule] = []
    present_cols = set(frame.columns)

    out = pd.DataFrame(index=frame.index)
    for col, rule in spec.columns.items():
        if col not in present_cols:
            continue
        raw = frame[col]
        if rule.kind in ("number", "integer", "flag"):
            coerced = pd.to_numeric(raw, errors="coerce")
            finite = coerced.replace([np.inf, -np.inf], np.nan)
            bad = raw.notna() & finite.isna()
            helper = f"__{col}__is_number"
            out[helper] = ~bad
            out[col] = finite.astype(float)
            rules.append(
                Rule(
                    f"{col}: numeric (no text, no inf)",
                    "ExpectColumnValuesToBeInSet",
                    {"column": helper, "value_set": [True]},
                    col,
                )
            )
            rules.append(
                Rule(
                    f"{col}: not null" if rule.max_missing == 0 else f"{col}: at most {rule.max_missing:.1%} missing",
                    "ExpectColumnValuesToNotBeNull",
                    {"column": col, "mostly": 1 - rule.max_missing},
                    col,
                )
            )
            if rule.kind == "flag":
                rules.append(
                    Rule(
                        f"{col}: 0 or 1",
                        "ExpectColumnValuesToBeInSet",
                        {"column": col, "value_set": [0.0, 1.0]},
                        col,
                    )
                )
            elif rule.min is not None or rule.max is not None:
                rules.append(
                    Rule(
                        f"{col}: physical range [{_fmt(rule.min)}, {_fmt(rule.max)}]",
                        "ExpectColumnValuesToBeBetween",
                        {"column": col, "min_value": rule.min, "max_value": rule.max},
                        col,
                    )
                )
            if rule.kind == "integer":
                helper = f"__{col}__is_integer"
                out[helper] = finite.isna() | (finite == finite.round())
                rules.append(
                    Rule(
                        f"{col}: whole numbers",
                        "ExpectColumnValuesToBeInSet",
                        {"column": helper, "value_set": [True]},
                        col,
                    )
                )
        elif rule.kind == "category":
            values = list(rule.values or ())
            if all(isinstance(v, int) for v in values):
                out[col] = pd.to_numeric(raw, errors="coerce")
            else:
                out[col] = raw.astype("string").astype(object).where(raw.notna(), None)
            rules.append(Rule(f"{col}: not null", "ExpectColumnValuesToNotBeNull", {"column": col}, col))
            rules.append(
                Rule(
                    f"{col}: in {{{', '.join(map(str, values))}}}",
                    "ExpectColumnValuesToBeInSet",
                    {"column": col, "value_set": values},
                    col,
                )
            )
        elif rule.kind == "timestamp":
            parsed, ok, aware = _parse_timestamps(raw, spec)
            out[f"__{col}__parsed"] = ok
            out[f"__{col}__aware"] = aware
            rules.append(Rule(f"{col}: not null", "ExpectColumnValuesToNotBeNull", {"column": col}, col))
            out[col] = parsed
            rules.append(
                Rule(
                    f"{col}: parseable",
                    "ExpectColumnValuesToBeInSet",
                    {"column": f"__{col}__parsed", "value_set": [True]},
                    col,
                )
            )
            rules.append(
                Rule(
                    f"{col}: timezone-aware",
                    "ExpectColumnValuesToBeInSet",
                    {"column": f"__{col}__aware", "value_set": [True]},
                    col,
                )
            )
            helper = f"__{col}__not_future"
            out[helper] = parsed.isna() | (parsed <= latest_ok)
            rules.append(
                Rule(
                    f"{col}: not in the future (beyond {FUTURE_TOLERANCE.total_seconds() / 60:.0f} min of clock skew)",
                    "ExpectColumnValuesToBeInSet",
                    {"column": helper, "value_set": [True]},
                    col,
                )
            )
            group = spec.group_column if spec.group_column in present_cols else None
            keys = frame[group] if group else pd.Series(0, index=frame.index)
            # compare with the latest time seen so far on the line (skipping unparseable rows)
            latest = parsed.groupby(keys, sort=False).cummax()
            previous = latest.groupby(keys, sort=False).shift(1).groupby(keys, sort=False).ffill()
            monotonic = previous.isna() | parsed.isna() | (parsed >= previous)
            helper = f"__{col}__monotonic"
            out[helper] = monotonic
            per = f" per {group}" if group else ""
            rules.append(
                Rule(
                    f"{col}: never goes backwards{per}",
                    "ExpectColumnValuesToBeInSet",
                    {"column": helper, "value_set": [True]},
                    col,
                )
            )
        else:  # text
            out[col] = raw
            if rule.max_missing < 1:
                rules.append(
                    Rule(
                        f"{col}: not null",
                        "ExpectColumnValuesToNotBeNull",
                        {"column": col, "mostly": 1 - rule.max_missing},
                        col,
                    )
                )
    if spec.id_column and spec.id_column in present_cols:
        rules.append(
            Rule(
                f"{spec.id_column}: unique",
                "ExpectColumnValuesToBeUnique",
                {"column": spec.id_column},
                spec.id_column,
            )
        )
    for col in spec.increasing:
        if col in out.columns:
            rules.append(
                Rule(
                    f"{col}: strictly increasing",
                    "ExpectColumnValuesToBeIncreasing",
                    {"column": col, "strictly": True},
                    col,
                )
            )
    for rate in spec.rates:
        if rate.column in present_cols:
            helper = f"__rate__{rate.column}"
            positive = set(rate.positive)
            numeric = all(isinstance(p, int) for p in positive)
            values = pd.to_numeric(frame[rate.column], errors="coerce") if numeric else frame[rate.column]
            out[helper] = values.isin(positive).astype(float)
            lo, hi = rate.bounds
            n = max(int(frame[rate.column].notna().sum()), 1)
            z = 3.29  # 99.9 % two-sided: the batch is off only beyond its own sampling error
            lo_n = max(0.0, lo - z * (lo * (1 - lo) / n) ** 0.5)
            hi_n = min(1.0, hi + z * (hi * (1 - hi) / n) ** 0.5)
            label = rate.name or f"{rate.column} rate"
            rules.append(
                Rule(
                    f"{label}: within [{lo:.1%}, {hi:.1%}] (n={n}: [{lo_n:.2%}, {hi_n:.2%}])",
                    "ExpectColumnMeanToBeBetween",
                    {"column": helper, "min_value": lo_n, "max_value": hi_n},
                    rate.column,
                )
            )
    # pass-through columns not in the spec (learned bounds may use them), added in one go
    rest = [c for c in frame.columns if c not in out.columns]
    if rest:
        out = pd.concat([out, frame[rest]], axis=1)
    return out, rules


def learned_rules(frame: pd.DataFrame, profile: TableProfile) -> tuple[pd.DataFrame, list[Rule]]:
    """Mean and missing-rate rules for every column the profile learned."""
    import numpy as np
    import pandas as pd

    rules: list[Rule] = []
    for col, p in profile.columns.items():
        if col not in frame.columns:
            continue
        if not pd.api.types.is_float_dtype(frame[col]):
            frame[col] = pd.to_numeric(frame[col], errors="coerce").replace([np.inf, -np.inf], np.nan)
        rules.append(
            Rule(
                f"{col}: mean within learned [{p.mean_low:.6g}, {p.mean_high:.6g}]",
                "ExpectColumnMeanToBeBetween",
                {"column": col, "min_value": p.mean_low, "max_value": p.mean_high},
                col,
            )
        )
        rules.append(
            Rule(
                f"{col}: missing rate at most {p.max_missing_rate:.1%} (learned)",
                "ExpectColumnValuesToNotBeNull",
                {"column": col, "mostly": max(0.0, 1 - p.max_missing_rate)},
                col,
            )
        )
    return frame, rules


WIDE_TABLE_COLUMNS = 30


def learned_rules_wide(frame: pd.DataFrame, profile: TableProfile) -> tuple[pd.DataFrame, list[Rule]]:
    """Learned bounds of a wide table (SECOM: 590 columns) as three rules over a column-statistics
    table, one row per column: GX's cost is per expectation, so 1,200 single-column rules take a
    minute where these take a second. Failing rows name the columns."""
    import numpy as np
    import pandas as pd

    rows = []
    for col, p in profile.columns.items():
        if col not in frame.columns:
            continue
        values = pd.to_numeric(frame[col], errors="coerce").replace([np.inf, -np.inf], np.nan)
        rows.append(
            {
                "column": col,
                "mean": float(values.mean()) if values.notna().any() else np.nan,
                "mean_low": p.mean_low,
                "mean_high": p.mean_high,
                "missing_rate": float(values.isna().mean()),
                "max_missing_rate": p.max_missing_rate,
            }
        )
    stats = pd.DataFrame(rows)
    n = len(stats)
    rules = [
        Rule(
            f"learned: column means not below their bounds ({n} columns)",
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": "mean", "column_B": "mean_low", "or_equal": True, "ignore_row_if": "either_value_is_missing"},
            "mean",
        ),
        Rule(
            f"learned: column means not above their bounds ({n} columns)",
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": "mean_high", "column_B": "mean", "or_equal": True, "ignore_row_if": "either_value_is_missing"},
            "mean",
        ),
        Rule(
            f"learned: missing rates within their bounds ({n} columns)",
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": "max_missing_rate", "column_B": "missing_rate", "or_equal": True},
            "missing_rate",
        ),
    ]
    return stats, rules


def validate_table(
    frame: pd.DataFrame, spec: TableSpec, profile: TableProfile | None = None, now: datetime | None = None
) -> TableReport:
    """Every rule of ``spec`` (and of the learned ``profile``) on ``frame``: all collected, none
    short-circuits. ``now`` (default: the clock) bounds timestamps from the future."""
    results = run_rules(frame, table_rules(frame, spec), suite_name=f"{spec.name}-table")
    prepared, rules = prepare(frame, spec, now)
    if profile is not None and len(profile.columns) <= WIDE_TABLE_COLUMNS:
        prepared, more = learned_rules(prepared, profile)
        rules += more
    results += run_rules(prepared, rules, raw=frame, id_column=spec.id_column, suite_name=spec.name)
    if profile is not None and len(profile.columns) > WIDE_TABLE_COLUMNS:
        stats, wide = learned_rules_wide(frame, profile)
        results += run_rules(stats, wide, id_column="column", suite_name=f"{spec.name}-learned")
    return TableReport(table=spec.name, rows=len(frame), results=results)
