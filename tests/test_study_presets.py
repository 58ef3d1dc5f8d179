"""studies/presets.py: bits per parameter against hand derivations, the quoted values and their sources, and a --quick run.

Hand derivations used below. Llama-3-8B has hidden size 4096, MLP size
14336, 32 layers and 8 KV heads of 128 dimensions. Both sizes are
multiples of 32 and 128, so no group is partial.
- mxfp4: a 4-bit E2M1 code per element and an 8-bit E8M0 scale per 32
  (OCP MX v1.0), 4 + 8/32 = 4.25 bits;
- w4a16-g128: a 4-bit code per element and an fp16 scale per 128,
  4 + 16/128 = 4.125 bits;
- fp16 KV cache of one 2048-token sequence: 2 bytes x 2 (keys, values) x
  32 layers x 8 heads x 128 x 2048 = 268,435,456 bytes;
- kivi-kv2 at 2048 tokens: the 128 latest tokens in fp16 (16 bits), the
  other 1920 in 2 bits with an fp16 scale and an fp16 minimum per 32,
  (1920 x (2 + 32/32) + 128 x 16) / 2048 = 3.8125 bits per element.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hwsim.policy import PRESETS
from hwsim.report import bits_per_parameter_figure, per_token_figure

STUDY_PATH = Path(__file__).resolve().parents[1] / "studies" / "presets.py"


def load_study():
    spec = importlib.util.spec_from_file_location("presets_study", STUDY_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


study = load_study()


def test_bits_per_parameter_of_mxfp4_and_w4a16_g128():
    memory = study.memory_frame(["mxfp4", "w4a16-g128"], models=("llama-3-8b",)).set_index("policy")

    assert memory.loc["mxfp4", "bits_per_parameter"] == 4 + 8 / 32
    assert memory.loc["mxfp4", "element_bits_per_parameter"] == 4
    assert memory.loc["mxfp4", "scale_bits_per_parameter"] == 8 / 32
    assert memory.loc["w4a16-g128", "bits_per_parameter"] == 4 + 16 / 128
    assert memory.loc["w4a16-g128", "element_bits_per_parameter"] == 4
    assert memory.loc["w4a16-g128", "scale_bits_per_parameter"] == 16 / 128


def test_kv_cache_memory_of_fp16_and_kivi():
    memory = study.memory_frame(["fp16", "kivi-kv2"], models=("llama-3-8b",), context_tokens=2048).set_index("policy")

    assert memory.loc["fp16", "kv_cache_bytes"] == 2 * 2 * 32 * 8 * 128 * 2048
    assert memory.loc["fp16", "kv_cache_bits_per_element"] == 16
    assert memory.loc["kivi-kv2", "kv_cache_bits_per_element"] == (1920 * (2 + 32 / 32) + 128 * 16) / 2048
    # KIVI quantizes only the KV cache, so its weights stay in fp16.
    assert memory.loc["kivi-kv2", "bits_per_parameter"] == 16


def test_every_quoted_value_has_source_and_url():
    data = yaml.safe_load(study.PUBLISHED.read_text(encoding="utf-8"))["presets"]

    assert set(data) == set(PRESETS)
    quoted_count = 0
    for name, entry in data.items():
        quoted = entry.get("quoted") or []
        if not quoted:
            assert entry.get("not_found"), f"{name} has no quoted value and no not_found line"
        for item in quoted:
            quoted_count += 1
            assert item["source"].strip(), f"{name}: quoted value without a source"
            assert item["url"].startswith("https://"), f"{name}: quoted value without an https URL"
            assert item["model"] in ("Llama-2-7B", "Llama-3-8B")
            assert item["perplexity"] >= 1
            assert item["fp16_perplexity"] >= 1
            assert item["reported_by"].strip()
    assert quoted_count > 0


def test_published_table_has_both_models_per_preset():
    table = study.load_published()

    counts = table.groupby("policy")["model"].apply(set)
    assert set(counts.index) == set(PRESETS)
    assert all(models == {"Llama-2-7B", "Llama-3-8B"} for models in counts)
    missing = table[table["perplexity"].isna()]
    assert (missing["source"] == "not found here").all()
    assert missing["note"].str.len().gt(0).all()
    quoted = table[table["perplexity"].notna()]
    assert quoted["source"].str.startswith("quoted: ").all()


def test_published_entry_without_url_is_rejected(tmp_path):
    entry = {
        "model": "Llama-2-7B",
        "configuration": "FP16",
        "perplexity": 5.47,
        "fp16_perplexity": 5.47,
        "reported_by": "the scheme's authors",
        "source": "a table",
    }
    path = tmp_path / "published.yaml"
    path.write_text(yaml.safe_dump({"presets": {"fp16": {"quoted": [entry]}}}), encoding="utf-8")

    with pytest.raises(ValueError, match=r"presets\.fp16\.quoted\[0\] lacks url"):
        study.load_published(path, names=["fp16"])


def test_published_unknown_preset_is_rejected(tmp_path):
    path = tmp_path / "published.yaml"
    path.write_text(yaml.safe_dump({"presets": {"fp17": {"not_found": "searched nothing"}}}), encoding="utf-8")

    with pytest.raises(ValueError, match="unknown preset.*fp17"):
        study.load_published(path, names=[])


def test_bits_figure_rejects_wrong_parts():
    frame = pd.DataFrame({"policy": ["mxfp4"], "bits_per_parameter": [4.25], "element_bits_per_parameter": [4.0], "scale_bits_per_parameter": [0.5]})

    with pytest.raises(ValueError, match="add up to 4.5, not its bits_per_parameter 4.25"):
        bits_per_parameter_figure(frame)


def test_per_token_figure_rejects_two_models():
    frame = pd.DataFrame(
        {"policy": ["fp16", "fp16"], "accelerator": ["b200", "b200"], "model": ["llama-3-8b", "smollm2-135m"], "energy_j_per_token": [1.0, 0.1]}
    )

    with pytest.raises(ValueError, match="compares policies on one model, but the table has 2"):
        per_token_figure(frame)


def test_run_without_perplexity_skips_pareto(tmp_path):
    options = study.StudyOptions(study.QUICK_PRESETS, study.QUICK_ACCELERATORS, None)

    tables = study.run(tmp_path, options)

    assert tables["points"].empty
    measured = tables["perplexity"]["source"].str.startswith("measured here")
    assert not measured.any()
    page = (tmp_path / "dashboard.html").read_text(encoding="utf-8")
    assert "Stored bits per parameter of the linear layers, llama-3-8b" in page
    assert "Energy per token of llama-3-8b per policy and accelerator" in page
    assert "Pareto scatter: needs columns energy_j_per_token, perplexity" in page
    assert "<dt>measured here</dt><dd>not measured in this run</dd>" in page


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("presets")
    with pytest.MonkeyPatch.context() as patch:
        # A fresh result cache, so the perplexities are measured in this run.
        patch.setenv("HWSIM_CACHE_DIR", str(out / "cache"))
        patch.setenv("HF_HUB_OFFLINE", "1")
        status = study.main(["--quick", "--out", str(out)])
    return status, out


@pytest.mark.slow
def test_quick_run_writes_every_table(quick_run):
    status, out = quick_run

    assert status == 0
    for name in ("memory", "costs", "points", "perplexity", "presets"):
        assert (out / f"{name}.parquet").is_file()
    assert (out / "dashboard.html").is_file()


@pytest.mark.slow
def test_quick_run_costs_each_case_once(quick_run):
    _, out = quick_run
    costs = pd.read_parquet(out / "costs.parquet")

    expected = {
        (policy, model, accelerator, phase)
        for policy in study.QUICK_PRESETS
        for model in ("llama-3-8b", "smollm2-135m")
        for accelerator in study.QUICK_ACCELERATORS
        for phase in ("prefill", "decode")
    }
    keys = list(zip(costs["policy"], costs["model"], costs["accelerator"], costs["phase"]))
    assert len(keys) == len(set(keys))
    assert set(keys) == expected
    assert (costs["energy_j_per_token"] > 0).all()
    assert (costs["latency_s_per_token"] > 0).all()


@pytest.mark.slow
def test_quick_run_marks_emulation_on_h100(quick_run):
    _, out = quick_run
    costs = pd.read_parquet(out / "costs.parquet").set_index(["policy", "model", "phase"])

    # The H100 datasheet lists fp16, fp8 and int8 tensor-core rates and none for fp4, so mxfp4 needs emulation and fp16 does not.
    assert costs.loc[("mxfp4", "llama-3-8b", "decode"), "emulated"]
    assert "mxfp4" in costs.loc[("mxfp4", "llama-3-8b", "decode"), "emulation"]
    assert not costs.loc[("fp16", "llama-3-8b", "decode"), "emulated"]


@pytest.mark.slow
def test_quick_run_measures_perplexity_beside_quotes(quick_run):
    _, out = quick_run
    table = pd.read_parquet(out / "perplexity.parquet")

    measured = table[table["source"] == "measured here (SmolLM2-135M)"].set_index("policy")
    assert list(measured.index) == list(study.QUICK_PRESETS)
    assert measured["perplexity"].map(math.isfinite).all()
    assert (measured["fp16_perplexity"] == measured.loc["fp16", "perplexity"]).all()
    assert (measured["tokens"] == study.QUICK_TOKENS).all()
    # 2-bit keys and values and 4-bit weights and activations lose information that fp16 keeps.
    assert measured.loc["mxfp4", "perplexity"] > measured.loc["fp16", "perplexity"]
    assert measured.loc["kivi-kv2", "perplexity"] > measured.loc["fp16", "perplexity"]
    quoted = table[table["source"].str.startswith("quoted: ")]
    assert set(quoted["policy"]) == {"fp16"}
    points = pd.read_parquet(out / "points.parquet")
    assert set(points["policy"]) == set(study.QUICK_PRESETS)


@pytest.mark.slow
def test_quick_run_dashboard_names_its_figures(quick_run):
    _, out = quick_run
    page = (out / "dashboard.html").read_text(encoding="utf-8")

    for title in (
        "Stored bits per parameter of the linear layers, llama-3-8b",
        "Energy per token of llama-3-8b per policy and accelerator",
        "Latency per token of llama-3-8b per policy and accelerator",
        "SmolLM2-135M: perplexity measured here against decode energy per token",
        "Perplexity measured here and quoted from the sources",
    ):
        assert title in page, title
    assert 'id="page-errors" hidden' in page
    assert os.path.getsize(out / "dashboard.html") > 0
