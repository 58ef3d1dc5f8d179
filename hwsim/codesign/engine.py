"""Run a sweep: evaluate pending points on an executor, checkpoint each finished task, write the results and the Pareto front.

    result = run_sweep("studies/codesign_example.yaml", "results.parquet", executor="processes")
    result.front      # Pareto-optimal feasible points, with the knee marked

Accuracy runs once per policy, as its own task, and is joined onto every
point of that policy when the table is assembled. Points that finished in
an earlier run of the same spec (same checkpoint fingerprint) are not
evaluated again when `resume` is set. The results table has one row per
point, sorted by point index, so every executor writes the same table.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from hwsim.codesign.accuracy import accuracy_evaluator
from hwsim.codesign.evaluators import accuracy_key, build_evaluator, evaluate_accuracy, evaluate_points
from hwsim.codesign.executors import Executor, Task, TaskLost, check_executor_choice, make_executor
from hwsim.codesign.pareto import pareto_front
from hwsim.codesign.spec import RESERVED_COLUMNS, SweepSpec, SweepSpecError, load_sweep_spec
from hwsim.codesign.store import CheckpointStore, checkpoint_dir, frame_to_parquet_bytes, write_atomically

log = logging.getLogger(__name__)

# Failed points logged one by one before the rest are only counted.
MAX_LOGGED_FAILURES = 5
# Tasks per worker when the chunk size is chosen automatically, and the largest automatic chunk.
TASKS_PER_WORKER = 8
MAX_AUTOMATIC_CHUNK = 1000


@dataclass(frozen=True)
class SweepResult:
    """The results of a sweep: every point, the Pareto front, where they were written and what this run did."""

    table: pd.DataFrame
    front: pd.DataFrame
    output: Path
    front_output: Path
    evaluated_points: int
    reused_points: int
    failed_points: int


def front_path(output: str | Path) -> Path:
    """Return the path of the Pareto front of `output`: results.parquet -> results.pareto.parquet."""
    output = Path(output)
    return output.with_name(f"{output.stem}.pareto{output.suffix or '.parquet'}")


def _as_spec(spec: SweepSpec | str | Path) -> SweepSpec:
    return spec if isinstance(spec, SweepSpec) else load_sweep_spec(spec)


def check_objectives(spec: SweepSpec, evaluator, accuracy) -> None:
    """Raise SweepSpecError for an objective or constraint that no evaluator returns, when the evaluators list their columns."""
    if len(spec.objectives) < 2:
        raise SweepSpecError([f"objectives: a Pareto front needs two or more objectives; got {[o.name for o in spec.objectives]}"], spec.source)
    evaluator_columns = getattr(evaluator, "columns", None)
    if evaluator_columns is None:
        return
    known = set(evaluator_columns) | set(spec.axis_names) | set(RESERVED_COLUMNS)
    if accuracy is not None:
        known |= set(getattr(accuracy, "columns", ()))
    errors = []
    for objective in spec.objectives:
        if objective.name not in known:
            errors.append(f"objectives.{objective.name}: no evaluator returns this column; columns: {', '.join(sorted(known - set(RESERVED_COLUMNS)))}")
    for index, constraint in enumerate(spec.constraints):
        if constraint.name not in known:
            errors.append(f"constraints[{index}]: no evaluator returns column {constraint.name!r}; columns: {', '.join(sorted(known - set(RESERVED_COLUMNS)))}")
    if errors:
        raise SweepSpecError(errors, spec.source)


def _chunk_size(spec: SweepSpec, pending: int, workers: int, requested: int | None) -> int:
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"invalid chunk_size={requested!r}: give a positive number of points per task")
        return requested
    if spec.chunk_size is not None:
        return spec.chunk_size
    return max(1, min(MAX_AUTOMATIC_CHUNK, math.ceil(pending / (workers * TASKS_PER_WORKER))))


def _normalise_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """Give each column the dtype it reads back from Parquet with, however the parts split it.

    Booleans with gaps become pandas' nullable boolean, and text with gaps
    (or no text at all, such as the error column of a sweep without
    failures) becomes the string dtype.
    """
    for column in frame.columns:
        series = frame[column]
        if series.dtype != object:
            continue
        present = series.dropna()
        if len(present) and present.map(lambda value: isinstance(value, (bool, np.bool_))).all():
            frame[column] = series.astype("boolean")
        elif present.map(lambda value: isinstance(value, str)).all():
            frame[column] = series.astype("str")
    return frame


def assemble_table(spec: SweepSpec, points: pd.DataFrame, accuracy: pd.DataFrame) -> pd.DataFrame:
    """Build the results table: one row per finished point, accuracy joined by policy, with feasible, pareto, knee and knee_distance columns."""
    if points.empty:
        table = pd.DataFrame(columns=["point_index", "point_id", "policy", "scenario", *spec.axis_names, "status", "error"])
    else:
        table = points.sort_values("point_index", kind="stable").reset_index(drop=True)
    if not accuracy.empty:
        table = table.merge(accuracy, on="policy", how="left", validate="many_to_one")
    table = _normalise_dtypes(table)

    feasible = (table["status"] == "ok").to_numpy(dtype=bool, copy=True)
    for constraint in spec.constraints:
        if constraint.name not in table.columns:
            raise KeyError(f"constraint {constraint.label!r}: column {constraint.name!r} is not in the results")
        column = table[constraint.name]
        met = constraint.satisfied_by(column.astype("float64") if not isinstance(constraint.value, bool) else column)
        feasible = feasible & pd.array(met, dtype="boolean").fillna(False).to_numpy(dtype=bool)
    objectives = {objective.name: objective.direction for objective in spec.objectives}
    for name in objectives:
        if name in table.columns:
            feasible = feasible & table[name].notna().to_numpy()
    table["feasible"] = feasible

    table["pareto"] = False
    table["knee"] = False
    table["knee_distance"] = np.nan
    candidates = table[table["feasible"]]
    if len(candidates) and all(name in table.columns for name in objectives):
        front = pareto_front(candidates, objectives)
        table.loc[front.index, "pareto"] = True
        table.loc[front.index, "knee"] = front["knee"].to_numpy()
        table.loc[front.index, "knee_distance"] = front["knee_distance"].to_numpy()
    return table


def front_table(spec: SweepSpec, table: pd.DataFrame) -> pd.DataFrame:
    """Select the Pareto rows of an assembled table, sorted by the first objective."""
    first = spec.objectives[0]
    front = table[table["pareto"]]
    if first.name not in front.columns:
        # No point succeeded, so the objective columns were never written.
        return front.reset_index(drop=True)
    return front.sort_values(first.name, ascending=first.direction == "min", kind="stable").reset_index(drop=True)


def _error_rows(points, reason: str) -> list[dict[str, Any]]:
    return [{"point_id": point.point_id, "status": "error", "error": reason} for point in points]


def prepare_evaluators(spec: SweepSpec, evaluator, accuracy):
    """Build the spec's evaluator and accuracy evaluator unless given, check them against the objectives and prepare them."""
    evaluator = evaluator if evaluator is not None else build_evaluator(spec.evaluator, dict(spec.evaluator_options))
    accuracy = accuracy if accuracy is not None else accuracy_evaluator(spec.accuracy)
    check_objectives(spec, evaluator, accuracy)
    if callable(getattr(evaluator, "prepare", None)):
        evaluator.prepare(spec)
    return evaluator, accuracy


