"""`andon label`: the review queue, exports and imports for labelling."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    pass

from andon.cli.common import JsonOption, duration, make_console, parse_time, print_json
from andon.cli.root import app

label_app = typer.Typer(
    help="Active learning: the label queue, Label Studio round trip, quick review.", no_args_is_help=True
)


app.add_typer(label_app, name="label")


@label_app.command("queue")
def label_queue(
    plant: Annotated[str, typer.Option(help="plant id")],
    window: Annotated[str, typer.Option(help="scoring window to pick from: 5m, 1h, 24h ...")] = "1h",
    at: Annotated[str | None, typer.Option(help="end of the window, ISO time (default: now)")] = None,
) -> None:
    """Queue the window's most uncertain, mutually different parts (daily budget) and every
    reviewed part the model got wrong (the monitor flow does this after each window).

    Example: andon label queue --plant plant-a --window 1h
    """
    from datetime import UTC

    from andon.config import load_plant
    from andon.labeling.queue import queue_window
    from andon.storage import open_store

    end = parse_time(at, "--at") or datetime.now(UTC)
    counts = queue_window(open_store(), load_plant(plant), end - duration(window), end)
    sys.stdout.write(f"queued {counts['uncertain']} uncertain and {counts['wrong']} reviewed-wrong parts\n")


@label_app.command("list")
def label_list(
    plant: Annotated[str, typer.Option(help="plant id")],
    status: Annotated[str | None, typer.Option(help="queued, labeled or used")] = None,
    days: Annotated[int, typer.Option(min=1, help="queued in the last N days")] = 30,
    as_json: JsonOption = False,
) -> None:
    """The label queue with each part's status (queued -> labeled -> used in a version).

    Example: andon label list --plant plant-a --status queued
    """
    from rich.table import Table

    from andon.config import load_plant
    from andon.labeling.queue import LabelQueue
    from andon.storage import open_store

    cfg = load_plant(plant)
    queue = LabelQueue(open_store(), cfg.id).status(days)
    if status:
        queue = queue[queue["status"] == status]
    if as_json:
        print_json(queue.astype(object).where(queue.notna(), None).to_dict(orient="records"))
        return
    table = Table(title=f"{cfg.id} label queue ({len(queue)} parts)")
    for col in ("part", "reason", "predicted", "confidence", "status", "label", "used in", "queued"):
        table.add_column(col)
    for r in queue.itertuples():
        conf = "" if r.confidence is None else f"{r.confidence:.3f}"
        label = r.label if isinstance(r.label, str) else ""
        used = r.used_in if isinstance(r.used_in, str) else ""
        table.add_row(r.part_id, r.reason, r.predicted_class, conf, r.status, label, used, str(r.queued_at)[:19])
    make_console().print(table)


@label_app.command("export")
def label_export(
    plant: Annotated[str, typer.Option(help="plant id")],
    out: Annotated[Path, typer.Argument(help="tasks JSON for Label Studio (the labeling config goes beside it)")],
    days: Annotated[int, typer.Option(min=1, help="queued in the last N days")] = 30,
) -> None:
    """Write the queued parts as Label Studio tasks (image URL + the model's prediction as
    pre-annotation) and the matching labeling config (<out>.xml).

    Example: andon label export --plant plant-a tasks.json
    """
    import json

    from andon.config import load_plant
    from andon.labeling.queue import LabelQueue, export_tasks, label_config
    from andon.storage import open_store

    cfg, store = load_plant(plant), open_store()
    tasks = export_tasks(store, cfg, LabelQueue(store, cfg.id).status(days))
    out.write_text(json.dumps(tasks, indent=1))
    out.with_suffix(".xml").write_text(label_config(cfg))
    sys.stdout.write(f"wrote {len(tasks)} tasks to {out} and the labeling config to {out.with_suffix('.xml')}\n")


@label_app.command("import")
def label_import(
    plant: Annotated[str, typer.Option(help="plant id")],
    path: Annotated[Path, typer.Argument(help="a Label Studio JSON export")],
) -> None:
    """Read a Label Studio export back into the review log (all or nothing: a bad task is named).

    Example: andon label import --plant plant-a project-1-at-2026-11-26.json
    """
    import json

    from andon.config import load_plant
    from andon.errors import DataError
    from andon.labeling.queue import import_annotations
    from andon.storage import open_store

    try:
        tasks = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON export ({str(exc)[:200]})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to be a Label Studio export") from None
    result = import_annotations(open_store(), load_plant(plant), tasks)
    sys.stdout.write(f"imported {result['imported']} labels ({result['skipped']} tasks without an annotation)\n")


@label_app.command("review")
def label_review(
    plant: Annotated[str, typer.Option(help="plant id")],
    reviewer: Annotated[str, typer.Option(help="who is labeling")],
    limit: Annotated[int, typer.Option(min=1, help="stop after this many parts")] = 50,
) -> None:
    """Label queued parts in the terminal: each part's image location and the model's guess; type
    a class (or its first letter), Enter to accept the guess, s to skip, q to stop.

    Example: andon label review --plant plant-a --reviewer j.doe
    """
    from datetime import UTC

    from andon.config import load_plant
    from andon.labeling.labels import ReviewLog
    from andon.labeling.queue import QUEUED, LabelQueue
    from andon.storage import open_store

    cfg, store = load_plant(plant), open_store()
    queue = LabelQueue(store, cfg.id).status()
    todo = queue[queue["status"] == QUEUED].head(limit)
    classes = list(cfg.recipe.classes)
    keys = {c[0]: c for c in classes} if len({c[0] for c in classes}) == len(classes) else {}
    done = 0
    for r in todo.itertuples():
        sys.stdout.write(
            f"\n{r.part_id}  ({r.reason})\n  image: {store.uri(r.object_key)}\n"
            f"  model {r.model}: {r.predicted_class} ({r.confidence:.2f})\n"
        )
        answer = typer.prompt(f"  label [{'/'.join(classes)}, Enter = {r.predicted_class}, s skip, q quit]",
                              default=r.predicted_class, show_default=False).strip()  # fmt: skip
        if answer == "q":
            break
        if answer == "s":
            continue
        label = keys.get(answer, answer)
        while label not in classes:
            answer = typer.prompt(f"  {answer!r} is not a class; one of {', '.join(classes)}").strip()
            label = keys.get(answer, answer)
        ReviewLog(store, cfg.id).append(
            [
                {
                    "part_id": r.part_id,
                    "label": label,
                    "reviewed_at": datetime.now(UTC),
                    "reviewer": reviewer,
                    "line": r.line,
                }
            ]
        )
        done += 1
    sys.stdout.write(f"\nlabeled {done} parts; they join the next dataset version when the plant retrains\n")
