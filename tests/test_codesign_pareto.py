"""Pareto fronts and knee points against brute force and hand derivations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hwsim.codesign.pareto import knee_distances, knee_mask, pareto_front, pareto_mask


def brute_force_front(values: np.ndarray, directions: list[str]) -> np.ndarray:
    """Row i is on the front when no row j is at least as good everywhere and better somewhere."""
    signs = np.array([1.0 if d == "min" else -1.0 for d in directions])
    costs = values * signs
    on_front = []
    for i in range(len(costs)):
        dominated = False
        for j in range(len(costs)):
            if all(costs[j][c] <= costs[i][c] for c in range(costs.shape[1])) and any(
                costs[j][c] < costs[i][c] for c in range(costs.shape[1])
            ):
                dominated = True
                break
        on_front.append(not dominated)
    return np.array(on_front, dtype=bool)


@st.composite
def point_sets(draw):
    objectives = draw(st.integers(2, 4))
    count = draw(st.integers(0, 40))
    # Small integers make ties and duplicates common, the cases a front algorithm gets wrong.
    values = draw(arrays(np.float64, (count, objectives), elements=st.integers(0, 6).map(float)))
    directions = draw(st.lists(st.sampled_from(["min", "max"]), min_size=objectives, max_size=objectives))
    return values, directions


@settings(max_examples=300, deadline=None)
@given(point_sets())
def test_pareto_mask_matches_brute_force(case):
    values, directions = case
    assert np.array_equal(pareto_mask(values, directions), brute_force_front(values, directions))


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 30), st.just(3)), elements=st.floats(-1e6, 1e6, allow_nan=False)))
def test_pareto_mask_real_values(values):
    directions = ["min", "max", "min"]
    assert np.array_equal(pareto_mask(values, directions), brute_force_front(values, directions))


def test_pareto_mask_keeps_duplicates():
    values = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 3.0]])
    assert pareto_mask(values).tolist() == [True, True, False]


def test_pareto_mask_infinite_values():
    values = np.array([[np.inf, 1.0], [3.0, 2.0], [4.0, 1.0]])
    # Maximising the first column: inf beats everything there, and row 1 is beaten by row 0 on both.
    assert pareto_mask(values, ["max", "min"]).tolist() == [True, False, False]


def test_knee_of_symmetric_front():
    # Normalised to [0, 1]: (0, 1), (0.2, 0.2), (1, 0); distances to the ideal (0, 0) are 1, sqrt(0.08), 1.
    values = np.array([[0.0, 10.0], [2.0, 2.0], [10.0, 0.0]])
    distances = knee_distances(values, ["min", "min"])
    assert distances == pytest.approx([1.0, math.sqrt(0.08), 1.0])
    assert knee_mask(values, ["min", "min"]).tolist() == [False, True, False]


def test_knee_with_maximised_objective():
    # accuracy (max) and latency (min): normalised costs (0, 1), (0.25, 0.25), (1, 0).
    values = np.array([[90.0, 8.0], [87.5, 3.5], [80.0, 2.0]])
    distances = knee_distances(values, ["max", "min"])
    assert distances == pytest.approx([1.0, math.sqrt(0.125), 1.0])


def test_knee_ties_all_marked():
    values = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert knee_mask(values, ["min", "min"]).tolist() == [True, True]


def test_pareto_front_frame_drops_missing_rows():
    frame = pd.DataFrame({
        "name": ["a", "b", "c", "d"],
        "latency_s": [1.0, 2.0, np.nan, 3.0],
        "energy_j": [3.0, 1.0, 0.5, 4.0],
    })
    front = pareto_front(frame, {"latency_s": "min", "energy_j": "min"})
    assert front["name"].tolist() == ["a", "b"]
    assert front["knee"].tolist() == [True, True]


def test_pareto_front_needs_two_objectives():
    with pytest.raises(ValueError, match="two or more objectives"):
        pareto_front(pd.DataFrame({"x": [1.0]}), {"x": "min"})


def test_pareto_mask_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        pareto_mask(np.array([[1.0, np.nan]]))


def test_pareto_mask_rejects_bad_direction():
    with pytest.raises(ValueError, match="invalid direction 'lowest'"):
        pareto_mask(np.array([[1.0, 2.0]]), ["lowest", "min"])
