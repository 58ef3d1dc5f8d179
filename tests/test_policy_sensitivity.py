"""Sensitivity measures on real torch models: output error, Fisher information and Hutchinson Hessian traces.

The Llama here is built offline from transformers.LlamaConfig with random
weights (seed 0); all-MiniLM-L6-v2 is the real encoder from hwsim.assets.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from hwsim import formats
from hwsim.policy import Quantizer, Subset
from hwsim.policy.sensitivity import (
    causal_lm_loss,
    fisher_information,
    fisher_sensitivity,
    group_salience,
    hawq_sensitivity,
    hessian_traces,
    hutchinson_trace,
    linear_layers,
    output_error,
    sensitivity_matrix,
)


def _llama(hidden_size: int, heads: int, kv_heads: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        vocab_size=64,
        max_position_embeddings=64,
        # Hessian-vector products differentiate twice, which torch's fused CPU attention does not support.
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(config).eval()
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 64, (2, 16), generator=generator) for _ in range(2)]
    return model, batches


@pytest.fixture(scope="module")
def tiny_llama():
    return _llama(32, 4, 2)


def test_linear_layers_of_llama(tiny_llama):
    model, _ = tiny_llama
    layers = linear_layers(model)

    assert len(layers) == 2 * 7
    assert "lm_head" not in layers
    assert "model.layers.1.mlp.down_proj" in layers
    assert "lm_head" in linear_layers(model, skip_lm_head=False)


def test_layer_output_error_matches_hand_computation(tiny_llama):
    model, batches = tiny_llama
    frame = output_error(model, batches, ["int4_g32", "int8_channel"])
    name = "model.layers.1.self_attn.v_proj"
    module = dict(model.named_modules())[name]
    captured = []
    handle = module.register_forward_hook(lambda m, inputs, output: captured.append(inputs[0].reshape(-1, 32)))
    with torch.no_grad():
        for batch in batches:
            model(batch)
    handle.remove()
    x = torch.cat(captured).double()
    weight = module.weight.detach()
    reference = x @ weight.double().T
    quantized = formats.qdq(weight, "int4_g32").double()
    expected = float(((reference - x @ quantized.T) ** 2).sum() / (reference**2).sum())

    row = frame[(frame.layer == name) & (frame.format == "int4_g32")].iloc[0]
    assert row.output_error == pytest.approx(expected, rel=1e-9)
    assert row.layer_index == 1
    assert len(frame) == 14 * 2


def test_more_bits_less_error_every_layer(tiny_llama):
    model, batches = tiny_llama
    frame = output_error(model, batches, ["int4_g32", "int8_channel"])
    table = frame.pivot(index="layer", columns="format", values="output_error")

    assert (table["int8_channel"] < table["int4_g32"]).all()


def test_model_scope_error(tiny_llama):
    model, batches = tiny_llama
    layers = {name: module for name, module in linear_layers(model).items() if name.startswith("model.layers.0.")}
    frame = output_error(model, batches, ["fp32", "int4_g32", "int8_channel"], layers=layers, scope="model")
    table = frame.pivot(index="layer", columns="format", values="output_error")

    # fp32 qdq of fp32 weights is exact, so the logits do not move.
    assert (table["fp32"] == 0).all()
    assert (table["int8_channel"] < table["int4_g32"]).all()
    # The model's weights are restored after each trial.
    again = output_error(model, batches, ["fp32"], layers=layers, scope="model")
    assert (again.output_error == 0).all()


def test_output_error_with_subset_quantizer(tiny_llama):
    model, batches = tiny_llama
    plain = Quantizer("int4_g32")
    mixed = Quantizer("int4_g32", subset=Subset("outlier_channels", "fp16", count=8, selection="weight_magnitude"))
    frame = output_error(model, batches, [plain, mixed])

    assert set(frame.format) == {"int4_g32"}
    assert len(frame) == 28


def test_fisher_matches_per_sample_gradients():
    # y = w . x with loss (y - t)^2 / 2: the gradient is (y - t) x, so F = sum over samples of ((w . x - t) x)^2.
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False)
    samples = [(torch.randn(1, 3), torch.randn(1, 1)) for _ in range(5)]

    def loss_fn(module, batch):
        x, target = batch
        return ((module(x) - target) ** 2).sum() / 2

    fisher = fisher_information(model, loss_fn, samples, layers={"linear": model})["linear"]
    weight = model.weight.detach().double()
    expected = torch.zeros(1, 3, dtype=torch.float64)
    for x, target in samples:
        residual = float(x.double() @ weight.T - target.double())
        expected += (residual * x.double()) ** 2

    assert torch.allclose(fisher, expected, rtol=1e-6)


def test_fisher_sensitivity_weights_squared_error(tiny_llama):
    model, batches = tiny_llama
    layers = linear_layers(model)
    fisher = fisher_information(model, causal_lm_loss, batches[:1], layers=layers)
    frame = fisher_sensitivity(layers, fisher, ["int4_g32"])
    name = "model.layers.0.mlp.up_proj"
    weight = layers[name].weight.detach()
    expected = float((fisher[name] * (weight.double() - formats.qdq(weight, "int4_g32").double()) ** 2).sum())

    assert frame[frame.layer == name].fisher_sensitivity.iloc[0] == pytest.approx(expected, rel=1e-9)
    assert (frame.fisher_sensitivity > 0).all()


def test_hutchinson_exact_for_diagonal_hessian():
    # loss = sum(d * p^2) / 2 has Hessian diag(d); Rademacher v gives v^T H v = sum(d) in every sample.
    diagonal = torch.linspace(-1.0, 3.0, 10, dtype=torch.float64)
    parameter = torch.randn(10, dtype=torch.float64, requires_grad=True)
    loss = (diagonal * parameter**2).sum() / 2

    (mean, stderr), = hutchinson_trace(loss, [parameter], samples=8)

    assert mean == pytest.approx(float(diagonal.sum()), abs=1e-12)
    assert stderr == pytest.approx(0.0, abs=1e-12)


def test_hutchinson_unbiased_for_dense_hessian():
    generator = torch.Generator().manual_seed(4)
    root = torch.randn(12, 12, generator=generator, dtype=torch.float64)
    matrix = (root + root.T) / 2
    parameter = torch.randn(12, dtype=torch.float64, requires_grad=True)
    loss = parameter @ matrix @ parameter / 2

    (mean, stderr), = hutchinson_trace(loss, [parameter], samples=2000, seed=5)

    # Five standard errors: a false failure has odds below one in a million.
    assert stderr > 0
    assert abs(mean - float(torch.trace(matrix))) < 5 * stderr


def test_hessian_trace_of_llama_layer_against_exact():
    # A smaller Llama, so the exact trace takes one Hessian-vector product per weight of v_proj [8, 16].
    model, batches = _llama(16, 2, 1)
    name = "model.layers.1.self_attn.v_proj"
    layer = {name: dict(model.named_modules())[name]}
    weight = layer[name].weight
    loss = causal_lm_loss(model, batches[0])
    (gradient,) = torch.autograd.grad(loss, weight, create_graph=True)
    exact = 0.0
    for i in range(weight.numel()):
        unit = torch.zeros(weight.numel())
        unit[i] = 1.0
        (product,) = torch.autograd.grad(gradient, weight, grad_outputs=unit.reshape(weight.shape), retain_graph=True)
        exact += float(product.reshape(-1)[i])
    model.zero_grad(set_to_none=True)

    frame = hessian_traces(model, causal_lm_loss, batches[0], layers=layer, samples=150, seed=7)
    row = frame.iloc[0]

    assert row.parameters == 8 * 16
    # The estimate is informative (standard error under 20% of the trace) and agrees within five standard errors.
    assert row.trace_stderr < 0.2 * abs(exact)
    assert abs(row.hessian_trace - exact) < 5 * row.trace_stderr
    assert row.mean_trace == pytest.approx(row.hessian_trace / 128)


def test_hawq_sensitivity(tiny_llama):
    model, batches = tiny_llama
    layers = {name: module for name, module in linear_layers(model).items() if name.endswith("o_proj")}
    traces = hessian_traces(model, causal_lm_loss, batches[0], layers=layers, samples=8)
    frame = hawq_sensitivity(layers, traces, ["int4_g32", "int8_channel"])
    name = "model.layers.0.self_attn.o_proj"
    weight = layers[name].weight.detach()
    error = float(((weight.double() - formats.qdq(weight, "int8_channel").double()) ** 2).sum())
    mean_trace = traces.set_index("layer").mean_trace[name]

    row = frame[(frame.layer == name) & (frame.format == "int8_channel")].iloc[0]
    assert row.hawq_sensitivity == pytest.approx(mean_trace * error, rel=1e-12)


def test_group_salience_sums_groups():
    weight = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, -1.0]])
    diagonal = torch.tensor([1.0, 10.0, 100.0])

    # Groups of 2: columns (0, 1) and (2, padding).
    expected = torch.tensor([[1 + 40.0, 900.0], [10.0, 100.0]], dtype=torch.float64)
    assert torch.equal(group_salience(weight, diagonal, 2), expected)


def test_sensitivity_matrix_pivots_and_checks():
    frame = pd.DataFrame(
        {"layer": ["b", "b", "a", "a"], "format": ["x", "y", "x", "y"], "error": [1.0, 2.0, 3.0, 4.0]},
    )

    layers, names, matrix = sensitivity_matrix(frame, "error", formats=["y", "x"])
    assert layers == ["b", "a"]
    assert names == ["y", "x"]
    assert matrix.tolist() == [[2.0, 1.0], [4.0, 3.0]]
    with pytest.raises(ValueError, match="no error for layer 'b' and format 'z'"):
        sensitivity_matrix(frame, "error", formats=["x", "z"])


@pytest.mark.slow
def test_minilm_output_error_real_weights():
    from transformers import AutoModel, AutoTokenizer

    from hwsim.assets import minilm_dir

    folder = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    batch = dict(tokenizer(["Number formats decide what a model can represent.", "The KV cache grows with context."], return_tensors="pt", padding=True))
    frame = output_error(model, [batch], ["int4_g32", "int8_channel"])
    table = frame.pivot(index="layer", columns="format", values="output_error")

    # Six BERT layers with query, key, value, attention output, intermediate and output dense layers, plus the pooler.
    assert len(table) == 6 * 6 + 1
    assert sorted(set(frame.layer_index.dropna().astype(int))) == list(range(6))
    assert (table["int8_channel"] < table["int4_g32"]).all()
    assert math.isfinite(table.to_numpy().sum())
