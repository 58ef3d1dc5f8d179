"""Op graphs of real configs: shapes, MACs, tensor roles, attention masks, MoE routing."""

from __future__ import annotations

import functools

import pytest

from hwsim.workload import Scenario, build_workload, forward_ops, load_model, parameters


@functools.cache
def spec(name):
    return load_model(name)


def op_named(ops, name):
    matches = [op for op in ops if op.name == name]
    assert len(matches) == 1, f"expected one op {name!r}, found {len(matches)}"
    return matches[0]


def tensor_named(op, name):
    matches = [t for t in op.tensors if t.name == name]
    assert len(matches) == 1, f"expected one tensor {name!r} in {op.name}, found {len(matches)}"
    return matches[0]


def test_decode_attention_reads_kv_cache_with_kv_heads():
    llama3 = spec("llama-3-8b")  # 32 query heads, 8 KV heads, head dim 128
    workload = build_workload(llama3, Scenario.decode(batch_size=4, context_tokens=100, generated_tokens=1))

    scores = op_named(workload.ops, "layers.*.self_attn.scores")
    context = op_named(workload.ops, "layers.*.self_attn.context")

    assert tensor_named(scores, "key_cache").shape == (4, 8, 100, 128)
    assert tensor_named(context, "value_cache").shape == (4, 8, 100, 128)
    assert tensor_named(scores, "key_cache").role == "kv_cache"
    # Per step: 32 layers x (key + value) x 4 sequences x 8 heads x 100 positions x 128.
    assert workload.total().kv_cache_read_elements == 32 * 2 * 4 * 8 * 100 * 128


def test_decode_queries_use_all_heads():
    llama3 = spec("llama-3-8b")
    workload = build_workload(llama3, Scenario.decode(batch_size=4, context_tokens=100, generated_tokens=1))

    scores = op_named(workload.ops, "layers.*.self_attn.scores")

    assert tensor_named(scores, "query").shape == (4, 32, 1, 128)
    assert scores.batch == 4 * 32
    # Each query head scores the 100 cached keys and its own: 101 keys of 128.
    assert scores.macs == 4 * 32 * 101 * 128


def test_prefill_queries_use_all_heads():
    llama3 = spec("llama-3-8b")
    workload = build_workload(llama3, Scenario.prefill(batch_size=2, prompt_tokens=64))

    q_proj = op_named(workload.ops, "layers.*.self_attn.q_proj")
    k_proj = op_named(workload.ops, "layers.*.self_attn.k_proj")
    scores = op_named(workload.ops, "layers.*.self_attn.scores")

    assert (q_proj.m, q_proj.n, q_proj.k) == (2 * 64, 32 * 128, 4096)
    assert (k_proj.m, k_proj.n, k_proj.k) == (2 * 64, 8 * 128, 4096)
    assert tensor_named(scores, "query").shape == (2, 32, 64, 128)
    assert tensor_named(scores, "key").shape == (2, 8, 64, 128)
    assert scores.batch == 2 * 32
    assert (scores.m, scores.n, scores.k) == (64, 64, 128)


def test_prefill_reads_no_kv_cache_and_writes_prompt():
    llama2 = spec("llama-2-7b")
    workload = build_workload(llama2, Scenario.prefill(batch_size=2, prompt_tokens=64))

    totals = workload.total()

    assert totals.kv_cache_read_elements == 0
    # 32 layers x (key + value) x 2 sequences x 64 tokens x 4096.
    assert totals.kv_cache_write_elements == 32 * 2 * 2 * 64 * 4096


def test_mlp_activations_sized_by_intermediate_size():
    llama3 = spec("llama-3-8b")  # hidden 4096, intermediate 14336
    ops = build_workload(llama3, Scenario.prefill(batch_size=1, prompt_tokens=16)).ops

    gate = op_named(ops, "layers.*.mlp.gate_proj")
    act = op_named(ops, "layers.*.mlp.act")
    down = op_named(ops, "layers.*.mlp.down_proj")

    assert tensor_named(gate, "layers.*.mlp.gate_proj.output").shape == (16, 14336)
    assert tensor_named(act, "layers.*.mlp.act.input").shape == (16, 14336)
    assert tensor_named(act, "layers.*.mlp.act.up").shape == (16, 14336)
    assert tensor_named(act, "layers.*.mlp.act.output").shape == (16, 14336)
    assert tensor_named(down, "layers.*.mlp.down_proj.input").shape == (16, 14336)
    assert (down.m, down.n, down.k) == (16, 4096, 14336)
    # One SiLU and one multiply by the up projection per intermediate element.
    assert act.nonlinear_ops == 16 * 14336
    assert act.elementwise_ops == 16 * 14336


