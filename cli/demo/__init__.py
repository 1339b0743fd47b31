"""`andon demo`: a day in the life of three plants (the story: `cli.demo.story`, its chapters: `cli.demo.chapters`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from andon.cli.common import make_console
from andon.cli.root import app


@app.command()
def demo(
    casting: Annotated[
        Path | None, typer.Option(help="the casting image set (default: ../shared/data/casting beside the checkout)")
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="the same story on less data (about 4 minutes on 2 cores)")
    ] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="forget the progress of an earlier run; start over")] = False,
    day: Annotated[
        str, typer.Option(help="the day the story happens on (fixed: results never follow the calendar)")
    ] = ("2026-11-26"),
    seed: Annotated[
        int, typer.Option(min=0, max=10_000, help="shifts every synthetic plant's and the training seed")
    ] = 0,
) -> None:
    """A day in the life of three plants, end to end, on the embedded defaults: data through the
    gate, central baseline, fine-tuned champions, scored production with explanations, a drift
    alert whose event retrains through Prefect, an MES event through the signed gateway, a bad
    version rolled back, an explanation, the governance report. Resumable: a re-run skips the
    chapters already done and prints the summary.

    Example: andon demo --quick
    """
    from andon.cli.demo.story import run_demo
    from andon.settings import REPO_ROOT

    casting = casting or REPO_ROOT.parent / "shared" / "data" / "casting"
    run_demo(make_console(), casting=casting, quick=quick, fresh=fresh, day=day, seed=seed)
