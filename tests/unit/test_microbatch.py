"""Micro-batching: concurrent requests share a forward pass, an error reaches every request of
its batch, a withdrawn request is not waited for. Deterministic: the fake model holds its first
batch until the test has seen the others queue."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
from conftest import wait_until

from andon.scoring.microbatch import MicroBatcher

pytestmark = pytest.mark.unit


class Held:
    """A model whose first forward pass waits for ``release``; records each batch's size."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sizes: list[int] = []

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.sizes:
            self.release.wait(30)
        self.sizes.append(len(images))
        flat = images.reshape(len(images), -1)[:, 0].astype(np.float32)
        return np.stack([flat, -flat], 1), np.zeros((len(images), 8), np.float32)


def test_requests_arriving_during_a_forward_pass_share_the_next_one() -> None:
    batcher, model = MicroBatcher(max_batch=64, wait_s=0.0), Held()
    results: dict[int, float] = {}

    def request(i: int) -> None:
        ticket = batcher.announce()
        probs, _ = batcher.predict(ticket, model, np.full((4, 4), i, np.uint8))
        results[i] = float(probs[0])

    first = threading.Thread(target=request, args=(0,))
    first.start()
    wait_until(lambda: batcher._running)
    others = [threading.Thread(target=request, args=(i,)) for i in range(1, 11)]
    for t in others:
        t.start()
    wait_until(lambda: len(batcher._queue) == 10)
    model.release.set()
    for t in [first, *others]:
        t.join(30)
    assert model.sizes == [1, 10] and batcher.batches == 2 and batcher.images == 11
    assert results == {i: float(i) for i in range(11)}  # each request got its own row


def test_a_failing_forward_pass_reaches_every_request_and_nobody_waits_for_a_withdrawn_one() -> None:
    class Broken:
        def predict(self, images: np.ndarray) -> Any:
            raise RuntimeError("runtime crashed")

    batcher = MicroBatcher(max_batch=8, wait_s=5.0)
    withdrawn = batcher.announce()  # a request refused on its way (a bad image)
    batcher.withdraw(withdrawn)
    batcher.withdraw(withdrawn)  # twice is harmless
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="runtime crashed"):
        batcher.predict(batcher.announce(), Broken(), np.zeros((2, 2), np.uint8))
    assert time.monotonic() - t0 < 4  # not the 5 s wait: nobody else was on the way
    assert batcher._announced == 0 and not batcher._running


def test_with_two_cores_two_batches_run_at_once_and_nothing_runs_twice() -> None:
    """``parallel=2``: a request queued while a batch runs leads a second batch at once (the fake
    model lets its first two passes through only together; with one batch at a time it would
    time out), and each request gets its own row, in no empty or repeated batch."""
    batcher = MicroBatcher(max_batch=64, wait_s=0.0, parallel=2)
    together = threading.Barrier(2, timeout=30)
    sizes: list[int] = []

    class Pair:
        def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            sizes.append(len(images))
            if len(sizes) <= 2:
                together.wait()
            flat = images.reshape(len(images), -1)[:, 0].astype(np.float32)
            return np.stack([flat, -flat], 1), np.zeros((len(images), 8), np.float32)

    results: dict[int, float] = {}

    def request(i: int) -> None:
        probs, _ = batcher.predict(batcher.announce(), Pair(), np.full((4, 4), i, np.uint8))
        results[i] = float(probs[0])

    first = threading.Thread(target=request, args=(0,))
    first.start()
    wait_until(lambda: batcher._running == 1 and not batcher._queue)
    rest = [threading.Thread(target=request, args=(i,)) for i in range(1, 6)]
    for t in rest:
        t.start()
    for t in [first, *rest]:
        t.join(30)
    assert results == {i: float(i) for i in range(6)}
    assert sum(sizes) == 6 and min(sizes) >= 1 and batcher.images == 6 and batcher._running == 0


def test_a_slot_freed_while_a_leader_gathers_goes_to_the_next_request_not_to_that_leader() -> None:
    """``parallel=2``: while A's leader gathers (waiting for a request still decoding), X's batch
    ends and frees its slot. Before: the slot went to A's own queued item, a thread already
    leading, so a request arriving while A's pass ran waited for A instead of taking the idle slot."""
    batcher = MicroBatcher(max_batch=64, wait_s=30.0, parallel=2)
    x_free, a_free = threading.Event(), threading.Event()

    class Model:
        def __init__(self, gate: threading.Event | None) -> None:
            self.gate = gate

        def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if self.gate is not None:
                assert self.gate.wait(30)
            return np.zeros((len(images), 2), np.float32), np.zeros((len(images), 8), np.float32)

    done: list[str] = []

    def request(name: str, model: Model) -> None:
        batcher.predict(batcher.announce(), model, np.zeros((4, 4), np.uint8))
        done.append(name)

    x = threading.Thread(target=request, args=("x", Model(x_free)))
    x.start()
    wait_until(lambda: batcher._running == 1 and not batcher._queue)  # X's pass is running
    decoding = batcher.announce()  # a request on its way: A's leader waits for it
    a = threading.Thread(target=request, args=("a", Model(a_free)))
    a.start()
    wait_until(lambda: batcher._running == 2 and len(batcher._queue) == 1)  # A leads, gathering
    x_free.set()
    wait_until(lambda: done == ["x"])
    assert batcher._running == 1  # only A's slot is held
    batcher.withdraw(decoding)  # A's pass starts, and is held
    wait_until(lambda: not batcher._queue)
    d = threading.Thread(target=request, args=("d", Model(None)))
    d.start()
    try:
        wait_until(lambda: "d" in done)  # D runs on the free slot while A's pass is still held
    finally:
        a_free.set()
    for t in (x, a, d):
        t.join(30)
    assert done == ["x", "d", "a"] and batcher._running == 0