def open_checkpoint(spec: SweepSpec, output: Path, resume: bool, **description) -> CheckpointStore:
    """Create or reopen the checkpoint of `output`."""
    output.parent.mkdir(parents=True, exist_ok=True)
    description = {"name": spec.name, "source": spec.source, "points": spec.num_points, **description}
    return CheckpointStore.open(checkpoint_dir(output), spec.fingerprint(), resume=resume, description=description)


def _pending_work(spec: SweepSpec, store: CheckpointStore, points, accuracy, retry_failed: bool):
    """Find the points the checkpoint lacks, and the policies whose accuracy it lacks for these accuracy settings.

    With retry_failed, stored errors count as lacking.
    """
    stored = store.read_points()
    if retry_failed and not stored.empty:
        stored = stored[stored["status"] == "ok"]
    done = set(stored["point_id"]) if not stored.empty else set()
    pending = [point for point in points if point.point_id not in done]
    if accuracy is None:
        return pending, []
    stored_accuracy = store.read_accuracy()
    if not stored_accuracy.empty:
        stored_accuracy = stored_accuracy[stored_accuracy["accuracy_key"] == accuracy_key(accuracy)]
    if retry_failed and not stored_accuracy.empty:
        stored_accuracy = stored_accuracy[stored_accuracy["accuracy_status"] == "ok"]
    measured = set(stored_accuracy["policy"]) if not stored_accuracy.empty else set()
    return pending, [policy for policy in spec.policies if policy not in measured]


def write_results(spec: SweepSpec, store: CheckpointStore, output: Path) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """Assemble the table from the checkpoint and write it and its Pareto front atomically."""
    table = assemble_table(spec, store.read_points(), store.read_accuracy())
    front = front_table(spec, table)
    write_atomically(output, frame_to_parquet_bytes(table))
    pareto_output = front_path(output)
    write_atomically(pareto_output, frame_to_parquet_bytes(front))
    log.info("sweep %s: wrote %d rows to %s and %d Pareto rows to %s", spec.name, len(table), output, len(front), pareto_output)
    return table, front, pareto_output


