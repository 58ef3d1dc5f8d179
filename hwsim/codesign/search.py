"""Multi-objective search over a sweep's space with optuna, for spaces too large to evaluate whole.

optuna is an optional dependency (`pip install optuna`). The sampler picks
one value per dimension (scenario, each hardware axis, policy) as a
categorical choice. The default sampler is NSGA-II
(`optuna.samplers.NSGAIISampler`), which also receives the spec's
constraints. Trials are requested in batches (`study.ask`). Each batch is
evaluated on the executor like a grid sweep and written to the same kind
of checkpoint, and its results go back to the sampler (`study.tell`). A
resumed search first reports every stored point to the sampler, so it
goes on from where it stopped instead of starting over.
"""

from __future__ import annotations

import logging
import math
import uuid
from pathlib import Path

from hwsim.codesign.engine import SweepResult, _as_spec, open_checkpoint, prepare_evaluators, write_results
from hwsim.codesign.evaluators import accuracy_key, evaluate_accuracy, evaluate_points
from hwsim.codesign.executors import Executor, Task, TaskLost, check_executor_choice, make_executor
from hwsim.codesign.spec import Constraint, SweepSpec
from hwsim.codesign.store import CheckpointStore

log = logging.getLogger(__name__)

SAMPLERS = ("nsga2", "nsga3", "tpe", "random")


class SearchUnavailableError(ImportError):
    """The optional dependency optuna is not installed."""


def _optuna():
    try:
        import optuna
    except ImportError as error:
        raise SearchUnavailableError("the multi-objective search needs optuna, which is not installed: pip install optuna") from error
    return optuna


