"""Label efficiency (issue 7): accuracy against the number of labels for Andon's selection
(uncertainty + diversity: ``andon.labeling.queue.select``, the smallest margins, then k-center on the
penultimate-layer embedding) against random sampling, same budget steps, same seeds.

The casting set: the 6,633 training images are the unlabeled pool, the 715 test images the
yardstick, all at 64 x 64 grey. Each round trains small_cnn from scratch for a fixed number of
steps (the same for every strategy and budget, so only *which* parts were labeled differs); the
next picks come from that round's model. The all-labels model trains on the whole pool with the
same recipe. Figures: accuracy per budget and strategy (mean over seeds), the fewest labels that
come within 1 point of the all-labels accuracy, and labels random needs to match Andon's best.

Run: .venv/bin/python benchmarks/active_learning.py [--seeds 2] [--steps 400]
"""

from __future__ import annotations

import argparse
import time

from _common import CASTING, Recorder, train_small_cnn

SIZE = 64
BUDGETS = (100, 200, 400, 800, 1600)
START = 50  # the first labels are random for both strategies (there is no model yet)


def load(split: str):  # type: ignore[no-untyped-def]
    import numpy as np
    from PIL import Image

    xs, ys = [], []
    for label, folder in ((0, "ok_front"), (1, "def_front")):
        for path in sorted((CASTING / split / folder).glob("*.jpeg")):
            img = Image.open(path).convert("L").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
            xs.append(np.asarray(img, dtype=np.uint8))
            ys.append(label)
    return np.stack(xs), np.array(ys)


def train(x, y, steps: int, seed: int):  # type: ignore[no-untyped-def]
    return train_small_cnn(x, y, steps, seed)


def infer(model, x):  # type: ignore[no-untyped-def]
    import numpy as np
    import torch

    probs, embs = [], []
    with torch.inference_mode():
        for lo in range(0, len(x), 512):
            xb = torch.from_numpy(x[lo : lo + 512]).float().div(255).unsqueeze(1)
            feats = model.features(xb)
            probs.append(torch.softmax(model.head(feats), 1).numpy())
            embs.append(feats.numpy())
    return np.concatenate(probs), np.concatenate(embs)


def accuracy(model, x, y) -> float:  # type: ignore[no-untyped-def]
    probs, _ = infer(model, x)
    return float((probs.argmax(1) == y).mean())


def run(strategy: str, pool_x, pool_y, test_x, test_y, steps: int, seed: int) -> dict[int, float]:  # type: ignore[no-untyped-def]
    import numpy as np

    from andon.labeling.queue import select

    rng = np.random.default_rng(seed)
    labeled = list(rng.choice(len(pool_x), START, replace=False))
    out: dict[int, float] = {}
    model = train(pool_x[labeled], pool_y[labeled], steps, seed)
    for budget in BUDGETS:
        need = budget - len(labeled)
        rest = np.setdiff1d(np.arange(len(pool_x)), labeled)
        if strategy == "random":
            new = list(rng.choice(rest, need, replace=False))
        else:
            probs, emb = infer(model, pool_x[rest])
            top2 = np.sort(probs, 1)[:, -2:]
            margins = top2[:, 1] - top2[:, 0]
            new = [int(rest[i]) for i in select(margins, emb, need)]
        labeled += new
        model = train(pool_x[labeled], pool_y[labeled], steps, seed)
        out[budget] = accuracy(model, test_x, test_y)
    return out


def main() -> None:
    import numpy as np
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rec = Recorder("active_learning")
    if not (CASTING / "train").is_dir():
        raise SystemExit(f"the casting set is not at {CASTING}")
    t0 = time.perf_counter()
    pool_x, pool_y = load("train")
    test_x, test_y = load("test")
    rec.figure(
        "pool_images",
        len(pool_x),
        "images",
        test_images=len(test_x),
        seconds_to_load=round(time.perf_counter() - t0, 1),
    )

    t0 = time.perf_counter()
    full = [accuracy(train(pool_x, pool_y, args.steps, s), test_x, test_y) for s in range(args.seeds)]
    full_acc = float(np.mean(full))
    rec.figure("all_labels_accuracy", full_acc, "ratio", labels=len(pool_x), seeds=args.seeds, steps=args.steps)
    results: dict[str, dict[int, float]] = {}
    for strategy in ("andon", "random"):
        runs = [run(strategy, pool_x, pool_y, test_x, test_y, args.steps, s) for s in range(args.seeds)]
        results[strategy] = {b: float(np.mean([r[b] for r in runs])) for b in BUDGETS}
        for b in BUDGETS:
            rec.figure(f"accuracy_{strategy}_{b}_labels", results[strategy][b], "ratio",
                       share_of_pool=round(b / len(pool_x), 4))  # fmt: skip

    def first_reaching(strategy: str, target: float) -> int | None:
        return next((b for b in BUDGETS if results[strategy][b] >= target), None)

    within = first_reaching("andon", full_acc - 0.01)
    cap = int(0.3 * len(pool_x))
    rec.figure("andon_labels_within_1pt_of_all_labels", within or -1, "labels", target=f"<= {cap} (30 % of the pool)",
               note="-1: not reached at the largest budget")  # fmt: skip
    best = max(BUDGETS, key=lambda b: results["andon"][b])
    random_needed = first_reaching("random", results["andon"][best])
    best_acc = round(results["andon"][best], 4)
    rec.figure("random_labels_to_match_andon_best", random_needed or -1, "labels", andon_labels=best,
               andon_accuracy=best_acc, note="-1: random never gets there in these budgets")  # fmt: skip
    if within:
        r = first_reaching("random", full_acc - 0.01)
        rec.figure("random_vs_andon_labels_ratio_within_1pt", (r / within) if r else -1, "ratio", target=">= 2",
                   note="-1: random never got within 1 point in these budgets")  # fmt: skip
    rec.figure("benchmark_seconds", time.perf_counter() - t0, "s")
    rec.save()


if __name__ == "__main__":
    main()