def _build_tasks(pending, pending_policies, evaluator, accuracy, size: int) -> tuple[list[Task], dict[str, list]]:
    """Build the accuracy tasks, then one task per chunk of `size` points.

    Keys carry a random token, so runs that share a Dask cluster do not collide.
    """
    token = uuid.uuid4().hex[:8]
    tasks = [Task(f"accuracy-{token}-{i}", evaluate_accuracy, (accuracy, policy)) for i, policy in enumerate(pending_policies)]
    chunks = {}
    for start in range(0, len(pending), size):
        key = f"points-{token}-{start // size}"
        chunks[key] = pending[start:start + size]
        tasks.append(Task(key, evaluate_points, (evaluator, chunks[key])))
    return tasks, chunks


def _store_points(store: CheckpointStore, chunk, result, failures_so_far: int) -> int:
    """Write one finished chunk as a part, logging its first failures; return how many of its points failed."""
    rows = _error_rows(chunk, result.reason) if isinstance(result, TaskLost) else result
    by_id = {point.point_id: point for point in chunk}
    full_rows = []
    failures = 0
    for row in rows:
        point = by_id[row["point_id"]]
        full_rows.append({**point.columns(), **row})
        if row["status"] != "ok":
            failures += 1
            if failures_so_far + failures <= MAX_LOGGED_FAILURES:
                log.warning("point %s (index %d, policy %s) failed: %s", point.point_id, point.index, point.policy, row["error"])
    store.write_points(full_rows)
    return failures


def _store_accuracy(store: CheckpointStore, accuracy, policy: str, result) -> None:
    if isinstance(result, TaskLost):
        result = {"policy": policy, "accuracy_key": accuracy_key(accuracy), "accuracy_status": "error", "accuracy_error": result.reason}
    if result["accuracy_status"] != "ok":
        log.warning("accuracy of policy %s failed: %s", result["policy"], result["accuracy_error"])
    store.write_accuracy([result])


def run_sweep(
    spec: SweepSpec | str | Path,
    output: str | Path,
    *,
    executor: str | Executor = "local",
    workers: int = 2,
    scheduler: str | None = None,
    resume: bool = False,
    retry_failed: bool = False,
    evaluator=None,
    accuracy=None,
    chunk_size: int | None = None,
    progress: bool = True,
) -> SweepResult:
    """Evaluate every point of `spec` that the checkpoint lacks, then write `output` and its Pareto front.

    executor: "local", "processes", "dask", or an `Executor`; workers and
        scheduler configure the ones built here.
    resume: continue the checkpoint of `output`; without it an existing
        checkpoint is an error. retry_failed: evaluate again the points
        (and policies) whose stored result is an error.
    evaluator, accuracy: objects that replace the spec's evaluator and
        accuracy evaluator; the checkpoint fingerprint covers the spec only.
    progress: show a progress bar on a terminal (never in a pipe).

    Raises SweepSpecError for objectives nothing returns, CheckpointError for
    a checkpoint of another spec, CheckpointWriteError when the disk is
    full, and WorkerCrashError when process-pool workers keep dying.
    """
    spec = _as_spec(spec)
    output = Path(output)
    if not isinstance(executor, Executor):
        check_executor_choice(executor, scheduler)
    evaluator, accuracy = prepare_evaluators(spec, evaluator, accuracy)
    with open_checkpoint(spec, output, resume) as store:
        points = spec.points()
        pending, pending_policies = _pending_work(spec, store, points, accuracy, retry_failed)
        reused = len(points) - len(pending)

        own_executor = not isinstance(executor, Executor)
        runner = make_executor(executor, workers=workers, scheduler=scheduler) if own_executor else executor
        size = _chunk_size(spec, len(pending), runner.workers, chunk_size)
        tasks, chunks = _build_tasks(pending, pending_policies, evaluator, accuracy, size)
        log.info("sweep %s: %d points, %d stored, %d to evaluate in %d task(s) of up to %d on %s; %d policy accuracy task(s)",
                 spec.name, len(points), reused, len(pending), len(chunks), size, runner.name, len(pending_policies))

        failures = 0
        bar = tqdm(total=len(pending), unit="point", desc=f"sweep {spec.name}", disable=None if progress else True)
        try:
            for task, result in runner.run(tasks):
                if task.key in chunks:
                    failures += _store_points(store, chunks[task.key], result, failures)
                    bar.update(len(chunks[task.key]))
                else:
                    _store_accuracy(store, accuracy, task.arguments[1], result)
        finally:
            bar.close()
            if own_executor:
                runner.close()
        if failures > MAX_LOGGED_FAILURES:
            log.warning("%d points failed in this run; the error column of the results gives each reason", failures)

        table, front, pareto_output = write_results(spec, store, output)
        return SweepResult(table, front, output, pareto_output, len(pending), reused, failures)
