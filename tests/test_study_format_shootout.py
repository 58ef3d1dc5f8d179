"""studies/format_shootout.py: cost tables on a subset of policies and accelerators, the policy mapping, and a --quick run.

Hand figures used below, for Llama-3-8B (models/llama-3-8b.json: 32
layers, hidden size 4096, vocabulary 128256, 8 KV heads of 128):

- the embedding table and the LM head hold 128256 x 4096 = 0.525e9
  parameters each; the block linear layers hold the rest of the 8.03e9
  parameters, less the norms;
- the KV cache stores 2 x 32 layers x 8 heads x 128 x 2 bytes = 128 KiB per
  position in fp16;
- decoding one token at batch 1 reads every linear weight once (the LM head
  too) and the KV cache, and only gathers one row of the embedding table.
"""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hwsim.report import roofline_figure
from hwsim.report.browser import find_chromium
from hwsim.workload import load_model, parameter_count

STUDIES = Path(__file__).resolve().parents[1] / "studies"
# The study's perplexity workers are spawned processes, which import it by module name.
sys.path.insert(0, str(STUDIES))
import format_shootout as study  # noqa: E402

COST_POLICIES = ("fp16", "w4a16-g128", "mxfp4", "quarot-w4a4kv4")
COST_ACCELERATORS = ("h100-sxm", "tpu-v1", "phone-npu-class")
PHASES = ("prefill", "decode", "prefill+decode")
FIGURES = ("Pareto scatter", "roofline", "energy breakdown", "latency per phase", "bit heat map", "format value grid", "qdq error histograms")


@functools.lru_cache(maxsize=1)
def _cost_tables() -> dict[str, pd.DataFrame]:
    return study.cost_tables(study.study_policies(COST_POLICIES), COST_ACCELERATORS)


def totals_row(accelerator: str, policy: str, phase: str = "decode") -> pd.Series:
    totals = _cost_tables()["totals"]
    rows = totals[(totals.accelerator == accelerator) & (totals.policy == policy) & (totals.phase == phase)]
    assert len(rows) == 1, (accelerator, policy, phase)
    return rows.iloc[0]


# Policies and their mapping to the accuracy path


def test_policies_have_one_name_each():
    policies = study.study_policies()
    assert [policy.name for policy in policies] == list(study.POLICY_NAMES)
    assert len(set(study.POLICY_NAMES)) == 9


def test_fp8_policy_is_e4m3_everywhere():
    (fp8,) = study.study_policies(("fp8",))
    assert study.role_formats(fp8) == {"weight": "fp8_e4m3_tensor", "activation": "fp8_e4m3_tensor", "kv_cache": "fp8_e4m3_tensor"}


def test_accuracy_config_carries_quarot_enablers():
    (quarot,) = study.study_policies(("quarot-w4a4kv4",))
    config = study.accuracy_config(quarot, calibration_tokens=512)
    assert (config.weight, config.activation, config.key, config.value) == ("int4_channel", "int4_token", "int4_asym_token", "int4_asym_token")
    assert config.rotate
    assert config.gptq
    assert config.smoothquant_alpha is None
    assert config.calibration_tokens == 512


def test_accuracy_config_carries_smoothquant():
    (int8,) = study.study_policies(("w8a8-smoothquant",))
    config = study.accuracy_config(int8, calibration_tokens=256)
    assert (config.weight, config.activation) == ("int8_channel", "int8_token")
    assert config.smoothquant_alpha == 0.5
    assert not config.gptq
    assert not config.rotate
    # The preset leaves the KV cache unquantized, which the cost model prices as fp16.
    assert (config.key, config.value) == ("fp16", "fp16")


def test_accuracy_config_rounds_unquantized_roles_to_fp16():
    (w4a16,) = study.study_policies(("w4a16-g128",))
    config = study.accuracy_config(w4a16)
    assert (config.weight, config.activation, config.key) == ("int4_g128", "fp16", "fp16")
    assert config.gptq


def test_accuracy_config_rejects_subsets():
    from hwsim.policy import preset

    with pytest.raises(ValueError, match="keeps a subset or a window"):
        study.accuracy_config(preset("atom-w4a4"))


# Cost tables


