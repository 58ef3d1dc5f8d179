"""Bit allocation: one option (format or quantizer) per layer, least total sensitivity, costs within budgets.

Given sensitivity[i][j] of layer i under option j and cost[k][i][j] for
each budgeted quantity k (storage bits with overhead from `storage_costs`,
or latency or energy tables that the caller computes), choose one option
per layer to minimize sum sensitivity subject to sum cost[k] <= budget[k]:

- "ilp": exact, an integer linear program solved by `scipy.optimize.milp`
  (HiGHS), as HAWQ-V3 allocates bits;
- "lagrangian": minimizes sensitivity + lambda * cost layer by layer,
  bisecting lambda to the smallest value that meets a single budget. It
  finds points on the convex hull of the trade-off, so it may leave budget unused;
- "greedy": starts from the cheapest option of every layer and keeps
  taking the upgrade with the best sensitivity drop per unit of cost
  that still fits;
- "brute_force": every combination, for checking the others on small cases.

Non-finite sensitivity or cost entries mark options a layer may not take.
The result is an `Allocation`, which `to_policy` turns into a `Policy`.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hwsim.policy.names import format_layer_ranges, split_layer_name
from hwsim.policy.overhead import quantizer_bits
from hwsim.policy.policy import Policy
from hwsim.policy.quantizer import Quantizer
from hwsim.policy.rules import Rule

log = logging.getLogger(__name__)

METHODS = ("ilp", "lagrangian", "greedy", "brute_force")
# Maximum number of combinations brute force enumerates; a larger problem raises ValueError.
BRUTE_FORCE_LIMIT = 2_000_000
_BISECTION_STEPS = 200


@dataclass(frozen=True)
class Allocation:
    """The option chosen for each layer, with the totals it reaches.

    costs and budgets have one entry per budgeted quantity, in the order given.
    """

    layers: tuple[str, ...]
    options: tuple[Quantizer, ...]
    choice: tuple[int, ...]
    sensitivity: float
    costs: tuple[float, ...]
    budgets: tuple[float, ...]
    method: str

    @property
    def quantizers(self) -> tuple[Quantizer, ...]:
        """The chosen quantizer of each layer."""
        return tuple(self.options[j] for j in self.choice)

    @property
    def formats(self) -> tuple[str, ...]:
        """The chosen format name of each layer."""
        return tuple(quantizer.format for quantizer in self.quantizers)

    def to_frame(self) -> pd.DataFrame:
        """Return one row per layer: layer, canonical name, layer_index (missing outside the blocks), format."""
        rows = []
        for layer, fmt in zip(self.layers, self.formats):
            canonical, index = split_layer_name(layer)
            rows.append({"layer": layer, "canonical": canonical, "layer_index": index, "format": fmt})
        frame = pd.DataFrame(rows, columns=["layer", "canonical", "layer_index", "format"])
        frame["layer_index"] = frame["layer_index"].astype("Int64")
        return frame

    def to_policy(self, name: str = "allocated", *, base: Policy | None = None, description: str | None = None) -> Policy:
        """Return a policy whose weight rules give each layer its chosen quantizer, tried before `base`'s rules.

        Layers with the same name and choice share one rule with their layer
        indices as ranges. Without `base`, activations and the KV cache stay
        in full precision.
        """
        grouped: dict[tuple[str, int], list[int | None]] = {}
        for layer, option in zip(self.layers, self.choice):
            canonical, index = split_layer_name(layer)
            grouped.setdefault((canonical, option), []).append(index)
        rules = []
        for (canonical, option), indices in grouped.items():
            quantizer = self.options[option]
            known = sorted(index for index in indices if index is not None)
            layers = known if known else None
            if layers is not None and len(known) != len(indices):
                raise ValueError(f"layer {canonical!r} is listed both with and without a layer index; give every copy its index")
            label = canonical if layers is None else f"{canonical} [{format_layer_ranges(tuple((i, i) for i in layers))}]"
            rules.append(Rule(("weight",), quantizer, regex=re.escape(canonical), layers=layers, name=f"{label}: {quantizer.format}"))
        text = description or (
            f"{self.method} allocation over {len(self.layers)} layers: sensitivity {self.sensitivity:.6g}, "
            f"costs {', '.join(f'{c:.6g}' for c in self.costs)} within {', '.join(f'{b:.6g}' for b in self.budgets)}"
        )
        if base is None:
            return Policy(name, tuple(rules), description=text)
        return base.with_rules(rules, name=name, description=text)


def _as_arrays(sensitivity, cost, budget) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sens = np.asarray(sensitivity, dtype=float)
    if sens.ndim != 2 or sens.shape[0] == 0 or sens.shape[1] == 0:
        raise ValueError(f"sensitivity must be a [layers, options] matrix with at least one of each, got shape {sens.shape}")
    costs = np.asarray(cost, dtype=float)
    if costs.ndim == 2:
        costs = costs[None]
    if costs.ndim != 3 or costs.shape[1:] != sens.shape:
        raise ValueError(f"cost must have shape {sens.shape} or [budgets, {sens.shape[0]}, {sens.shape[1]}], got {np.asarray(cost).shape}")
    budgets = np.atleast_1d(np.asarray(budget, dtype=float))
    if budgets.shape != (costs.shape[0],):
        raise ValueError(f"give one budget per cost table: {costs.shape[0]} tables, {budgets.size} budgets")
    if not np.all(np.isfinite(budgets)):
        raise ValueError(f"budgets must be finite numbers, got {budgets.tolist()}")
    finite = np.isfinite(costs).all(axis=0)
    if np.any((costs < 0) & np.isfinite(costs)):
        raise ValueError("costs must be non-negative; shift a cost table so its smallest entry is 0 or more")
    allowed = finite & np.isfinite(sens)
    empty = np.flatnonzero(~allowed.any(axis=1))
    if empty.size:
        raise ValueError(f"layer {int(empty[0])} has no allowed option: every entry of its row is NaN or infinite")
    return sens, costs, budgets


def _totals(sens: np.ndarray, costs: np.ndarray, choice: Sequence[int]) -> tuple[float, np.ndarray]:
    rows = np.arange(sens.shape[0])
    chosen = np.asarray(choice)
    return float(sens[rows, chosen].sum()), costs[:, rows, chosen].sum(axis=1)


def _infeasible(costs: np.ndarray, budgets: np.ndarray, allowed: np.ndarray) -> ValueError:
    masked = np.where(allowed[None], costs, np.inf)
    cheapest = masked.min(axis=2).sum(axis=1)
    parts = [f"budget {k}: at least {cheapest[k]:.6g} needed, {budgets[k]:.6g} given" for k in range(budgets.size)]
    return ValueError(f"no choice of options meets the budgets ({'; '.join(parts)}); raise the budget or add cheaper options")


def solve_ilp(sensitivity, cost, budget) -> tuple[int, ...]:
    """Return the option index per layer that minimizes total sensitivity within every budget (scipy.optimize.milp, HiGHS)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    sens, costs, budgets = _as_arrays(sensitivity, cost, budget)
    layers, options = sens.shape
    allowed = np.isfinite(sens) & np.isfinite(costs).all(axis=0)
    scale = np.abs(sens[allowed]).max() or 1.0
    objective = np.where(allowed, sens / scale, 0.0).reshape(-1)
    one_per_layer = np.kron(np.eye(layers), np.ones(options))
    upper = allowed.reshape(-1).astype(float)
    limits = budgets.copy()
    for attempt in range(4):
        rows, bounds = [], []
        for k in range(costs.shape[0]):
            # Divide each budget row by its budget so HiGHS's tolerances act on a quantity of order 1.
            norm = abs(limits[k]) or 1.0
            rows.append(np.where(allowed, costs[k], 0.0).reshape(-1) / norm)
            bounds.append(limits[k] / norm)
        constraints = [LinearConstraint(one_per_layer, 1, 1), LinearConstraint(np.array(rows), -np.inf, np.array(bounds))]
        result = milp(objective, constraints=constraints, integrality=np.ones(layers * options), bounds=Bounds(0, upper))
        if result.status == 2:
            raise _infeasible(costs, budgets, allowed)
        if result.x is None:
            raise RuntimeError(f"scipy.optimize.milp failed: {result.message}")
        choice = tuple(int(j) for j in result.x.reshape(layers, options).argmax(axis=1))
        _, totals = _totals(sens, costs, choice)
        excess = totals - budgets
        if np.all(excess <= 0):
            return choice
        # HiGHS met the budget only within its feasibility tolerance; tighten by the excess and solve again.
        log.info("ILP solution exceeds a budget by %s; solving again with a tighter budget (attempt %d)", excess.tolist(), attempt + 1)
        limits = limits - np.maximum(excess, 0) * 2
    raise RuntimeError(f"scipy.optimize.milp kept exceeding the budgets {budgets.tolist()} within its tolerance; scale the costs to smaller numbers")