def test_opt_mlp_is_relu_with_biases():
    opt = spec("opt-6.7b")
    ops = build_workload(opt, Scenario.prefill(batch_size=1, prompt_tokens=8)).ops

    up = op_named(ops, "layers.*.mlp.up_proj")
    act = op_named(ops, "layers.*.mlp.act")

    assert (up.m, up.n, up.k) == (8, 16384, 4096)
    # The bias adds one per output element.
    assert up.elementwise_ops == 8 * 16384
    assert act.nonlinear_ops == 8 * 16384
    assert act.elementwise_ops == 0
    assert [t.name for t in up.tensors if t.role == "weight"] == ["layers.*.mlp.up_proj.weight", "layers.*.mlp.up_proj.bias"]


def test_causal_mask_halving_is_an_option():
    llama2 = spec("llama-2-7b")
    prompt = Scenario.prefill(batch_size=1, prompt_tokens=512)

    halved = op_named(build_workload(llama2, prompt).ops, "layers.*.self_attn.scores")
    dense = op_named(build_workload(llama2, prompt, causal_mask_halving=False).ops, "layers.*.self_attn.scores")

    # Query i (from 1) attends to i keys: 512 * 513 / 2 pairs per head, or the full 512 x 512.
    assert halved.macs == 32 * (512 * 513 // 2) * 128
    assert dense.macs == 32 * 512 * 512 * 128


def test_encoder_attention_is_not_halved():
    minilm = spec("all-minilm-l6-v2")  # 12 heads of 32
    prompt = Scenario.prefill(batch_size=1, prompt_tokens=128)

    scores = op_named(build_workload(minilm, prompt).ops, "layers.*.self_attn.scores")

    assert scores.macs == 12 * 128 * 128 * 32


def test_sliding_window_limits_prefill_pairs():
    mistral = spec("mistral-7b")  # window 4096
    workload = build_workload(mistral, Scenario.prefill(batch_size=1, prompt_tokens=5000))

    scores = op_named(workload.ops, "layers.*.self_attn.scores")
    pairs = sum(min(i, 4096) for i in range(1, 5001))

    assert scores.macs == 32 * pairs * 128


@pytest.mark.parametrize("query, cached", [(1, 0), (1, 4095), (7, 0), (4096, 0), (5000, 0), (300, 3900), (10, 5000)])
def test_attention_pairs_match_brute_force(query, cached):
    mistral = spec("mistral-7b")
    window = 4096

    ops = forward_ops(mistral, 1, query, cached)
    scores = op_named(ops, "layers.*.self_attn.scores")
    # Query i (from 1) attends to the cached positions and the first i new ones, at most `window` of them.
    pairs = sum(min(cached + i, window) for i in range(1, query + 1))

    assert scores.macs == 32 * pairs * 128


def test_moe_decode_routes_two_of_eight_experts():
    mixtral = spec("mixtral-8x7b")
    workload = build_workload(mixtral, Scenario.decode(batch_size=1, context_tokens=10, generated_tokens=1))

    gate = op_named(workload.ops, "layers.*.moe.experts.gate_proj")
    router = op_named(workload.ops, "layers.*.moe.router")
    weight = tensor_named(gate, "layers.*.moe.experts.gate_proj.weight")

    assert gate.routing.expected_tokens_per_expert == 1 * 2 / 8
    assert gate.kind == "GEMV"
    # One token reaches exactly its 2 experts: 8 * (1 - (6/8)**1) = 2.
    assert gate.routing.expected_active_experts == pytest.approx(2.0)
    assert weight.shape == (8, 14336, 4096)
    assert weight.accessed_elements == pytest.approx(2 * 14336 * 4096)
    assert gate.macs == 2 * 14336 * 4096
    assert (router.m, router.n, router.k) == (1, 8, 4096)


def test_moe_prefill_spreads_tokens_over_experts():
    mixtral = spec("mixtral-8x7b")
    workload = build_workload(mixtral, Scenario.prefill(batch_size=1, prompt_tokens=512))

    down = op_named(workload.ops, "layers.*.moe.experts.down_proj")

    assert down.routing.expected_tokens_per_expert == 512 * 2 / 8
    assert down.kind == "GEMM"
    assert (down.m, down.n, down.k) == (512 * 2, 4096, 14336)
    assert down.routing.expected_active_experts == pytest.approx(8 * (1 - 0.75**512))


def test_decode_batch_one_projections_are_gemv():
    llama3 = spec("llama-3-8b")

    single = build_workload(llama3, Scenario.decode(1, 100, 1)).ops
    batched = build_workload(llama3, Scenario.decode(8, 100, 1)).ops

    assert op_named(single, "layers.*.self_attn.q_proj").kind == "GEMV"
    assert op_named(single, "lm_head").kind == "GEMV"
    assert op_named(batched, "layers.*.self_attn.q_proj").kind == "GEMM"
    assert op_named(batched, "layers.*.self_attn.q_proj").m == 8


def test_prefill_lm_head_rows():
    llama3 = spec("llama-3-8b")
    prompt = Scenario.prefill(batch_size=2, prompt_tokens=100)

    last = op_named(build_workload(llama3, prompt).ops, "lm_head")
    every = op_named(build_workload(llama3, prompt, all_logits=True).ops, "lm_head")

    assert (last.m, last.n, last.k) == (2, 128256, 4096)
    assert (every.m, every.n, every.k) == (200, 128256, 4096)


def test_tied_lm_head_reads_embedding_table():
    smollm = spec("smollm2-135m")
    ops = build_workload(smollm, Scenario.decode(1, 10, 1)).ops

    head = op_named(ops, "lm_head")

    assert [t.name for t in head.tensors if t.role == "weight"] == ["embed_tokens.weight"]
    assert (head.n, head.k) == (49152, 576)


def test_block_ops_run_once_per_layer():
    llama2 = spec("llama-2-70b")
    ops = build_workload(llama2, Scenario.decode(1, 10, 1)).ops

    for op in ops:
        expected = 80 if op.name.startswith("layers.*.") else 1
        assert op.count == expected, op.name


@pytest.mark.parametrize("name", ["llama-2-7b", "mixtral-8x7b", "opt-6.7b", "phi-3-mini", "qwen2.5-7b", "all-minilm-l6-v2"])
def test_every_parameter_is_read_by_an_op(name):
    model = spec(name)
    ops = build_workload(model, Scenario.prefill(1, 8)).ops

    read = {t.name for op in ops for t in op.tensors if t.role == "weight"}

    for parameter in parameters(model):
        assert parameter.name in read, parameter.name


def test_weight_macs_equal_matrix_parameters_per_token():
    llama2 = spec("llama-2-7b")
    # The first token attends to itself only: per layer 2 x 32 heads x 128 MACs of attention.
    workload = build_workload(llama2, Scenario.prefill(batch_size=1, prompt_tokens=1))
    per_layer = 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 32 * 128
    expected_macs = 32 * per_layer + 32000 * 4096

    totals = workload.total()

    assert totals.macs == expected_macs
    assert totals.flops == 2 * totals.macs + totals.elementwise_ops


def test_phi3_uses_fused_projections():
    phi3 = spec("phi-3-mini")
    ops = build_workload(phi3, Scenario.prefill(1, 4)).ops

    qkv = op_named(ops, "layers.*.self_attn.qkv_proj")
    gate_up = op_named(ops, "layers.*.mlp.gate_up_proj")

    assert (qkv.n, qkv.k) == (3 * 3072, 3072)
    assert (gate_up.n, gate_up.k) == (2 * 8192, 3072)


def test_encoder_has_no_kv_cache_and_a_pooler():
    minilm = spec("all-minilm-l6-v2")
    workload = build_workload(minilm, Scenario.prefill(batch_size=3, prompt_tokens=20))

    roles = {t.role for op in workload.ops for t in op.tensors}
    pooler = op_named(workload.ops, "pooler")

    assert "kv_cache" not in roles
    assert (pooler.m, pooler.n, pooler.k) == (3, 384, 384)
    assert "lm_head" not in [op.name for op in workload.ops]


def test_to_frame_has_one_row_per_op():
    llama3 = spec("llama-3-8b")
    workload = build_workload(llama3, Scenario.decode(2, 50, 3))

    frame = workload.to_frame()
    tensors = workload.tensor_frame()

    assert len(frame) == len(workload.ops)
    assert list(frame["op"]) == [op.name for op in workload.ops]
    assert set(frame["kind"]) == {"GEMM", "attention", "elementwise", "reduction"}
    assert (frame["calls"] == frame["count"] * 3).all()
    assert frame["macs"].sum() == workload.total().macs
    assert set(tensors["role"]) == {"weight", "activation", "kv_cache", "output"}


def test_multi_query_attention_caches_one_head(tmp_path):
    import json

    from hwsim.workload import kv_cache_bytes_per_token, shipped_config_paths

    # Llama-3-8B with num_key_value_heads = 1: multi-query attention.
    config = json.loads(shipped_config_paths()["llama-3-8b"].read_text())
    config["num_key_value_heads"] = 1
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    model = load_model(path)

    ops = build_workload(model, Scenario.decode(batch_size=2, context_tokens=30, generated_tokens=1)).ops
    scores = op_named(ops, "layers.*.self_attn.scores")
    k_proj = op_named(ops, "layers.*.self_attn.k_proj")

    assert tensor_named(scores, "key_cache").shape == (2, 1, 30, 128)
    assert tensor_named(scores, "query").shape == (2, 32, 1, 128)
    assert k_proj.n == 128
    # 2 (key and value) x 32 layers x 1 head x 128 x 2 bytes.
    assert kv_cache_bytes_per_token(model) == 2 * 32 * 128 * 2
