"""Architecture claims: exactly one of many processes racing for an architecture (or for taking it over
from a holder that died) wins it."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from search.claims import Claims


def _race(folder: str, key: str, run_id: str, generation: int, barrier, results) -> None:
    barrier.wait()  # every process tries at the same instant
    results.put((run_id, Claims(folder).take(key, run_id, generation)))


@pytest.mark.parametrize("generation", [0, 1])
def test_exactly_one_of_many_processes_claims_an_architecture(tmp_path, generation):
    ctx = mp.get_context("spawn")
    n = 8
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_race, args=(str(tmp_path), "abc-setup", f"run{i}", generation, barrier, results))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    winners = [run_id for run_id, won in outcomes if won]
    assert len(winners) == 1
    assert Claims(tmp_path).holder("abc-setup") == (generation, winners[0])


def test_the_latest_generation_holds_the_claim(tmp_path):
    claims = Claims(tmp_path)
    assert claims.holder("k") is None
    assert claims.take("k", "first", 0) and not claims.take("k", "second", 0)
    assert claims.take("k", "second", 1)  # took over from a holder that died
    assert claims.holder("k") == (1, "second")
    with pytest.raises(ValueError, match="claim key"):
        claims.take("../escape", "x", 0)
