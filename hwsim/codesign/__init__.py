"""Co-design sweeps: bit policies x accelerator parameters x scenarios, checkpointed, with Pareto fronts.

    from hwsim.codesign import load_sweep_spec, run_sweep
    result = run_sweep(load_sweep_spec("studies/codesign_example.yaml"), "results.parquet", executor="processes")
    result.front        # the feasible Pareto-optimal points, knee marked

- `spec`: the sweep spec (YAML or dict), its validation and its points;
- `overrides`: hardware axes as overrides on a base accelerator YAML;
- `evaluators`: the evaluator plug-in interface and the shipped evaluators;
- `systolic_cost`: workload cost on a systolic array, cheap per point;
- `accuracy`: accuracy per policy (perplexity, embedding similarity, weight SQNR);
- `executors`: in-process, process pool and Dask executors;
- `store`: the checkpoint of atomically written Parquet parts;
- `engine`: `run_sweep`;
- `pareto`: Pareto fronts and knee points;
- `search`: multi-objective search with optuna (optional dependency).
"""

from hwsim.codesign.accuracy import EmbeddingSimilarityAccuracy, PerplexityAccuracy, WeightSqnrAccuracy
from hwsim.codesign.engine import SweepResult, assemble_table, front_path, run_sweep
from hwsim.codesign.evaluators import Evaluator, SimulateEvaluator, build_evaluator, evaluate_points
from hwsim.codesign.executors import DaskExecutor, Executor, InProcessExecutor, ProcessPoolExecutor, Task, TaskLost, WorkerCrashError, make_executor
from hwsim.codesign.pareto import knee_distances, knee_mask, pareto_front, pareto_mask
from hwsim.codesign.spec import Axis, Constraint, Objective, Point, SweepSpec, SweepSpecError, load_sweep_spec
from hwsim.codesign.store import CheckpointError, CheckpointStore, CheckpointWriteError, checkpoint_dir
from hwsim.codesign.systolic_cost import SystolicCostEvaluator

__all__ = [
    "Axis",
    "CheckpointError",
    "CheckpointStore",
    "CheckpointWriteError",
    "Constraint",
    "DaskExecutor",
    "EmbeddingSimilarityAccuracy",
    "Evaluator",
    "Executor",
    "InProcessExecutor",
    "Objective",
    "PerplexityAccuracy",
    "Point",
    "ProcessPoolExecutor",
    "SimulateEvaluator",
    "SweepResult",
    "SweepSpec",
    "SweepSpecError",
    "SystolicCostEvaluator",
    "Task",
    "TaskLost",
    "WeightSqnrAccuracy",
    "WorkerCrashError",
    "assemble_table",
    "build_evaluator",
    "checkpoint_dir",
    "evaluate_points",
    "front_path",
    "knee_distances",
    "knee_mask",
    "load_sweep_spec",
    "make_executor",
    "pareto_front",
    "pareto_mask",
    "run_sweep",
]
