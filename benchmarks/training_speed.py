"""Training speed of the standard recipe's network (small_cnn, width 16, 96 px, batches of 16):
``andon.training.loop.fit`` (convolution weights in channels_last while it trains) against the
plain baseline, the same steps in PyTorch's default layout, side by side in one run, on 1 and 2
threads; and that fit still learns and hands the model back in the default layout (validation
accuracy after 3 epochs, over several seeds).

Images are synthetic and in memory (a bright square on noise is the "defect"), so the figures
are the network's training cost, not decoding or tracking (benchmarks/train_casting.py measures
those on the real casting set).

Run: .venv/bin/python benchmarks/training_speed.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import time

from _common import Recorder

SIZE, BATCH, WIDTH = 96, 16, 16


def images(n: int, seed: int):  # type: ignore[no-untyped-def]
    import numpy as np

    from andon.training.data import ImageSet

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(np.int64)
    imgs = rng.integers(0, 200, (n, SIZE, SIZE), dtype=np.uint8)
    for i in np.flatnonzero(labels):
        y, x = rng.integers(4, SIZE - 12, 2)
        imgs[i, y : y + 6, x : x + 6] = 255
    return ImageSet(imgs, labels, [str(i) for i in range(n)], [{}] * n)


def step_images_per_s(channels_last: bool, steps: int = 40, rounds: int = 3) -> float:
    """Bare training steps over one in-memory batch: best of ``rounds``."""
    import torch

    from andon.models import build_model
    from andon.training.loop import to_tensor

    torch.manual_seed(0)
    model = build_model("small_cnn", 1, 2, WIDTH)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = to_tensor(images(BATCH, 0).images)
    y = torch.randint(0, 2, (BATCH,))
    model.train()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        best = min(best, time.perf_counter() - t0)
    return steps * BATCH / best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    import torch

    from andon.config import TrainingSpec
    from andon.models import build_model
    from andon.training.loop import fit

    torch.use_deterministic_algorithms(True, warn_only=True)  # as fit runs: imports its machinery first
    rec = Recorder("training_speed")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        # each the best of two calls (of three rounds each): a busy moment of the machine only slows one
        plain = max(step_images_per_s(False) for _ in range(2))
        last = max(step_images_per_s(True) for _ in range(2))
        rec.figure(f"train_step_default_layout_{threads}t", plain, "images/s", note="the plain baseline")
        rec.figure(f"train_step_channels_last_{threads}t", last, "images/s")
        rec.figure(f"train_step_speedup_{threads}t", last / plain, "x", target="> 1 (same function)")

    torch.set_num_threads(1)
    accs, rates = [], []
    for seed in range(args.seeds):
        spec = TrainingSpec(epochs=3, batch_size=BATCH, seed=seed)
        model = build_model("small_cnn", 1, 2, WIDTH)
        result = fit(model, images(400, 100 + seed), images(200, 200 + seed), spec, lambda image: {"image": image})
        accs.append(result.history[-1].val_accuracy)
        rates.append(sum(h.images_per_s for h in result.history) / len(result.history))
        layout = "default" if model.body[0].weight.is_contiguous() else "channels_last"
        rec.figure("fit_val_accuracy", accs[-1], "ratio", seed=seed, layout_after_fit=layout)
    rec.figure("fit_images_per_s_1t", sum(rates) / len(rates), "images/s", seeds=args.seeds,
               note="andon's fit: augmentation callback, loss bookkeeping, one epoch's steps")  # fmt: skip
    rec.figure("fit_val_accuracy_min", min(accs), "ratio", seeds=args.seeds)
    rec.save()


if __name__ == "__main__":
    main()
