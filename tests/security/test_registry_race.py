"""Alias moves under a storm (issue 16, point 8): promotions and rollbacks from threads and from
other processes against a real MLflow SQLite store. Every sampled read, during and after, has a
champion and a different, existing previous champion; no move is lost (the moves chain from the
first champion to the last); a promotion decided against a champion that moved is refused, so a
promotion racing a rollback never drops the serving version out of the rollback chain."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from andon.errors import AndonError
from andon.lifecycle.registry import (
    CHAMPION,
    PREVIOUS,
    RegistryError,
    alias_version,
    champion_pair,
    client,
    move_champion,
    register_version,
    rollback_champion,
    set_alias,
)

pytestmark = pytest.mark.integration
NAME = "plant-b.surface-defects"
VERSIONS = (1, 2, 3, 4, 5)
LINEAGE = {
    "data.manifest_sha256": "0" * 64,
    "code.commit": "abc",
    "code.dirty": "false",
    "config.sha256": "1" * 64,
    "recipe": "standard-vision-v1",
    "plant": "plant-b",
}

# one storm worker: random promotions (decided against the champion it read, as the gate does) and
# rollbacks; prints every move it made and every pair it read, one JSON line each
WORKER = """
import json, random, sys
from andon.errors import AndonError
from andon.lifecycle.registry import champion_pair, move_champion, rollback_champion
name, seed, ops = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
for _ in range(ops):
    champion, previous = champion_pair(name)
    print(json.dumps({"read": [champion, previous]}), flush=True)
    try:
        if rnd.random() < 0.5:
            new = rnd.choice([v for v in (1, 2, 3, 4, 5) if v != champion])
            old = move_champion(name, new, expect=champion)
        else:
            old, new = rollback_champion(name)
        print(json.dumps({"move": [old, new]}), flush=True)
    except AndonError as exc:
        print(json.dumps({"refused": str(exc)}), flush=True)