def test_totals_have_one_row_per_policy_accelerator_phase():
    totals = _cost_tables()["totals"]
    assert len(totals) == len(COST_POLICIES) * len(COST_ACCELERATORS) * len(PHASES)
    assert not totals.duplicated(["policy", "accelerator", "phase"]).any()
    assert set(totals.policy) == set(COST_POLICIES)
    assert set(totals.phase) == set(PHASES)


def test_ops_cover_every_configuration_and_phase():
    ops = _cost_tables()["ops"]
    counts = ops.groupby(["accelerator", "policy", "phase"]).size()
    assert len(counts) == len(COST_POLICIES) * len(COST_ACCELERATORS) * 2
    # The same Llama-3-8B workload gives every configuration the same ops.
    assert counts.nunique() == 1


def test_execution_names_emulated_formats():
    # accelerators/h100-sxm.yaml lists fp16, bf16, tf32, fp8, int8 and fp32 tensor-core rates and no FP4 or INT4.
    assert totals_row("h100-sxm", "fp16").execution == "native"
    assert totals_row("h100-sxm", "w4a16-g128").execution == "native"
    assert totals_row("h100-sxm", "mxfp4").execution == "emulated"
    assert "mxfp4" in totals_row("h100-sxm", "mxfp4").emulation_reason
    assert totals_row("h100-sxm", "quarot-w4a4kv4").execution == "emulated"
    # tpu-v1's PE multiplies int8 only, so even fp16 runs through its dequantize fallback.
    assert totals_row("tpu-v1", "fp16").execution == "emulated"
    # phone-npu-class has an fp16 x fp16 mode, which takes int4 weights widened to fp16.
    assert totals_row("phone-npu-class", "w4a16-g128").execution == "native"
    assert totals_row("h100-sxm", "fp16").emulation_reason == ""


def test_fits_column_follows_memory():
    # fp16 weights of about 16.1 GB exceed the phone's 8 GiB of LPDDR5, while w4a16-g128's 5.7 GB and
    # the 2176-position KV cache of 0.29 GB fit. H100 has 80 GiB.
    assert not totals_row("phone-npu-class", "fp16").fits
    assert totals_row("phone-npu-class", "w4a16-g128").fits
    assert totals_row("h100-sxm", "fp16").fits
    row = totals_row("phone-npu-class", "fp16")
    assert row.memory_capacity_bytes == 8 * 2**30
    assert row.peak_memory_bytes > row.memory_capacity_bytes


def test_w4a16_decode_energy_on_h100():
    spec = load_model("llama-3-8b")
    table = spec.vocab_size * spec.hidden_size
    norms = (2 * spec.num_layers + 1) * spec.hidden_size
    block_linear = parameter_count(spec) - 2 * table - norms
    # Positions attended on average over the 128 decode steps after 2048 cached tokens.
    kv_bytes = 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * 2 * (2048 + 63.5)
    # Bytes read per decoded token: block weights, the fp16 LM head (no preset quantizes it) and the KV cache.
    fp16_bytes = block_linear * 2 + table * 2 + kv_bytes
    w4a16_bytes = block_linear * 4.125 / 8 + table * 2 + kv_bytes
    byte_ratio = fp16_bytes / w4a16_bytes
    assert 3.0 < byte_ratio < 3.2

    fp16, w4a16 = totals_row("h100-sxm", "fp16"), totals_row("h100-sxm", "w4a16-g128")
    # Decode at batch 1 is bandwidth-bound, so DRAM energy and the static energy of the streaming time
    # both follow the bytes. Compute energy is under 2% of the total at fp16.
    assert fp16.compute_energy_j < 0.02 * fp16.energy_j
    energy_ratio = fp16.energy_j_per_token / w4a16.energy_j_per_token
    assert energy_ratio == pytest.approx(byte_ratio, rel=0.1)
    assert fp16.energy_j_per_token == pytest.approx(fp16.energy_j / 128)


def test_ops_carry_roofs_of_their_accelerator():
    ops = _cost_tables()["ops"]
    matmuls = ops[ops.macs > 0]
    assert np.isfinite(matmuls.peak_flops_per_s).all()
    bandwidth = matmuls.groupby("accelerator").dram_bandwidth_bytes_per_s.unique()
    # From the spec files: H100 HBM3 3.35 TB/s, TPU v1 DDR3 34 GB/s, the phone's LPDDR5 51.2 GB/s.
    assert list(bandwidth["h100-sxm"]) == [3.35e12]
    assert list(bandwidth["tpu-v1"]) == [34e9]
    assert list(bandwidth["phone-npu-class"]) == [51.2e9]


