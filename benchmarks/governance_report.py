"""The cross-plant report with a champion at every plant (issue 8): 47 generated plants, each
with its own golden set (synthetic parts from its own camera and lighting), each with a
champion; `build_report` reads every champion's lineage, scores it on its own golden set (with
latency) and on every other plant's (the generalization matrix: 47 x 46 cells). A cell is kept
with the champion's version (weights and golden sets never change), so the daily report scores
only the rows of new champions and the columns of new golden sets: figures for the cold report,
the daily one, and one with a new champion.

One model is trained (the standard recipe, one epoch) and registered as the champion of every
plant: the report's cost is loading and scoring champions, not what they learned. The matrix
decodes each golden set once and shares it across models; the figure compares against the same
report without the matrix, in the same run.

Run: .venv/bin/python benchmarks/governance_report.py [--plants 47] [--golden 60]
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime

from _common import Recorder, isolated_home, peak_rss_mb


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plants", type=int, default=47)
    parser.add_argument("--golden", type=int, default=60, help="parts in each plant's golden set")
    args = parser.parse_args()
    tmp = isolated_home()
    import json

    from andon.governance.fleet import generate_plants

    fleet = tmp / "configs"
    ids = generate_plants(args.plants, fleet)
    os.environ["ANDON_CONFIGS_DIR"] = str(fleet)
    from andon.settings import reset_settings

    reset_settings()
    from andon.config import load_plant
    from andon.data.batches import parquet_to_frame
    from andon.data.datasets import build_manifest, save_manifest
    from andon.governance.report import build_report
    from andon.lifecycle.registry import CHAMPION, client, model_name, register_version, set_alias, version_info
    from andon.storage import open_store
    from andon.synth.plant import synthesize_plant
    from andon.training.run import train_plant

    rec = Recorder("governance_report")
    store = open_store()
    plants = [load_plant(p) for p in ids]
    t0 = time.perf_counter()
    golden: dict[str, str] = {}
    for i, cfg in enumerate(plants):
        batches = synthesize_plant(cfg, store, args.golden, seed=i, defect_rate=0.3, lines=[cfg.line_ids[0]],
                                   start=datetime(2026, 11, 1, tzinfo=UTC), batch_size=100_000, workers=1)  # fmt: skip
        objects = [
            {"key": r.image_key, "sha256": r.sha256, "label": r.label, "part_id": r.part_id}
            for b in batches
            for r in parquet_to_frame(store.get(b.metadata_key)).itertuples()
        ]
        manifest = build_manifest(cfg.id, objects, sources=[b.prefix for b in batches])
        save_manifest(store, manifest)
        golden[cfg.id] = manifest.id
        store.put(f"datasets/{cfg.id}/golden.json", json.dumps({"id": golden[cfg.id]}).encode(), "application/json")
    rec.figure("golden_sets_seconds", time.perf_counter() - t0, "s", plants=args.plants, parts_each=args.golden)

    t0 = time.perf_counter()
    first = plants[0]
    recipe = first.recipe.model_validate(
        first.recipe.model_dump() | {"training": first.recipe.training.model_dump() | {"epochs": 1}}
    )
    out = train_plant(store, first, [golden[first.id]], recipe=recipe)
    assert out.version is not None
    info = version_info(out.model_name, out.version)
    logged = client().get_model_version(out.model_name, str(out.version))  # the same logged model for all
    for cfg in plants:
        name = model_name(cfg.id, cfg.recipe.task)
        if name != out.model_name:
            tags = info.tags | {"plant": cfg.id}
            version = register_version(name, logged.source, info.run_id, tags, model_id=logged.model_id)
            set_alias(name, CHAMPION, version)
        else:
            set_alias(name, CHAMPION, out.version)
    rec.figure("champions_registered_seconds", time.perf_counter() - t0, "s", plants=args.plants)

    def timed(**kw: bool) -> tuple[float, object]:
        t0 = time.perf_counter()
        out = build_report(store, plants, **kw)
        return time.perf_counter() - t0, out

    no_matrix, report = timed(matrix=False)
    assert all(p.version for p in report.plants), "every plant has a champion"
    cold, report = timed()  # every cell scored (the first report of a fleet)
    cells = sum(len(row) for row in report.matrix.values())
    assert cells == args.plants**2, cells
    warm, again = timed()  # the daily report: cells of unchanged champions and golden sets are kept
    assert again.matrix == report.matrix
    # one plant promotes a new champion: its row is scored again, the rest is kept
    name = model_name(plants[0].id, plants[0].recipe.task)
    newer = register_version(name, logged.source, info.run_id, info.tags, model_id=logged.model_id)
    set_alias(name, CHAMPION, newer)
    changed, _ = timed()
    rec.figure("governance_report_with_champions_seconds", warm, "s", target="< 30", plants=args.plants,
               matrix_cells=cells, golden_parts=args.golden, note="daily: no champion changed")  # fmt: skip
    rec.figure("governance_report_one_new_champion_seconds", changed, "s", target="< 30", plants=args.plants)
    rec.figure("governance_report_cold_seconds", cold, "s", plants=args.plants, matrix_cells=cells,
               note="a fleet's first report: every cell scored, then kept with the version")  # fmt: skip
    rec.figure("report_without_matrix_seconds", no_matrix, "s", plants=args.plants,
               note="champions' lineage, own golden set with latency, alerts, drift")  # fmt: skip
    rec.figure("matrix_seconds_per_cell", (cold - no_matrix) / (cells - args.plants), "s")
    rec.figure("peak_rss_mb", peak_rss_mb(), "MB")
    rec.save()


if __name__ == "__main__":
    main()
