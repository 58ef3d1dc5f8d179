"""Sweeps end to end: checkpoints, resume after an interruption, faults, and the process pool against in-process."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess

import numpy as np
import pandas as pd
import pytest

from hwsim.codesign import (
    CheckpointError,
    CheckpointStore,
    CheckpointWriteError,
    ProcessPoolExecutor,
    SweepSpec,
    SweepSpecError,
    SystolicCostEvaluator,
    checkpoint_dir,
    pareto_front,
    run_sweep,
)
from hwsim.codesign import store as store_module
from hwsim.codesign.policies import resolve_policy
from hwsim.policy.policy import bits_per_parameter
from hwsim.workload import load_model

SPEC = {
    "name": "test-sweep",
    "model": "smollm2-135m",
    "accelerator": "tpu-v1",
    "policies": ["w8a8", "w4a8"],
    "hardware": {"array_size": [16, 32], "sram_bytes": [65536, 262144], "pe.fallback": ["dequantize", "none"]},
    "scenarios": [{"phase": "decode", "batch_size": 1, "context_tokens": 128, "generated_tokens": 2}],
    "objectives": {"latency_s": "min", "energy_j": "min", "area_mm2": "min"},
    "constraints": ["fits == true"],
    "evaluator": "systolic",
    "chunk_size": 2,
}


def make_spec(**changes) -> SweepSpec:
    return SweepSpec.from_dict({**SPEC, **changes})


class InterruptAt:
    """The systolic evaluator, point by point, except that it raises KeyboardInterrupt, as Ctrl-C would, at one point."""

    def __init__(self, index: int) -> None:
        self.inner = SystolicCostEvaluator()
        self.index = index
        self.prepare = self.inner.prepare

    def evaluate(self, point):
        if point.index == self.index:
            raise KeyboardInterrupt
        return self.inner.evaluate(point)


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


class CountingBitsAccuracy:
    """Bits per linear-layer weight of the policy, appending each call to a log file so tests can count calls."""

    columns = ("weight_bits_per_parameter",)
    key = "weight bits"

    def __init__(self, log_path: str) -> None:
        self.log_path = log_path
        self.model = load_model("smollm2-135m")

    def evaluate_policy(self, policy_text: str) -> dict[str, float]:
        with open(self.log_path, "a") as handle:
            handle.write(policy_text + "\n")
        return {"weight_bits_per_parameter": bits_per_parameter(resolve_policy(policy_text), self.model)}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The uninterrupted in-process sweep."""
    output = tmp_path_factory.mktemp("baseline") / "results.parquet"
    return run_sweep(make_spec(), output, progress=False)


def test_sweep_writes_table_and_front(baseline):
    table = baseline.table
    assert table["point_index"].tolist() == list(range(16))
    # pe.fallback none cannot run the fp16 LM head, so those points fail with their reason recorded.
    assert table["status"].tolist() == ["ok", "ok", "error", "error"] * 4
    assert table.loc[table["status"] == "error", "error"].str.startswith("UnsupportedFormatError").all()
    assert table.loc[table["status"] == "ok", "feasible"].all()

    objectives = {"latency_s": "min", "energy_j": "min", "area_mm2": "min"}
    expected_front = pareto_front(table[table["feasible"]], objectives)
    assert sorted(table.index[table["pareto"]]) == sorted(expected_front.index)
    assert table["knee"].sum() >= 1
    assert (table["knee"] <= table["pareto"]).all()

    pd.testing.assert_frame_equal(pd.read_parquet(baseline.output), table)
    assert pd.read_parquet(baseline.front_output)["point_id"].tolist() == baseline.front["point_id"].tolist()
    assert baseline.front["pareto"].all()


def test_interrupted_sweep_resumes_to_same_table(baseline, tmp_path):
    output = tmp_path / "results.parquet"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(make_spec(), output, evaluator=InterruptAt(9), progress=False)
    # Chunks of 2: points 0 to 7 finished before point 9's chunk was interrupted.
    saved = pd.concat(pd.read_parquet(p) for p in checkpoint_dir(output).glob("points-*.parquet"))
    assert sorted(saved["point_index"]) == list(range(8))
    assert not output.exists()

    resumed = run_sweep(make_spec(), output, resume=True, progress=False)
    assert (resumed.evaluated_points, resumed.reused_points) == (8, 8)
    pd.testing.assert_frame_equal(resumed.table, baseline.table)


def test_existing_checkpoint_needs_resume(baseline):
    with pytest.raises(CheckpointError, match="pass --resume"):
        run_sweep(make_spec(), baseline.output, progress=False)


def test_checkpoint_of_another_spec_is_rejected(baseline):
    with pytest.raises(CheckpointError, match="belongs to a sweep with other points"):
        run_sweep(make_spec(policies=["w8a8"]), baseline.output, resume=True, progress=False)


def test_resume_with_other_objectives_reuses_points(baseline, tmp_path):
    output = tmp_path / "results.parquet"
    checkpoint_dir(output).mkdir()
    for path in checkpoint_dir(baseline.output).iterdir():
        (checkpoint_dir(output) / path.name).write_bytes(path.read_bytes())
    result = run_sweep(make_spec(objectives={"latency_s": "min", "weight_bytes": "min"}), output, resume=True, progress=False)
    assert result.evaluated_points == 0
    assert result.table["latency_s"].equals(baseline.table["latency_s"])


def test_retry_failed_evaluates_errors_again(baseline, tmp_path):
    output = tmp_path / "results.parquet"
    run_sweep(make_spec(), output, progress=False)
    again = run_sweep(make_spec(), output, resume=True, retry_failed=True, progress=False)
    assert again.evaluated_points == 8
    pd.testing.assert_frame_equal(again.table, baseline.table)


