"""Bit allocation: the ILP against brute force, every method within its budget, and the resulting policy."""

from __future__ import annotations

import numpy as np
import pytest

from hwsim.policy import Policy, Quantizer, Subset, UniformPolicy, bits_per_parameter, quantizer_bits
from hwsim.policy.allocation import (
    allocate,
    average_bits_budget,
    model_weight_layers,
    solve_brute_force,
    solve_greedy,
    solve_ilp,
    solve_lagrangian,
    storage_costs,
)
from hwsim.workload import load_model


def _instance(seed: int, layers: int, options: int, budgets: int = 1):
    rng = np.random.default_rng(seed)
    sensitivity = rng.random((layers, options)) * rng.choice([1.0, 1e3], size=(layers, 1))
    cost = rng.integers(1, 50, size=(budgets, layers, options)).astype(float)
    low, high = cost.min(axis=2).sum(axis=1), cost.max(axis=2).sum(axis=1)
    budget = low + (high - low) * rng.uniform(0.1, 0.9, size=budgets)
    return sensitivity, cost, budget


def _totals(sensitivity, cost, choice):
    rows = np.arange(sensitivity.shape[0])
    return sensitivity[rows, list(choice)].sum(), cost[:, rows, list(choice)].sum(axis=1)


@pytest.mark.parametrize("seed", range(12))
def test_ilp_matches_brute_force(seed):
    sensitivity, cost, budget = _instance(seed, layers=6, options=4)

    ilp = _totals(sensitivity, cost, solve_ilp(sensitivity, cost, budget))
    exact = _totals(sensitivity, cost, solve_brute_force(sensitivity, cost, budget))

    assert ilp[0] == pytest.approx(exact[0], rel=1e-9)
    assert np.all(ilp[1] <= budget)


@pytest.mark.parametrize("seed", range(6))
def test_ilp_matches_brute_force_with_two_budgets(seed):
    sensitivity, cost, budget = _instance(100 + seed, layers=5, options=4, budgets=2)

    ilp = _totals(sensitivity, cost, solve_ilp(sensitivity, cost, budget))
    exact = _totals(sensitivity, cost, solve_brute_force(sensitivity, cost, budget))

    assert ilp[0] == pytest.approx(exact[0], rel=1e-9)
    assert np.all(ilp[1] <= budget)


@pytest.mark.parametrize("solver", [solve_ilp, solve_lagrangian, solve_greedy, solve_brute_force])
@pytest.mark.parametrize("seed", range(10))
def test_every_method_meets_budget(solver, seed):
    sensitivity, cost, budget = _instance(200 + seed, layers=6, options=3)

    choice = solver(sensitivity, cost, budget)
    total, totals = _totals(sensitivity, cost, choice)

    assert totals[0] <= budget[0]
    # No heuristic beats the exact optimum.
    assert total >= _totals(sensitivity, cost, solve_brute_force(sensitivity, cost, budget))[0] - 1e-9


def test_greedy_handles_two_budgets():
    sensitivity, cost, budget = _instance(7, layers=6, options=3, budgets=2)

    _, totals = _totals(sensitivity, cost, solve_greedy(sensitivity, cost, budget))

    assert np.all(totals <= budget)


def test_lagrangian_rejects_two_budgets():
    sensitivity, cost, budget = _instance(7, layers=3, options=3, budgets=2)

    with pytest.raises(ValueError, match="takes one budget"):
        solve_lagrangian(sensitivity, cost, budget)


@pytest.mark.parametrize("solver", [solve_ilp, solve_lagrangian, solve_greedy, solve_brute_force])
def test_infeasible_budget_raises_with_minimum(solver):
    sensitivity = [[1.0, 0.5], [1.0, 0.5]]
    cost = [[4.0, 8.0], [4.0, 8.0]]

    with pytest.raises(ValueError, match="at least 8 needed, 7 given"):
        solver(sensitivity, cost, 7.0)


def test_generous_budget_takes_least_sensitive():
    sensitivity = np.array([[3.0, 1.0, 2.0], [0.5, 0.7, 0.1]])
    cost = np.array([[1.0, 5.0, 3.0], [1.0, 2.0, 9.0]])

    for solver in (solve_ilp, solve_lagrangian, solve_greedy):
        assert solver(sensitivity, cost, 100.0) == (1, 2)


def test_disallowed_options_are_never_chosen():
    sensitivity = np.array([[np.inf, 1.0, 2.0], [0.5, np.nan, 0.1]])
    cost = np.array([[1.0, 5.0, 3.0], [1.0, 2.0, 9.0]])

    for solver in (solve_ilp, solve_greedy, solve_brute_force):
        choice = solver(sensitivity, cost, 100.0)
        assert choice[0] != 0
        assert choice[1] != 1


