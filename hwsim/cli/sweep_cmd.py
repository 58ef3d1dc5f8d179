"""`hwsim sweep`: run a co-design sweep from a spec file, checkpointed, and print its Pareto front."""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from hwsim.cli import UsageError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="sweep bit policies x accelerator parameters x scenarios and write results with the Pareto front",
        description=(
            "Evaluate every point of a sweep spec (see hwsim.codesign.spec for the format), writing finished points to a "
            "checkpoint as they complete. Writes OUTPUT (every point) and OUTPUT with .pareto before the suffix (the front), "
            "and prints the front."
        ),
    )
    parser.add_argument("spec", metavar="SPEC.yaml", help="the sweep spec file")
    parser.add_argument("-o", "--output", required=True, metavar="RESULTS.parquet", help="the results table to write; its checkpoint is RESULTS.parquet.checkpoint/")
    parser.add_argument("--executor", choices=("local", "processes", "dask"), default="local",
                        help="where points run: this process (local), a process pool (processes) or Dask distributed (dask); default local")
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="worker processes of the process pool or of the Dask LocalCluster (default 2)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS", help="address of a running Dask scheduler, such as tcp://10.0.0.5:8786 (with --executor dask)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint of OUTPUT, evaluating only the points it lacks")
    parser.add_argument("--retry-failed", action="store_true", help="with --resume, evaluate again the points whose stored result is an error")
    parser.add_argument("--chunk-size", type=int, default=None, metavar="N", help="points per task and per checkpoint part (default: the spec's chunk_size, else automatic)")
    parser.add_argument("--search", choices=("nsga2", "nsga3", "tpe", "random"), default=None,
                        help="in place of the full grid, evaluate --trials points that this optuna sampler chooses (needs optuna)")
    parser.add_argument("--trials", type=int, default=None, metavar="N", help="points to evaluate with --search")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --search sampler (default 0)")
    parser.add_argument("--show", type=int, default=20, metavar="N", help="Pareto rows to print (default 20; 0 prints none)")
    parser.set_defaults(func=run)


def _front_columns(result, spec) -> list[str]:
    preferred_columns = ["point_index", "policy", "scenario", *spec.axis_names, *(o.name for o in spec.objectives), "knee"]
    return [column for column in dict.fromkeys(preferred_columns) if column in result.front.columns]


def run(args: argparse.Namespace) -> int:
    from hwsim.codesign import CheckpointError, CheckpointWriteError, WorkerCrashError, load_sweep_spec, run_sweep
    from hwsim.codesign.search import SearchUnavailableError, run_search

    if args.retry_failed and not args.resume:
        raise UsageError("--retry-failed applies to a resumed sweep; add --resume")
    if args.search and args.trials is None:
        raise UsageError("--search needs --trials N, the number of points to evaluate")
    if args.trials is not None and not args.search:
        raise UsageError("--trials applies to --search; add --search nsga2, or drop --trials for the full grid")
    spec = load_sweep_spec(args.spec)
    common = {"executor": args.executor, "workers": args.workers, "scheduler": args.scheduler, "resume": args.resume}
    try:
        if args.search:
            result = run_search(spec, args.output, trials=args.trials, sampler=args.search, seed=args.seed, **common)
        else:
            result = run_sweep(spec, args.output, retry_failed=args.retry_failed, chunk_size=args.chunk_size, **common)
    except (CheckpointError, SearchUnavailableError) as error:
        raise UsageError(str(error)) from None
    except (CheckpointWriteError, WorkerCrashError) as error:
        print(f"hwsim sweep: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hwsim sweep: interrupted; finished points are in the checkpoint, rerun with --resume to continue", file=sys.stderr)
        return 130

    table = result.table
    failed = int((table["status"] != "ok").sum())
    feasible = int(table["feasible"].sum())
    print(f"{len(table)} points ({result.evaluated_points} evaluated now, {result.reused_points} from the checkpoint), "
          f"{failed} failed, {feasible} feasible, {len(result.front)} on the Pareto front")
    print(f"results: {result.output}")
    print(f"Pareto front: {result.front_output}")
    if args.show and len(result.front):
        with pd.option_context("display.width", 200, "display.max_columns", 40):
            print(result.front[_front_columns(result, spec)].head(args.show).to_string(index=False))
    return 0