def test_roofline_places_ops_of_every_accelerator():
    # GPUs report HBM traffic and the others DRAM traffic, so the roofline takes each row's own level.
    figure = roofline_figure(_cost_tables()["ops"])
    placed = {trace.name for trace in figure.data if trace.mode == "markers"}
    assert placed == set(COST_ACCELERATORS)


# A whole --quick run: SmolLM2 perplexities, the tables on disk and the dashboard


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("format_shootout")
    png = out / "dashboard.png"
    argv = ["--quick", "--out", str(out)]
    if find_chromium() is not None:
        argv += ["--screenshot", str(png)]
    # An empty result cache makes the run measure every perplexity. The spawned workers inherit the variable.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HWSIM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        status = study.main(argv)
    assert status == 0
    tables = {path.stem: pd.read_parquet(path) for path in out.glob("*.parquet")}
    return out, tables


@pytest.mark.slow
def test_quick_run_writes_every_table(quick_run):
    _, tables = quick_run
    assert set(tables) == {"points", "ops", "totals", "perplexity", "bits", "format_values", "qdq_errors"}
    points = tables["points"]
    assert len(points) == len(study.QUICK_POLICY_NAMES) * len(study.QUICK_ACCELERATORS)
    assert not points.duplicated(["policy", "accelerator"]).any()
    assert len(tables["totals"]) == len(points) * len(PHASES)


@pytest.mark.slow
def test_quick_run_keeps_one_name_per_policy(quick_run):
    _, tables = quick_run
    names = set(study.QUICK_POLICY_NAMES)
    for name in ("points", "ops", "totals", "perplexity"):
        assert set(tables[name].policy) == names, name
    # Each policy has one perplexity, the same on every accelerator's point.
    points = tables["points"]
    assert (points.groupby("policy").perplexity.nunique() == 1).all()
    by_policy = tables["perplexity"].set_index("policy").perplexity
    assert points.set_index("policy").perplexity.to_dict() == by_policy.to_dict()


@pytest.mark.slow
def test_quick_run_perplexities_rank_formats(quick_run):
    _, tables = quick_run
    perplexity = tables["perplexity"].set_index("policy").perplexity
    assert all(math.isfinite(value) and value > 1 for value in perplexity)
    # int8 keeps 127 levels per sign with a scale per weight channel and per activation token, so after
    # SmoothQuant it should land within 10% of fp16. MXFP4 keeps 7 nonzero magnitudes under a power-of-two
    # scale per 32 elements, on weights and activations, and loses far more. Measured with these 128 tokens
    # in windows of 64: fp16 45.0, mxfp4 153.5.
    assert perplexity["w8a8-smoothquant"] == pytest.approx(perplexity["fp16"], rel=0.1)
    assert perplexity["mxfp4"] > 1.5 * perplexity["fp16"]
    assert (tables["perplexity"].tokens == study.QUICK_TOKENS).all()


@pytest.mark.slow
def test_quick_run_dashboard_has_every_figure(quick_run):
    out, _ = quick_run
    page = (out / "dashboard.html").read_text(encoding="utf-8")
    for figure in FIGURES:
        assert f'data-figure="{figure}"' in page, figure
        # The footer lists each figure not drawn as "<li>name: needs columns ...".
        assert f"<li>{figure}:" not in page, figure
    for title in ("Pareto front: perplexity against energy per token", "Roofline", "Energy by component", "Latency per phase"):
        assert title in page, title
    # The inputs at the top name the emulated and the unfit configurations.
    assert "mxfp4 on h100-sxm" in page
    assert "fp16 on phone-npu-class" in page


@pytest.mark.slow
def test_quick_run_screenshot(quick_run):
    out, _ = quick_run
    if find_chromium() is None:
        pytest.skip("no Chromium binary on PATH; install it with `apt-get update && apt-get install -y chromium`")
    png = out / "dashboard.png"
    # A PNG file starts with its 8-byte signature.
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv", [["--tokens", "1"], ["--calibration-tokens", "128"]])
def test_main_rejects_bad_token_counts(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        study.main(argv)
    assert exit_info.value.code == 2
    assert f"invalid {argv[0]} {argv[1]}" in capsys.readouterr().err
