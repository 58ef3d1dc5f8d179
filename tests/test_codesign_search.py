"""Multi-objective search with optuna: points agree with the grid, and the front keeps the grid's optima it found."""

from __future__ import annotations

import pandas as pd
import pytest

from hwsim.codesign import SweepSpec, run_sweep

optuna = pytest.importorskip("optuna", reason="the multi-objective search needs optuna: pip install optuna")

from hwsim.codesign.search import run_search  # noqa: E402

SPEC = {
    "name": "test-search",
    "model": "smollm2-135m",
    "accelerator": "tpu-v1",
    "policies": ["w8a8", "w4a8"],
    "hardware": {"array_size": [8, 16, 32], "sram_bytes": [65536, 262144], "pe.fallback": ["dequantize"]},
    "scenarios": [{"phase": "decode", "batch_size": 1, "context_tokens": 128, "generated_tokens": 2}],
    "objectives": {"latency_s": "min", "energy_j": "min", "area_mm2": "min"},
    "constraints": ["area_mm2 <= 3"],
    "evaluator": "systolic",
}
OBJECTIVES = ["latency_s", "energy_j", "area_mm2"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    return run_sweep(SweepSpec.from_dict(SPEC), tmp_path_factory.mktemp("grid") / "results.parquet", progress=False).table


def test_search_rows_equal_grid_rows(grid, tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = run_search(SweepSpec.from_dict(SPEC), tmp_path / "results.parquet", trials=8, population_size=4, seed=0)
    table = result.table
    assert 1 <= len(table) <= 8
    assert table["point_id"].is_unique
    expected = grid.set_index("point_id").loc[table["point_id"], ["point_index", *OBJECTIVES]].reset_index()
    pd.testing.assert_frame_equal(table[["point_id", "point_index", *OBJECTIVES]], expected)
    # A point on the grid's front is beaten by no point at all, so it is on the front of any subset it belongs to.
    grid_front = set(grid.loc[grid["pareto"], "point_id"])
    searched_front = set(table.loc[table["pareto"], "point_id"])
    assert grid_front & set(table["point_id"]) <= searched_front
    assert not (table["pareto"] & ~table["feasible"]).any()


def test_search_is_repeatable_and_resumes(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    first = run_search(SweepSpec.from_dict(SPEC), tmp_path / "a.parquet", trials=6, population_size=4, seed=3)
    second = run_search(SweepSpec.from_dict(SPEC), tmp_path / "b.parquet", trials=6, population_size=4, seed=3)
    assert first.table["point_id"].tolist() == second.table["point_id"].tolist()

    resumed = run_search(SweepSpec.from_dict(SPEC), tmp_path / "a.parquet", trials=12, population_size=4, seed=3, resume=True)
    assert set(first.table["point_id"]) <= set(resumed.table["point_id"])
    assert resumed.evaluated_points == len(resumed.table) - len(first.table)
