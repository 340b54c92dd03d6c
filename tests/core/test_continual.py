"""The continual-merging result's curves (mean and spread over orders) and the random orders."""

from __future__ import annotations

import math

import pytest

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.explore.continual import ArrivalScores, ContinualResult, check_orders, random_orders


def make_result() -> ContinualResult:
    result = ContinualResult([[0, 1, 2], [2, 1, 0]], ["a", "b", "c"], ["ta", "tb", "tc"], 0.5)
    events = [
        ArrivalScores(0, 1, "a", {"ta": 0.9}),
        ArrivalScores(0, 2, "b", {"ta": 0.8, "tb": 0.7}),
        ArrivalScores(0, 3, "c", {"ta": 0.7, "tb": 0.6, "tc": 0.5}),
        ArrivalScores(1, 1, "c", {"tc": 0.6}),
        ArrivalScores(1, 2, "b", {"tb": 0.8, "tc": 0.4}),
        ArrivalScores(1, 3, "a", {"ta": 0.5, "tb": 0.6, "tc": 0.3}),
    ]
    for event in events:
        result.add(event)
    return result


def test_curves_are_means_over_the_orders_that_have_a_value():
    result = make_result()
    average = result.curve(None)
    assert average.steps == [1, 2, 3] and average.count == [2, 2, 2]
    assert average.mean == pytest.approx([0.75, 0.675, 0.5333333333])
    assert average.std[0] == pytest.approx(math.sqrt(((0.9 - 0.75) ** 2 + (0.6 - 0.75) ** 2) / 1))  # sample std (n − 1)
    ta = result.curve("ta")  # arrives at step 1 in order 1 only, at step 3 in order 2
    assert ta.steps == [1, 2, 3] and ta.count == [1, 1, 2] and ta.std[:2] == [0.0, 0.0]
    assert ta.mean == pytest.approx([0.9, 0.8, 0.6])
    tb = result.curve("tb")
    assert tb.steps == [2, 3] and tb.mean == pytest.approx([0.75, 0.6])


def test_rows_and_summary():
    result = make_result()
    rows = result.rows()
    assert len(rows) == 6 and rows[0] == {"order": 1, "step": 1, "arrived": "a", "ta": 0.9, "tb": None, "tc": None, "average": 0.9}
    summary = result.summary_rows()
    assert [r["step"] for r in summary] == [1, 2, 3]
    assert summary[0]["tb"] is None and summary[0]["tb orders"] == 0 and summary[1]["tb orders"] == 2
    csv_rows = result.csv_rows()
    assert [r["order"] for r in csv_rows[6:]] == ["mean", "std"] * 3


def test_random_orders_are_distinct_seeded_and_bounded():
    orders = random_orders(4, 10, seed=1)
    assert len({tuple(o) for o in orders}) == 10 and all(sorted(o) == [0, 1, 2, 3] for o in orders)
    assert orders == random_orders(4, 10, seed=1) and orders != random_orders(4, 10, seed=2)
    assert len({tuple(o) for o in random_orders(3, 6)}) == 6  # every order
    many = random_orders(9, 5, seed=3)  # drawn, not enumerated
    assert len({tuple(o) for o in many}) == 5 and all(sorted(o) == list(range(9)) for o in many)
    with pytest.raises(OsrmError, match="cannot draw 7"):
        random_orders(3, 7)
    with pytest.raises(OsrmError, match="must list each"):
        check_orders([[0, 0]], 2)