def test_objective_that_no_evaluator_returns(tmp_path):
    with pytest.raises(SweepSpecError, match="objectives.perplexity_x: no evaluator returns this column"):
        run_sweep(make_spec(objectives={"latency_s": "min", "perplexity_x": "min"}), tmp_path / "r.parquet", progress=False)


def test_full_disk_leaves_no_corrupt_file(baseline, tmp_path, monkeypatch):
    output = tmp_path / "results.parquet"
    real_write = store_module._write_all
    writes = []

    def fill_disk_on_fourth_write(handle, data):
        writes.append(len(data))
        if len(writes) == 4:
            # A real full disk takes part of the data, then fails.
            handle.write(data[: len(data) // 2])
            handle.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(handle, data)

    monkeypatch.setattr(store_module, "_write_all", fill_disk_on_fourth_write)
    with pytest.raises(CheckpointWriteError, match="no space left on the device") as caught:
        run_sweep(make_spec(), output, progress=False)
    assert caught.value.errno == errno.ENOSPC
    assert "--resume" in str(caught.value)

    # The header and two parts were written whole; the failed part left nothing behind.
    folder = checkpoint_dir(output)
    assert sorted(p.name for p in folder.iterdir()) == ["points-000001.parquet", "points-000002.parquet", "sweep.json"]
    saved = pd.concat(pd.read_parquet(p) for p in folder.glob("points-*.parquet"))
    assert sorted(saved["point_index"]) == [0, 1, 2, 3]

    monkeypatch.setattr(store_module, "_write_all", real_write)
    resumed = run_sweep(make_spec(), output, resume=True, progress=False)
    assert resumed.evaluated_points == 12
    pd.testing.assert_frame_equal(resumed.table, baseline.table)


def test_process_pool_matches_in_process(tmp_path):
    calls = tmp_path / "accuracy-calls.txt"
    spec = make_spec(objectives={"latency_s": "min", "energy_j": "min", "weight_bits_per_parameter": "min"})
    local = run_sweep(spec, tmp_path / "local.parquet", accuracy=CountingBitsAccuracy(str(calls)), progress=False)
    assert sorted(calls.read_text().split()) == ["w4a8", "w8a8"]

    pooled = run_sweep(spec, tmp_path / "pool.parquet", executor="processes", workers=2,
                       accuracy=CountingBitsAccuracy(str(calls)), progress=False)
    pd.testing.assert_frame_equal(pooled.table, local.table)
    # Two policies measured by each run, once each, whatever the number of hardware points.
    assert sorted(calls.read_text().split()) == ["w4a8", "w4a8", "w8a8", "w8a8"]
    bits = {policy: bits_per_parameter(resolve_policy(policy), load_model("smollm2-135m")) for policy in ("w8a8", "w4a8")}
    assert np.array_equal(local.table["weight_bits_per_parameter"], local.table["policy"].map(bits))

    again = run_sweep(spec, tmp_path / "pool.parquet", resume=True, accuracy=CountingBitsAccuracy(str(calls)), progress=False)
    assert again.evaluated_points == 0
    assert len(calls.read_text().split()) == 4

    # Accuracy stored under other settings (another key) is measured again on resume.
    other_settings = CountingBitsAccuracy(str(calls))
    other_settings.key = "weight bits, other settings"
    run_sweep(spec, tmp_path / "pool.parquet", resume=True, accuracy=other_settings, progress=False)
    assert len(calls.read_text().split()) == 6


def test_process_pool_recovers_from_dead_worker(baseline, tmp_path):
    marker = tmp_path / "killed.txt"
    with ProcessPoolExecutor(workers=2) as executor:
        result = run_sweep(make_spec(), tmp_path / "results.parquet", executor=executor,
                           evaluator=KillFirstAttempt(str(marker), 5), progress=False)
        restarts = executor.restarts
    assert marker.read_text() == "killed at point 5\n"
    assert restarts == 1
    pd.testing.assert_frame_equal(result.table, baseline.table)


def test_process_pool_interrupt_then_resume(baseline, tmp_path):
    output = tmp_path / "results.parquet"
    # KeyboardInterrupt raised in a worker reaches the driver through the future, as Ctrl-C would.
    with pytest.raises(KeyboardInterrupt):
        run_sweep(make_spec(), output, executor="processes", workers=2, evaluator=InterruptAt(9), progress=False)
    saved = pd.concat(pd.read_parquet(p) for p in checkpoint_dir(output).glob("points-*.parquet"))
    assert 9 not in set(saved["point_index"])

    resumed = run_sweep(make_spec(), output, executor="processes", workers=2, resume=True, progress=False)
    assert resumed.evaluated_points == 16 - len(saved)
    pd.testing.assert_frame_equal(resumed.table, baseline.table)


def test_checkpoint_lock_rejects_second_writer(tmp_path):
    folder = tmp_path / "checkpoint"
    with CheckpointStore.open(folder, "fingerprint", resume=False):
        with pytest.raises(CheckpointError, match=f"in use by process {os.getpid()} on host"):
            CheckpointStore.open(folder, "fingerprint", resume=True)
    assert not (folder / "sweep.lock").exists()


def test_checkpoint_stale_lock_taken_over(tmp_path):
    folder = tmp_path / "checkpoint"
    CheckpointStore.open(folder, "fingerprint", resume=False).close()
    finished = subprocess.Popen(["true"])
    finished.wait()
    dead_pid = finished.pid
    # A sweep killed with SIGKILL leaves its lock behind, as here.
    (folder / "sweep.lock").write_text(json.dumps({"pid": dead_pid, "host": socket.gethostname()}))
    with CheckpointStore.open(folder, "fingerprint", resume=True):
        assert json.loads((folder / "sweep.lock").read_text())["pid"] == os.getpid()
