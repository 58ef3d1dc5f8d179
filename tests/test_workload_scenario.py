"""Scenarios: validation, context limits, and decode totals summed without one graph per step."""

from __future__ import annotations

import functools
import logging

import numpy as np
import pytest

from hwsim.workload import OpCounts, Scenario, build_workload, load_model
from hwsim.workload.workload import COUNT_COLUMNS


@functools.cache
def spec(name):
    return load_model(name)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Scenario.prefill(0, 10), "batch_size=0"),
        (lambda: Scenario.prefill(1, 0), "context_tokens .*=0"),
        (lambda: Scenario.prefill(1, -5), "context_tokens .*=-5"),
        (lambda: Scenario.decode(-1, 10, 1), "batch_size=-1"),
        (lambda: Scenario.decode(1, 0, 1), "context_tokens .*=0"),
        (lambda: Scenario.decode(1, 10, 0), "generated_tokens=0"),
        (lambda: Scenario.decode(1, 10, 2.5), "generated_tokens=2.5"),
        (lambda: Scenario.decode(True, 10, 1), "batch_size=True"),
        (lambda: Scenario("prefill", 1, 10, 5), "generated_tokens=5"),
        (lambda: Scenario("train", 1, 10), "invalid phase 'train'"),
    ],
)
def test_invalid_scenario_rejected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_context_beyond_max_position_rejected():
    llama2 = spec("llama-2-7b")  # max_position_embeddings 4096

    with pytest.raises(ValueError, match="longer than max_position_embeddings=4096"):
        build_workload(llama2, Scenario.decode(1, 4000, 97))


def test_context_at_max_position_accepted():
    llama2 = spec("llama-2-7b")

    workload = build_workload(llama2, Scenario.decode(1, 4000, 96))

    assert workload.scenario.tokens_per_sequence == 4096


def test_long_context_allowed_with_warning_for_rotary(caplog):
    llama2 = spec("llama-2-7b")

    with caplog.at_level(logging.WARNING, logger="hwsim"):
        workload = build_workload(llama2, Scenario.prefill(1, 5000), allow_long_context=True)

    assert workload.ops
    assert "longer than max_position_embeddings=4096" in caplog.text


def test_long_context_rejected_for_learned_positions():
    opt = spec("opt-6.7b")  # learned position table of 2048 (+2) rows

    with pytest.raises(ValueError, match="learned position table has no rows past that"):
        build_workload(opt, Scenario.prefill(1, 2049), allow_long_context=True)


def test_encoder_decode_rejected():
    minilm = spec("all-minilm-l6-v2")

    with pytest.raises(ValueError, match="is an encoder, which has no decode phase"):
        build_workload(minilm, Scenario.decode(1, 10, 1))


def _sum_of_step_graphs(workload):
    """Counts of every op summed over one graph per decode step, the slow way."""
    per_op = [dict.fromkeys(COUNT_COLUMNS, 0) for _ in workload.ops]
    for step in range(workload.scenario.steps):
        for index, op in enumerate(workload.step_ops(step)):
            counts = OpCounts.of(op).as_dict()
            for column in COUNT_COLUMNS:
                per_op[index][column] += counts[column]
    return per_op


@pytest.mark.parametrize(
    "name, scenario",
    [
        ("llama-3-8b", Scenario.decode(batch_size=3, context_tokens=100, generated_tokens=17)),
        # The window of 4096 is reached after 6 of the 12 steps, so the cache stops growing there.
        ("mistral-7b", Scenario.decode(batch_size=2, context_tokens=4090, generated_tokens=12)),
        ("mixtral-8x7b", Scenario.decode(batch_size=1, context_tokens=1, generated_tokens=9)),
        ("opt-6.7b", Scenario.decode(batch_size=4, context_tokens=50, generated_tokens=5)),
    ],
)
def test_decode_totals_equal_sum_of_step_graphs(name, scenario):
    workload = build_workload(spec(name), scenario)

    expected = _sum_of_step_graphs(workload)

    for op, totals, slow in zip(workload.ops, workload.totals, expected):
        for column in COUNT_COLUMNS:
            assert getattr(totals, column) == pytest.approx(slow[column], rel=1e-12), f"{op.name} {column}"


def test_cached_tokens_stop_at_window():
    mistral = spec("mistral-7b")
    workload = build_workload(mistral, Scenario.decode(1, 4090, 12))

    cached = workload.cached_tokens_per_step()

    # Step i reads 4090 + i positions, at most window - 1 = 4095.
    assert list(cached) == [4090, 4091, 4092, 4093, 4094, 4095, 4095, 4095, 4095, 4095, 4095, 4095]


def test_decode_attention_macs_closed_form():
    llama2 = spec("llama-2-7b")
    context, generated = 1000, 200
    workload = build_workload(llama2, Scenario.decode(1, context, generated))

    scores = workload.to_frame().set_index("op").loc["layers.*.self_attn.scores"]
    # Step i attends to context + i + 1 keys: sum = T * C + T * (T + 1) / 2; 32 layers x 32 heads x 128.
    keys = generated * context + generated * (generated + 1) // 2

    assert scores["macs"] == 32 * 32 * 128 * keys
    assert scores["calls"] == 32 * generated


def test_steps_frame_sums_to_totals():
    mistral = spec("mistral-7b")
    workload = build_workload(mistral, Scenario.decode(2, 4090, 12))

    steps = workload.steps_frame()
    total = workload.total()

    assert len(steps) == 12
    assert list(steps["cached_tokens"]) == list(workload.cached_tokens_per_step())
    for column in COUNT_COLUMNS:
        assert steps[column].sum() == pytest.approx(getattr(total, column), rel=1e-12), column


def test_steps_frame_grows_by_kv_reads_per_step():
    llama3 = spec("llama-3-8b")
    workload = build_workload(llama3, Scenario.decode(1, 10, 4))

    reads = workload.steps_frame()["kv_cache_read_elements"].to_numpy()

    # Each step reads one more cached position: 32 layers x (key + value) x 8 KV heads x 128.
    assert np.all(np.diff(reads) == 32 * 2 * 8 * 128)


def test_long_generation_needs_no_graph_per_step():
    llama3 = spec("llama-3-8b")

    workload = build_workload(llama3, Scenario.decode(batch_size=1, context_tokens=1, generated_tokens=8000))

    # Writes: 8000 tokens x 32 layers x (key + value) x 8 KV heads x 128.
    assert workload.total().kv_cache_write_elements == 8000 * 32 * 2 * 8 * 128
    assert len(workload.ops) < 40


def test_step_ops_rejects_out_of_range_step():
    workload = build_workload(spec("llama-3-8b"), Scenario.decode(1, 10, 4))

    with pytest.raises(ValueError, match="steps 0 to 3"):
        workload.step_ops(4)
