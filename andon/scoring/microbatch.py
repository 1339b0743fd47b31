"""Micro-batching for the online service: concurrent requests share one forward pass.

While fewer than ``parallel`` batches are running, the first queued request's thread is handed
the free slot and becomes a leader: it waits (at most ``wait_s``) only while requests already
admitted are still on their way (decoding), takes up to ``max_batch`` queued images, runs them as
one batch and hands each its row; every other thread sleeps on its own event until its result is
there or it is handed a slot (only the thread concerned wakes: with a shared condition every
queued request and every finished batch woke all of them, each taking the GIL to sleep again). One
client alone never waits (nobody else is on the way), many clients share forward passes, so
throughput grows with load instead of collapsing. With ``parallel`` = the cores and a runtime on
one thread per call, every core runs a batch of its own: no core waits for another to finish its
share of one batch. No thread of its own: a service scoring from one thread works the same.

    >>> import numpy as np
    >>> class Echo:
    ...     def predict(self, images):
    ...         return images.reshape(len(images), -1)[:, :2].astype(float), np.zeros((len(images), 8))
    >>> batcher = MicroBatcher(max_batch=8, wait_s=0.002)
    >>> ticket = batcher.announce()
    >>> probs, emb = batcher.predict(ticket, Echo(), np.full((2, 2), 3, np.uint8))
    >>> probs.tolist(), batcher.batches, batcher.images
    ([3.0, 3.0], 1, 1)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Item:
    champion: Any
    image: Any
    taken: bool = False  # in a running batch
    lead: bool = False  # handed a batch slot: its thread leads the next batch
    done: bool = False
    probs: Any = None
    emb: Any = None
    error: BaseException | None = None
    wake: threading.Event = field(default_factory=threading.Event)  # done, or elected to lead


@dataclass
class Ticket:
    """An admitted request's place among those on their way (:meth:`MicroBatcher.announce`)."""

    open: bool = True


@dataclass
class MicroBatcher:
    max_batch: int = 64
    wait_s: float = 0.004
    on_batch: Callable[[int, float], None] | None = None  # (batch size, seconds): metrics
    parallel: int = 1  # batches running at once
    batches: int = 0
    images: int = 0
    _queue: list[_Item] = field(default_factory=list)
    _announced: int = 0  # admitted requests not yet queued (decoding): worth waiting for
    _running: int = 0  # batches running
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def announce(self) -> Ticket:
        """A request was admitted and will :meth:`predict` with the ticket, or :meth:`withdraw` it
        (a refused image; withdrawing a used ticket does nothing, so callers withdraw in ``finally``)."""
        with self._cond:
            self._announced += 1
        return Ticket()

    def withdraw(self, ticket: Ticket) -> None:
        with self._cond:
            if ticket.open:
                ticket.open = False
                self._announced -= 1
                self._cond.notify_all()

    def predict(self, ticket: Ticket, champion: Any, image: Any) -> tuple[Any, Any]:
        """``champion.predict`` of one ``uint8 (H, W)`` image, batched with whatever else is
        queued; returns (probabilities row, embedding row)."""
        item = _Item(champion, image)
        with self._cond:
            if ticket.open:
                ticket.open = False
                self._announced -= 1
            self._queue.append(item)
            self._elect()
            self._cond.notify_all()  # leaders gathering a batch (at most ``parallel`` threads)
        while True:
            item.wake.wait()
            with self._cond:
                if item.done:
                    if item.lead:  # elected, but another leader already ran it: give the slot on
                        item.lead = False
                        self._release()
                    break
                item.wake.clear()  # under the lock, as every set is: no wake-up is lost
                if not item.lead:  # (woken only when done or elected)
                    continue
                # this thread leads with the slot it was handed; ``lead`` stays set until the slot is
                # given back, so a batch finishing meanwhile cannot hand it a second one
                deadline = time.monotonic() + self.wait_s
                while len(self._queue) < self.max_batch and self._announced > 0:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                for it in batch:
                    it.taken = True
            try:
                if batch:  # empty: another leader took them all while this one gathered
                    self._run(batch)
            finally:
                with self._cond:
                    item.lead = False
                    self._release()
        if item.error is not None:
            raise item.error
        return item.probs, item.emb

    def _elect(self) -> None:
        """Hand each free batch slot to the first queued request not leading yet (under the lock):
        only that thread wakes, not every waiting one."""
        for it in self._queue:
            if self._running >= max(1, self.parallel):
                return
            if not it.lead:
                it.lead = True
                self._running += 1
                it.wake.set()

    def _release(self) -> None:
        self._running -= 1
        self._elect()

    def _run(self, batch: list[_Item]) -> None:
        import numpy as np

        t0 = time.perf_counter()
        groups: dict[int, list[_Item]] = {}
        for it in batch:  # a promotion mid-batch: each request keeps the version it was admitted with
            groups.setdefault(id(it.champion), []).append(it)
        try:
            for items in groups.values():
                try:
                    probs, emb = items[0].champion.predict(np.stack([it.image for it in items]))
                    for j, it in enumerate(items):
                        it.probs, it.emb = probs[j], emb[j]
                except Exception as exc:  # every request of the batch hears it, none waits forever
                    for it in items:
                        it.error = exc
        finally:
            with self._cond:
                for it in batch:
                    if it.probs is None and it.error is None:
                        it.error = RuntimeError("the forward pass was interrupted")
                    it.done = True
                    it.wake.set()
                self.batches += 1
                self.images += len(batch)
        if self.on_batch is not None:
            try:
                self.on_batch(len(batch), time.perf_counter() - t0)
            except Exception:  # metrics must never fail a batch that has its results
                logging.getLogger(__name__).exception("micro-batch metrics callback failed")
