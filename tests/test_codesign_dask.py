"""The Dask executor on a LocalCluster: the same table as in-process, and a dead worker's task run again."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from hwsim.codesign import DaskExecutor, SweepSpec, SystolicCostEvaluator, run_sweep

distributed = pytest.importorskip("distributed", reason='the Dask executor needs dask.distributed: pip install "dask[distributed]"')

SPEC = {
    "name": "test-dask",
    "model": "smollm2-135m",
    "accelerator": "tpu-v1",
    "policies": ["w8a8", "w4a8"],
    "hardware": {"array_size": [16, 32], "sram_bytes": [65536, 262144], "pe.fallback": ["dequantize", "none"]},
    "scenarios": [{"phase": "decode", "batch_size": 1, "context_tokens": 128, "generated_tokens": 2}],
    "objectives": {"latency_s": "min", "energy_j": "min", "area_mm2": "min"},
    "evaluator": "systolic",
    "chunk_size": 2,
}


class KillFirstAttempt:
    """The systolic evaluator, point by point, except that it ends its worker process the first time it reaches one point.

    The marker file remembers that attempt, so the point succeeds when it runs again.
    """

    def __init__(self, marker: str, index: int) -> None:
        self.inner = SystolicCostEvaluator()
        self.marker = marker
        self.index = index
        self.prepare = self.inner.prepare

    def evaluate(self, point):
        if point.index == self.index and not os.path.exists(self.marker):
            with open(self.marker, "w") as handle:
                handle.write(f"killed at point {point.index}\n")
            os._exit(1)
        return self.inner.evaluate(point)


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    return run_sweep(SweepSpec.from_dict(SPEC), tmp_path_factory.mktemp("local") / "results.parquet", progress=False).table


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of two one-thread worker processes, shared by the tests through its scheduler address."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    yield cluster
    cluster.close()


def test_dask_matches_in_process(in_process, cluster, tmp_path):
    with DaskExecutor(address=cluster.scheduler_address) as executor:
        assert executor.workers == 2
        result = run_sweep(SweepSpec.from_dict(SPEC), tmp_path / "results.parquet", executor=executor, progress=False)
    pd.testing.assert_frame_equal(result.table, in_process)


def test_dask_runs_a_dead_workers_task_again(in_process, cluster, tmp_path):
    marker = tmp_path / "killed.txt"
    with DaskExecutor(address=cluster.scheduler_address) as executor:
        result = run_sweep(SweepSpec.from_dict(SPEC), tmp_path / "results.parquet", executor=executor,
                           evaluator=KillFirstAttempt(str(marker), 5), progress=False)
    assert marker.read_text() == "killed at point 5\n"
    pd.testing.assert_frame_equal(result.table, in_process)