def test_shape_errors_name_the_fix():
    with pytest.raises(ValueError, match="one budget per cost table"):
        solve_ilp([[1.0]], [[[1.0]], [[2.0]]], 3.0)
    with pytest.raises(ValueError, match="cost must have shape"):
        solve_ilp([[1.0, 2.0]], [[1.0]], 3.0)
    with pytest.raises(ValueError, match="unknown allocation method 'anneal'"):
        allocate(["a"], ["int4_g128"], [[1.0]], [[1.0]], 1.0, method="anneal")


def test_storage_costs_count_overhead():
    shapes = [(256, 256), (512, 256)]
    options = ["int4_g128", "int8_channel", Quantizer("int4_g128", subset=Subset("outlier_channels", "int8_g128", count=16))]
    costs = storage_costs(shapes, options)

    assert costs[0, 0] == 256 * 256 * 4 + 256 * 2 * 16
    assert costs[1, 1] == 512 * 256 * 8 + 512 * 16
    assert costs[0, 2] == quantizer_bits(options[2], (256, 256)).total_bits


def test_average_bits_allocation_on_smollm2_meets_budget():
    # Weight-only allocation over SmolLM2-135M's 210 linear layers at 4.5 bits per parameter, with storage costs as the budget.
    spec = load_model("smollm2-135m")
    rows = model_weight_layers(spec)
    names = [name for name, _ in rows]
    shapes = [shape for _, shape in rows]
    options = ["int3_g128", "int4_g128", "int8_channel"]
    cost = storage_costs(shapes, options)
    # A sensitivity that falls with bits and grows with layer size, distinct per layer.
    rng = np.random.default_rng(0)
    sensitivity = np.array([[2.0 ** (-2 * bits) for bits in (3, 4, 8)] for _ in shapes]) * rng.uniform(0.5, 2.0, (len(shapes), 1))
    budget = average_bits_budget(shapes, 4.5)

    assert len(rows) == 30 * 7
    for method in ("ilp", "lagrangian", "greedy"):
        allocation = allocate(names, options, sensitivity, cost, budget, method=method)
        policy = allocation.to_policy(f"smollm2-{method}")
        assert allocation.costs[0] <= budget
        # The policy stores what the allocation counted: summing its storage over the model gives the same bits.
        assert bits_per_parameter(policy, spec) == pytest.approx(allocation.costs[0] / sum(int(np.prod(s)) for s in shapes))
        assert bits_per_parameter(policy, spec) <= 4.5
        assert not policy.is_layer_uniform() or len(set(allocation.formats)) == 1


def test_allocation_to_policy_matches_each_layer():
    names = ["model.layers.0.mlp.up_proj", "model.layers.1.mlp.up_proj", "model.layers.0.self_attn.q_proj", "lm_head_like"]
    options = ["int4_g128", "int8_channel"]
    sensitivity = [[5.0, 1.0], [1.0, 0.9], [1.0, 0.99], [3.0, 1.0]]
    cost = [[4.0, 8.0]] * 4
    allocation = allocate(names, options, sensitivity, cost, 24.0)
    base = Policy.from_uniform(UniformPolicy.parse("w4a8"))
    policy = allocation.to_policy("mixed", base=base)

    assert allocation.formats == ("int8_channel", "int4_g128", "int4_g128", "int8_channel")
    assert policy.quantizer_for("model.layers.0.mlp.up_proj", "weight").format == "int8_channel"
    assert policy.quantizer_for("layers.*.mlp.up_proj", "weight", layer_index=1).format == "int4_g128"
    assert policy.quantizer_for("model.layers.0.self_attn.q_proj", "weight").format == "int4_g128"
    assert policy.quantizer_for("lm_head_like", "weight", parameter_kind="linear").format == "int8_channel"
    # Layers the allocation did not cover fall through to the base policy.
    assert policy.quantizer_for("model.layers.7.mlp.down_proj", "weight").format == "int4_g128"
    assert policy.quantizer_for("model.layers.0.mlp.up_proj", "activation").format == "int8_token"
    assert not policy.is_layer_uniform()
    frame = allocation.to_frame()
    assert list(frame.layer_index[:3]) == [0, 1, 0]
    assert frame.layer_index.isna().tolist() == [False, False, False, True]


def test_allocation_without_indices_stays_layer_uniform():
    allocation = allocate(["layers.*.mlp.up_proj", "layers.*.mlp.down_proj"], ["int4_g128", "int8_channel"], [[2.0, 1.0], [2.0, 1.0]], [[4, 8], [4, 8]], 12)

    policy = allocation.to_policy()

    assert policy.is_layer_uniform()
    assert sorted(allocation.formats) == ["int4_g128", "int8_channel"]
