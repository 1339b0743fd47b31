"""The Great Expectations runner: one named expectation per rule, results a person can read.

Each :class:`Rule` wraps one GX expectation whose ``meta["rule"]`` is the rule's name, so a
failure names the rule ("Type: in {L, M, H}"), not an expectation class. Examples of failing
rows are taken from the original table (its id column and the offending raw value), not from
the derived helper columns some rules run on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

MAX_EXAMPLES = 10


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str  # GX expectation class name, e.g. "ExpectColumnValuesToBeBetween"
    kwargs: dict[str, Any]
    source_column: str | None = None  # the raw column examples are shown from


@dataclass
class RuleResult:
    rule: str
    expectation: str
    success: bool
    observed: Any = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def example_text(self, n: int = 3) -> str:
        """``UDI=11 Type=X; UDI=21 Type=X`` for a terminal."""

        def show(v: Any) -> str:
            v = jsonable(v)
            return f"{v:.6g}" if isinstance(v, float) else str(v)

        rows = [" ".join(f"{k}={show(v)}" for k, v in e.items()) for e in self.examples[:n]]
        more = f" (+{len(self.examples) - n} more examples)" if len(self.examples) > n else ""
        return "; ".join(rows) + more

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "expectation": self.expectation,
            "success": self.success,
            "observed": jsonable(self.observed),
            "unexpected_count": self.unexpected_count,
            "unexpected_percent": None if self.unexpected_percent is None else round(self.unexpected_percent, 4),
            "examples": [{k: jsonable(v) for k, v in e.items()} for e in self.examples],
            "error": self.error,
        }


def jsonable(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, list | dict | str):
        try:
            return value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float) and value != value:  # NaN
        return None
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


@lru_cache(maxsize=1)
def _batch_definition() -> Any:
    """One ephemeral GX context per process, with progress bars off."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX pins this module's logger to INFO and announces a throwaway docs folder on every start
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = ctx.data_sources.add_pandas("andon").add_dataframe_asset("frame")
    return asset.add_batch_definition_whole_dataframe("whole")


def _columns(rule: Rule) -> tuple[str, ...]:
    return tuple(str(rule.kwargs[k]) for k in ("column", "column_A", "column_B") if k in rule.kwargs)


def run_rules(
    frame: pd.DataFrame,
    rules: list[Rule],
    raw: pd.DataFrame | None = None,
    id_column: str | None = None,
    suite_name: str = "andon",
) -> list[RuleResult]:
    """Run ``rules`` on ``frame``; examples come from ``raw`` (default ``frame``).

    GX's cost per expectation grows with the width of the frame it is given (1.4 s for one
    not-null check on a 1M-row, 50-column frame; 0.1 s on that one column), so rules are run
    in one suite per column they read, each on just that column.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe

    if not rules:
        return []
    batch_definition = _batch_definition()  # creates the context suites need
    groups: dict[tuple[str, ...], list[Rule]] = {}
    for each in rules:
        groups.setdefault(_columns(each), []).append(each)
    validations = []
    for cols, group in groups.items():
        suite = gx.ExpectationSuite(name=f"{suite_name}:{','.join(cols) or 'table'}")
        for spec_rule in group:
            cls = getattr(gxe, spec_rule.kind)
            suite.add_expectation(cls(**spec_rule.kwargs, meta={"rule": spec_rule.name}))
        data = frame[list(dict.fromkeys(cols))] if cols else frame
        batch = batch_definition.get_batch(batch_parameters={"dataframe": data})
        result_format = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES}
        validations.extend(batch.validate(suite, result_format=result_format).results)
    by_name = {rule.name: rule for rule in rules}
    raw = frame if raw is None else raw
    out: list[RuleResult] = []
    for r in validations:
        name = (r.expectation_config.meta or {}).get("rule", r.expectation_config.type)
        rule: Rule | None = by_name.get(name)
        res = dict(r.result or {})
        exc = r.exception_info or {}
        error = None
        if isinstance(exc, dict) and exc.get("raised_exception"):
            error = str(exc.get("exception_message"))
        elif not res and not r.success:
            error = "the expectation could not be evaluated"
        examples: list[dict[str, Any]] = []
        for idx in res.get("partial_unexpected_index_list") or []:
            if idx in raw.index:
                row = raw.loc[idx]
                example: dict[str, Any] = {}
                if id_column and id_column in raw.columns:
                    example[id_column] = row[id_column]
                else:
                    example["row"] = idx
                if rule and rule.source_column and rule.source_column in raw.columns:
                    example[rule.source_column] = row[rule.source_column]
                examples.append(example)
        if not examples and res.get("partial_unexpected_list"):
            examples = [{"value": v} for v in res["partial_unexpected_list"][:MAX_EXAMPLES]]
        if not examples and res.get("details", {}).get("mismatched"):
            examples = [{k: v} for k, v in res["details"]["mismatched"].items()]
        out.append(
            RuleResult(
                rule=name,
                expectation=r.expectation_config.type,
                success=bool(r.success),
                observed=res.get("observed_value"),
                unexpected_count=res.get("unexpected_count"),
                unexpected_percent=res.get("unexpected_percent"),
                examples=examples,
                error=error,
            )
        )
    order = {rule.name: i for i, rule in enumerate(rules)}
    out.sort(key=lambda x: order.get(x.rule, len(order)))
    return out