def constraint_violation(constraint: Constraint, value) -> float:
    """0 where the constraint holds, else a positive amount (optuna's convention: feasible when <= 0)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 1.0
    if constraint.satisfied_by(value):
        return 0.0
    if isinstance(constraint.value, bool) or isinstance(value, bool):
        return 1.0
    # Strict comparisons that fail at equality still need a positive violation.
    return max(abs(float(value) - float(constraint.value)), 1e-12)


def _constraint_dict(spec: SweepSpec, violations: list[float]) -> dict[str, float]:
    return {constraint.label: violation for constraint, violation in zip(spec.constraints, violations)}


def _distributions(optuna, spec: SweepSpec) -> dict:
    return {name: optuna.distributions.CategoricalDistribution(list(range(size))) for name, size in zip(spec.dimension_names, spec.dimensions)}


def _sets_constraints_on_trials(optuna) -> bool:
    """True for optuna 5 and later, where a trial carries its constraint values (`Trial.set_constraint`)."""
    return hasattr(optuna.trial.Trial, "set_constraint")


def _sampler(optuna, name: str, seed: int, population_size: int | None):
    options: dict = {"seed": seed}
    if not _sets_constraints_on_trials(optuna) and name != "random":
        # Before optuna 5, samplers read constraints through a function of the finished trial.
        options["constraints_func"] = lambda trial: trial.user_attrs.get("constraint", [1.0])
    if name in ("nsga2", "nsga3") and population_size is not None:
        options["population_size"] = population_size
    factories = {
        "nsga2": optuna.samplers.NSGAIISampler,
        "nsga3": optuna.samplers.NSGAIIISampler,
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
    }
    if name not in factories:
        raise ValueError(f"unknown sampler {name!r}: choose one of {', '.join(SAMPLERS)}")
    return factories[name](**options)


def _trial_outcome(spec: SweepSpec, row: dict, accuracy_rows: dict) -> tuple[list[float] | None, list[float]]:
    """Objective values (None for a failed point) and constraint violations of one stored row."""
    merged = {**row, **accuracy_rows.get(row["policy"], {})}
    violations = [constraint_violation(c, merged.get(c.name)) for c in spec.constraints]
    if row["status"] != "ok":
        return None, violations or [1.0]
    values = [merged.get(o.name) for o in spec.objectives]
    if any(value is None or (isinstance(value, float) and math.isnan(value)) for value in values):
        return None, violations or [1.0]
    return [float(value) for value in values], violations


def run_search(
    spec: SweepSpec | str | Path,
    output: str | Path,
    *,
    trials: int,
    sampler: str = "nsga2",
    seed: int = 0,
    batch_size: int | None = None,
    population_size: int | None = None,
    executor: str | Executor = "local",
    workers: int = 2,
    scheduler: str | None = None,
    resume: bool = False,
    evaluator=None,
    accuracy=None,
) -> SweepResult:
    """Evaluate `trials` points chosen by an optuna sampler, then write `output` and its Pareto front.

    batch_size: trials requested before the sampler gets their results (default:
    2 per worker, at least 4). population_size: NSGA-II's population (optuna's
    default, 50, when None); its first generation is random. Repeated choices
    of a stored point reuse its row.
    """
    optuna = _optuna()
    spec = _as_spec(spec)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"invalid trials={trials!r}: give a positive number of points to evaluate")
    output = Path(output)
    if not isinstance(executor, Executor):
        check_executor_choice(executor, scheduler)
    evaluator, accuracy = prepare_evaluators(spec, evaluator, accuracy)
    with open_checkpoint(spec, output, resume, search=sampler, seed=seed) as store:
        own_executor = not isinstance(executor, Executor)
        runner = make_executor(executor, workers=workers, scheduler=scheduler) if own_executor else executor
        batch = batch_size or max(4, 2 * runner.workers)
        stored_count = len(store.read_points())
        # A resumed search draws from another seed; the same seed would ask for the stored points again.
        study = optuna.create_study(
            directions=["minimize" if o.direction == "min" else "maximize" for o in spec.objectives],
            sampler=_sampler(optuna, sampler, seed + stored_count, population_size),
        )
        token = uuid.uuid4().hex[:8]
        evaluated = 0
        try:
            accuracy_rows = _measure_accuracy(spec, store, runner, accuracy, token)
            stored = {row["point_id"]: row for row in store.read_points().to_dict("records")}
            _replay_stored(optuna, study, spec, stored, accuracy_rows)
            batch_number = 0
            while len(study.trials) < trials:
                new_trials = [study.ask(_distributions(optuna, spec)) for _ in range(min(batch, trials - len(study.trials)))]
                points = [spec.point_from_choices(tuple(trial.params[name] for name in spec.dimension_names)) for trial in new_trials]
                new_points = list({p.point_id: p for p in points if p.point_id not in stored}.values())
                evaluated += _evaluate_new_points(runner, evaluator, store, stored, new_points, f"search-{token}-{batch_number}")
                for trial, point in zip(new_trials, points):
                    _tell(optuna, study, spec, trial, point.point_id, stored[point.point_id], accuracy_rows)
                batch_number += 1
                log.info("search %s: %d of %d trials, %d points evaluated in this run", spec.name, len(study.trials), trials, evaluated)
        finally:
            if own_executor:
                runner.close()

        table, front, pareto_output = write_results(spec, store, output)
        failures = int((table["status"] != "ok").sum()) if len(table) else 0
        return SweepResult(table, front, output, pareto_output, evaluated, len(table) - evaluated, failures)


def _replay_stored(optuna, study, spec: SweepSpec, stored: dict, accuracy_rows: dict) -> None:
    """Add every stored point to the study as a finished trial, so the sampler starts from them."""
    distributions = _distributions(optuna, spec)
    with_constraints = _sets_constraints_on_trials(optuna) and bool(spec.constraints)
    for row in sorted(stored.values(), key=lambda r: r["point_index"]):
        choices = spec.choices_at(int(row["point_index"]))
        values, violations = _trial_outcome(spec, row, accuracy_rows)
        state = optuna.trial.TrialState.COMPLETE if values is not None else optuna.trial.TrialState.FAIL
        extra = {"constraints": _constraint_dict(spec, violations)} if with_constraints else {}
        study.add_trial(optuna.trial.create_trial(
            params=dict(zip(spec.dimension_names, choices)), distributions=distributions, values=values, state=state,
            user_attrs={"constraint": violations, "point_id": row["point_id"]}, **extra,
        ))


def _evaluate_new_points(runner: Executor, evaluator, store: CheckpointStore, stored: dict, new_points: list, key_prefix: str) -> int:
    """Evaluate points in one task per worker, store their rows in the checkpoint and in `stored`; return their number."""
    if not new_points:
        return 0
    per_task = max(1, math.ceil(len(new_points) / runner.workers))
    tasks = [
        Task(f"{key_prefix}-{i}", evaluate_points, (evaluator, new_points[start:start + per_task]))
        for i, start in enumerate(range(0, len(new_points), per_task))
    ]
    chunks = {task.key: task.arguments[1] for task in tasks}
    for task, result in runner.run(tasks):
        chunk = chunks[task.key]
        if isinstance(result, TaskLost):
            result = [{"point_id": p.point_id, "status": "error", "error": result.reason} for p in chunk]
        by_id = {p.point_id: p for p in chunk}
        rows = [{**by_id[row["point_id"]].columns(), **row} for row in result]
        store.write_points(rows)
        stored.update({row["point_id"]: row for row in rows})
    return len(new_points)


def _tell(optuna, study, spec: SweepSpec, trial, point_id: str, row: dict, accuracy_rows: dict) -> None:
    """Report one trial's objective values and constraint violations to the study, or its failure."""
    values, violations = _trial_outcome(spec, row, accuracy_rows)
    trial.set_user_attr("constraint", violations)
    trial.set_user_attr("point_id", point_id)
    if _sets_constraints_on_trials(optuna):
        for key, violation in _constraint_dict(spec, violations).items():
            trial.set_constraint(key, violation)
    if values is None:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    else:
        study.tell(trial, values)


def _measure_accuracy(spec: SweepSpec, store: CheckpointStore, runner: Executor, accuracy, token: str) -> dict[str, dict]:
    """Accuracy rows by policy, measuring the policies the checkpoint lacks (every policy, once)."""
    if accuracy is None:
        return {}
    stored = store.read_accuracy()
    if not stored.empty:
        stored = stored[stored["accuracy_key"] == accuracy_key(accuracy)]
    measured = set(stored["policy"]) if not stored.empty else set()
    tasks = [Task(f"search-accuracy-{token}-{i}", evaluate_accuracy, (accuracy, policy)) for i, policy in enumerate(spec.policies) if policy not in measured]
    for task, result in runner.run(tasks):
        if isinstance(result, TaskLost):
            result = {"policy": task.arguments[1], "accuracy_key": accuracy_key(accuracy), "accuracy_status": "error", "accuracy_error": result.reason}
        store.write_accuracy([result])
    rows = store.read_accuracy()
    return {row["policy"]: row for row in rows.to_dict("records")} if not rows.empty else {}