def solve_brute_force(sensitivity, cost, budget) -> tuple[int, ...]:
    """Try every combination, which gives the exact optimum of a small problem; ties go to the lower total cost."""
    sens, costs, budgets = _as_arrays(sensitivity, cost, budget)
    layers, options = sens.shape
    if options**layers > BRUTE_FORCE_LIMIT:
        raise ValueError(f"brute force over {options}^{layers} combinations is too many (limit {BRUTE_FORCE_LIMIT}); use method='ilp'")
    allowed = np.isfinite(sens) & np.isfinite(costs).all(axis=0)
    best, best_key = None, None
    for choice in itertools.product(range(options), repeat=layers):
        if not all(allowed[i, j] for i, j in enumerate(choice)):
            continue
        total, totals = _totals(sens, costs, choice)
        if np.any(totals > budgets):
            continue
        key = (total, float(totals.sum()))
        if best_key is None or key < best_key:
            best, best_key = choice, key
    if best is None:
        raise _infeasible(costs, budgets, allowed)
    return tuple(best)


def solve_lagrangian(sensitivity, cost, budget) -> tuple[int, ...]:
    """Minimize sensitivity + lambda * cost per layer, with the smallest lambda >= 0 whose choice meets the one budget."""
    sens, costs, budgets = _as_arrays(sensitivity, cost, budget)
    if costs.shape[0] != 1:
        raise ValueError(f"the Lagrangian method takes one budget, got {costs.shape[0]}; use method='ilp' or 'greedy' for several")
    allowed = np.isfinite(sens) & np.isfinite(costs[0])
    sens_scaled = np.where(allowed, sens / (np.abs(sens[allowed]).max() or 1.0), np.inf)
    cost_scaled = np.where(allowed, costs[0] / (abs(budgets[0]) or 1.0), np.inf)

    def choose(lam: float) -> tuple[int, ...]:
        objective = sens_scaled + lam * cost_scaled
        # Among equal objectives, take the cheaper option: lexsort orders by objective, then cost.
        return tuple(int(np.lexsort((cost_scaled[i], objective[i]))[0]) for i in range(sens.shape[0]))

    def fits(choice) -> bool:
        return _totals(sens, costs, choice)[1][0] <= budgets[0]

    low, high = 0.0, 1.0
    if fits(choose(low)):
        return choose(low)
    while not fits(choose(high)):
        high *= 2.0
        if high > 1e12:
            cheapest = tuple(int(np.lexsort((sens_scaled[i], cost_scaled[i]))[0]) for i in range(sens.shape[0]))
            if fits(cheapest):
                return cheapest
            raise _infeasible(costs, budgets, allowed)
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        if fits(choose(middle)):
            high = middle
        else:
            low = middle
        if high - low <= 1e-12 * high:
            break
    return choose(high)