"""


@pytest.fixture
def registry(andon_home: Path, mlflow_tracking_uri: str) -> str:
    import mlflow

    mlflow.set_experiment("race")
    for _ in VERSIONS:
        with mlflow.start_run() as run:
            mlflow.log_text("weights", "andon/state_dict.pt")
        register_version(NAME, f"runs:/{run.info.run_id}/andon", run.info.run_id, LINEAGE)
    set_alias(NAME, CHAMPION, 1)
    move_champion(NAME, 2)
    assert champion_pair(NAME) == (2, 1)
    return mlflow_tracking_uri


def _raw_aliases() -> tuple[int | None, int | None]:
    aliases = client().get_registered_model(NAME).aliases
    return (
        int(aliases[CHAMPION]) if CHAMPION in aliases else None,
        int(aliases[PREVIOUS]) if PREVIOUS in aliases else None,
    )


def _valid(pair: tuple[int | None, int | None] | list[int | None]) -> bool:
    champion, previous = pair
    return champion in VERSIONS and previous in VERSIONS and champion != previous


@pytest.mark.slow
def test_a_storm_of_promotions_and_rollbacks_keeps_one_champion_and_a_valid_rollback_target(
    registry: str, andon_home: Path
) -> None:
    start = champion_pair(NAME)[0]
    env = {**os.environ, "ANDON_HOME": str(andon_home), "ANDON_MLFLOW_TRACKING_URI": registry}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, NAME, str(seed), "12"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    moves: list[tuple[int | None, int]] = []
    reads: list[tuple[int | None, int | None]] = []
    refused: list[str] = []
    errors: list[BaseException] = []
    done = threading.Event()
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(12):
                champion, previous = champion_pair(NAME)
                with lock:
                    reads.append((champion, previous))
                try:
                    if rnd.random() < 0.5:
                        new = rnd.choice([v for v in VERSIONS if v != champion])
                        old = move_champion(NAME, new, expect=champion)
                    else:
                        old, new = rollback_champion(NAME)
                    with lock:
                        moves.append((old, new))
                except AndonError as exc:
                    with lock:
                        refused.append(str(exc))
        except BaseException as exc:  # surfaced below: a worker must not die silently
            errors.append(exc)

    def reader() -> None:
        while not done.is_set():
            pair = champion_pair(NAME)
            with lock:
                reads.append(pair)

    threads = [threading.Thread(target=worker, args=(s,)) for s in (10, 11, 12)]
    sampler = threading.Thread(target=reader)
    sampler.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outputs = [p.communicate(timeout=300) for p in procs]
    done.set()
    sampler.join()

    assert not errors, errors
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
        for line in out.splitlines():
            rec = json.loads(line)
            if "read" in rec:
                reads.append(tuple(rec["read"]))  # type: ignore[arg-type]
            elif "move" in rec:
                moves.append(tuple(rec["move"]))  # type: ignore[arg-type]
            else:
                refused.append(rec["refused"])

    bad = [r for r in reads if not _valid(r)]
    assert not bad, f"{len(bad)} of {len(reads)} reads had no valid champion / previous champion: {bad[:5]}"
    assert len(moves) >= 10, (moves, refused)  # the storm really moved things
    for reason in refused:  # the only refusals: a stale decision, or nothing to roll back to
        assert "changed from" in reason or "already the champion" in reason, reason

    final = champion_pair(NAME)
    assert _valid(final) and _raw_aliases() == final, "the MLflow aliases follow the committed pair"
    # no lost move: every move replaced the champion of the move before it, so the moves form one
    # chain from the first champion to the last (a lost update leaves a version replaced twice)
    balance: Counter[int | None] = Counter()
    for old, new in moves:
        balance[old] -= 1
        balance[new] += 1
    expected = Counter({final[0]: 1, start: -1}) if final[0] != start else Counter()
    assert +balance == +expected and -balance == -expected, (moves, start, final)


def test_a_promotion_decided_before_a_rollback_is_refused_and_keeps_the_rollback_chain(registry: str) -> None:
    # the gate read champion v2 and judged v3 against it; meanwhile an operator rolled back to v1
    judged_against = alias_version(NAME, CHAMPION)
    assert judged_against == 2
    assert rollback_champion(NAME) == (2, 1)
    with pytest.raises(RegistryError, match="changed from v2 to v1"):
        move_champion(NAME, 3, expect=judged_against)
    assert champion_pair(NAME) == (1, 2) == _raw_aliases()
    # decided against the serving version, the promotion keeps it as the rollback target
    assert move_champion(NAME, 3, expect=1) == 1
    assert champion_pair(NAME) == (3, 1) == _raw_aliases()
    assert rollback_champion(NAME) == (3, 1) and champion_pair(NAME) == (1, 3)


def test_a_move_that_crashed_after_its_commit_reads_consistent_and_is_repaired(
    registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import andon.lifecycle.registry as reg

    def crash(*_: object) -> None:
        raise KeyboardInterrupt("killed between the commit and the alias writes")

    with monkeypatch.context() as m:
        m.setattr(reg, "_put_alias", crash)
        with pytest.raises(KeyboardInterrupt):
            rollback_champion(NAME)
    # the aliases still say (2, 1); every Andon reader sees the committed rollback
    assert _raw_aliases() == (2, 1)
    assert champion_pair(NAME) == (1, 2)
    assert (alias_version(NAME, CHAMPION), alias_version(NAME, PREVIOUS)) == (1, 2)
    # the next move finishes the crashed one first, then moves
    assert move_champion(NAME, 4, expect=1) == 1
    assert champion_pair(NAME) == (4, 1) == _raw_aliases()


def test_moves_that_would_break_the_pair_are_refused(registry: str) -> None:
    with pytest.raises(RegistryError, match="cannot also be its previous champion"):
        set_alias(NAME, PREVIOUS, 2)
    with pytest.raises(RegistryError, match=r"does not exist|not found|RESOURCE"):
        move_champion(NAME, 99)
    assert rollback_champion(NAME, to=5) == (2, 5)
    with pytest.raises(RegistryError, match="already the champion"):
        rollback_champion(NAME, to=5)
    assert champion_pair(NAME) == (5, 2) == _raw_aliases()


@pytest.mark.slow
def test_on_postgresql_moves_hold_an_advisory_lock_that_every_worker_shares(
    andon_home: Path, postgres_database: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import psycopg2

    from andon.lifecycle.registry import _lock_id, alias_lock

    url = postgres_database("registry").replace("postgresql://", "postgresql+psycopg2://", 1)
    monkeypatch.setenv("ANDON_MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    mlflow.set_tracking_uri(url)
    try:
        mlflow.set_experiment("race")
        for _ in range(3):
            with mlflow.start_run() as run:
                pass
            register_version(NAME, f"runs:/{run.info.run_id}/andon", run.info.run_id, LINEAGE)
        with psycopg2.connect(url.replace("+psycopg2", "")) as other, other.cursor() as cur:
            other.autocommit = True

            def free() -> bool:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (_lock_id(NAME),))
                got = bool(cur.fetchone()[0])  # type: ignore[index]
                if got:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (_lock_id(NAME),))
                return got

            with alias_lock(NAME):
                assert not free(), "another worker cannot move this model's aliases meanwhile"
            assert free()
        move_champion(NAME, 1)
        move_champion(NAME, 2, expect=1)
        assert rollback_champion(NAME) == (2, 1)
        with pytest.raises(RegistryError, match="changed from v2 to v1"):
            move_champion(NAME, 3, expect=2)
        assert champion_pair(NAME) == (1, 2) == _raw_aliases()
    finally:
        mlflow.set_tracking_uri(None)