def solve_greedy(sensitivity, cost, budget) -> tuple[int, ...]:
    """Start from the cheapest option per layer and take upgrades by sensitivity drop per unit of cost while they fit."""
    sens, costs, budgets = _as_arrays(sensitivity, cost, budget)
    layers, options = sens.shape
    allowed = np.isfinite(sens) & np.isfinite(costs).all(axis=0)
    norms = np.where(np.abs(budgets) > 0, np.abs(budgets), 1.0)
    # One scalar cost per option: the sum of its costs relative to each budget.
    weight = np.where(allowed, (costs / norms[:, None, None]).sum(axis=0), np.inf)
    choice = [int(np.lexsort((np.where(allowed[i], sens[i], np.inf), weight[i]))[0]) for i in range(layers)]
    _, totals = _totals(sens, costs, choice)
    if np.any(totals > budgets):
        raise _infeasible(costs, budgets, allowed)
    rows = np.arange(layers)
    while True:
        current = np.asarray(choice)
        new_totals = totals[:, None, None] + costs - costs[:, rows, current][:, :, None]
        drop = np.where(allowed, sens[rows, current][:, None] - np.where(allowed, sens, 0.0), -np.inf)
        extra = np.where(allowed, weight - weight[rows, current][:, None], np.inf)
        candidates = allowed & (drop > 0) & np.all(new_totals <= budgets[:, None, None], axis=0)
        if not candidates.any():
            return tuple(choice)
        # A move that costs nothing extra ranks ahead of every paid one; among those, the largest drop wins.
        free = candidates & (extra <= 0)
        if free.any():
            score = np.where(free, drop, -np.inf)
        else:
            score = np.where(candidates, drop / np.where(candidates, extra, 1.0), -np.inf)
        i, j = np.unravel_index(int(np.argmax(score)), score.shape)
        choice[i] = int(j)
        totals = new_totals[:, i, j]


_SOLVERS = {"ilp": solve_ilp, "lagrangian": solve_lagrangian, "greedy": solve_greedy, "brute_force": solve_brute_force}


def allocate(
    layers: Sequence[str],
    options: Sequence[str | Quantizer],
    sensitivity,
    cost,
    budget,
    *,
    method: str = "ilp",
) -> Allocation:
    """Choose one of `options` for each of `layers` under the budgets; see the module docstring for the methods.

    layers: module names ("model.layers.3.mlp.up_proj", or
        "layers.3.mlp.up_proj"); each needs its layer index where the
        policy should tell layers apart.
    options: format names or quantizers, the columns of sensitivity and cost.
    sensitivity: [layers, options]; cost: [layers, options] or
        [budgets, layers, options]; budget: a number or one per cost table.
    """
    if method not in _SOLVERS:
        raise ValueError(f"unknown allocation method {method!r}: choose one of {', '.join(METHODS)}")
    layers = tuple(layers)
    quantizers = tuple(option if isinstance(option, Quantizer) else Quantizer(option) for option in options)
    sens, costs, budgets = _as_arrays(sensitivity, cost, budget)
    if sens.shape != (len(layers), len(quantizers)):
        raise ValueError(f"sensitivity has shape {sens.shape}, but there are {len(layers)} layers and {len(quantizers)} options")
    choice = _SOLVERS[method](sens, costs, budgets)
    total, totals = _totals(sens, costs, choice)
    log.info("%s allocation: sensitivity %.6g, costs %s, budgets %s", method, total, totals.tolist(), budgets.tolist())
    return Allocation(layers, quantizers, tuple(choice), total, tuple(float(c) for c in totals), tuple(float(b) for b in budgets), method)


def storage_costs(shapes: Sequence[tuple[int, ...]], options: Sequence[str | Quantizer], *, full_precision_format: str = "fp16") -> np.ndarray:
    """Count the storage bits [layers, options] of each weight shape under each option, scales, outliers and indices included."""
    quantizers = [option if isinstance(option, Quantizer) else Quantizer(option) for option in options]
    return np.array([[quantizer_bits(q, tuple(shape), full_precision_format).total_bits for q in quantizers] for shape in shapes], dtype=float)


def average_bits_budget(shapes: Sequence[tuple[int, ...]], average_bits: float) -> float:
    """Return the storage budget in bits for `average_bits` per parameter over weights of `shapes`."""
    if not average_bits > 0:
        raise ValueError(f"invalid average_bits={average_bits!r}: give a positive number of bits per parameter, such as 4.5")
    return float(average_bits) * sum(int(np.prod(shape)) for shape in shapes)


def model_weight_layers(spec) -> list[tuple[str, tuple[int, ...]]]:
    """List the linear-layer weights of a `hwsim.workload.ModelSpec` as (name, shape), one entry per layer ("layers.3.mlp.up_proj").

    These are the rows an allocation over the workload decides. Names
    outside the blocks carry no index.
    """
    from hwsim.workload.parameters import parameters

    rows = []
    for parameter in parameters(spec):
        if parameter.kind != "linear":
            continue
        module = parameter.name.rsplit(".", 1)[0]
        if module.startswith("layers.*"):
            rows += [(module.replace("layers.*", f"layers.{i}", 1), parameter.shape) for i in range(parameter.copies)]
        else:
            rows.append((module, parameter.shape))
    return rows
