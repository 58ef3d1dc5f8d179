"""`hwsim sweep`: a run killed half-way resumes to the uninterrupted table; executors and bad input from the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hwsim.cli import main
from hwsim.codesign import SystolicCostEvaluator, checkpoint_dir, front_path, run_sweep

TESTS = Path(__file__).resolve().parent
REPOSITORY = TESTS.parent
BLOCK_VARIABLE = "HWSIM_TEST_SWEEP_BLOCK_AT"

SPEC = {
    "name": "test-cli",
    "model": "smollm2-135m",
    "accelerator": "tpu-v1",
    "policies": ["w8a8", "w4a8"],
    "hardware": {"array_size": [16, 32], "sram_bytes": [65536, 262144], "pe.fallback": ["dequantize"]},
    "scenarios": [{"phase": "decode", "batch_size": 1, "context_tokens": 128, "generated_tokens": 2}],
    "objectives": {"latency_s": "min", "energy_j": "min", "area_mm2": "min"},
    "evaluator": "test_codesign_cli:blocking_evaluator",
    "chunk_size": 2,
}


class BlockAt:
    """The systolic evaluator, point by point, except that it hangs at the point index in $HWSIM_TEST_SWEEP_BLOCK_AT until killed."""

    columns = SystolicCostEvaluator.columns

    def __init__(self) -> None:
        self.inner = SystolicCostEvaluator()
        self.prepare = self.inner.prepare

    def evaluate(self, point):
        if os.environ.get(BLOCK_VARIABLE) == str(point.index):
            while True:
                time.sleep(1)
        return self.inner.evaluate(point)


def blocking_evaluator() -> BlockAt:
    return BlockAt()


def hwsim_command(*arguments: str, block_at: int | None = None, **popen) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPOSITORY), str(TESTS)])}
    environment.pop(BLOCK_VARIABLE, None)
    if block_at is not None:
        environment[BLOCK_VARIABLE] = str(block_at)
    return subprocess.Popen([sys.executable, "-m", "hwsim", *arguments], env=environment, cwd=REPOSITORY,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def run_main(capsys, *arguments: str) -> tuple[int, str, str]:
    """Run `hwsim` in this process: the same code path as the command, without the seconds of a fresh interpreter."""
    status = main(list(arguments))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "sweep.yaml"
    path.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def uninterrupted(spec_path, tmp_path_factory):
    # pytest put this folder on sys.path, so the spec's evaluator plug-in imports from this module.
    return run_sweep(spec_path, tmp_path_factory.mktemp("uninterrupted") / "results.parquet", progress=False)


def stored_point_indices(output: Path) -> list[int]:
    parts = list(checkpoint_dir(output).glob("points-*.parquet"))
    return sorted(index for part in parts for index in pd.read_parquet(part)["point_index"])


def test_killed_sweep_resumes_to_same_table(spec_path, uninterrupted, tmp_path, capsys):
    output = tmp_path / "results.parquet"
    process = hwsim_command("sweep", str(spec_path), "-o", str(output), block_at=6)
    try:
        deadline = time.monotonic() + 240
        # Chunks of 2: points 0 to 5 are stored, then the chunk of points 6 and 7 hangs.
        while stored_point_indices(output) != list(range(6)):
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the sweep did not store points 0 to 5 within 240 s"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert not output.exists()

    status, stdout, stderr = run_main(capsys, "sweep", str(spec_path), "-o", str(output), "--resume")
    assert status == 0, stderr
    assert "8 points (2 evaluated now, 6 from the checkpoint)" in stdout
    pd.testing.assert_frame_equal(pd.read_parquet(output), uninterrupted.table)
    pd.testing.assert_frame_equal(pd.read_parquet(front_path(output)), uninterrupted.front)


@pytest.mark.parametrize("executor", ["processes", "dask"])
def test_executors_match_in_process(spec_path, uninterrupted, tmp_path, capsys, executor):
    if executor == "dask":
        pytest.importorskip("distributed", reason='the Dask executor needs dask.distributed: pip install "dask[distributed]"')
    output = tmp_path / "results.parquet"
    status, stdout, stderr = run_main(capsys, "sweep", str(spec_path), "-o", str(output), "--executor", executor, "--workers", "2")
    assert status == 0, stderr
    assert "8 points (8 evaluated now, 0 from the checkpoint)" in stdout
    assert f"Pareto front: {front_path(output)}" in stdout
    pd.testing.assert_frame_equal(pd.read_parquet(output), uninterrupted.table)


def test_invalid_spec_names_the_axis(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "hardware": {"array_size": [16], "memory.weight_buffer.capacity": [1024]}}))
    status, _, stderr = run_main(capsys, "sweep", str(path), "-o", str(tmp_path / "r.parquet"))
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("hwsim sweep: error: invalid sweep spec")
    assert "hardware axis 'memory.weight_buffer.capacity'" in lines[0]
    assert "did you mean 'capacity_bytes'" in lines[0]


def test_existing_checkpoint_without_resume(spec_path, uninterrupted, capsys):
    status, _, stderr = run_main(capsys, "sweep", str(spec_path), "-o", str(uninterrupted.output))
    assert status == 2
    assert "pass --resume" in stderr


def test_usage_errors(spec_path, tmp_path, capsys):
    status, _, stderr = run_main(capsys, "sweep", str(spec_path), "-o", str(tmp_path / "r.parquet"), "--retry-failed")
    assert (status, stderr.strip()) == (2, "hwsim sweep: error: --retry-failed applies to a resumed sweep; add --resume")
    status, _, stderr = run_main(capsys, "sweep", str(spec_path), "-o", str(tmp_path / "r.parquet"), "--search", "nsga2")
    assert (status, stderr.strip()) == (2, "hwsim sweep: error: --search needs --trials N, the number of points to evaluate")
    status, _, stderr = run_main(capsys, "sweep", str(spec_path), "-o", str(tmp_path / "r.parquet"), "--scheduler", "tcp://127.0.0.1:1")
    assert status == 2
    assert "applies to the dask executor only" in stderr


def test_search_without_optuna_is_a_clear_error(spec_path, tmp_path, capsys, monkeypatch):
    # None in sys.modules makes `import optuna` raise ImportError, as on a machine without it.
    monkeypatch.setitem(sys.modules, "optuna", None)
    status, _, stderr = run_main(capsys, "sweep", str(spec_path), "-o", str(tmp_path / "r.parquet"), "--search", "nsga2", "--trials", "4")
    assert status == 2
    assert stderr.strip() == "hwsim sweep: error: the multi-objective search needs optuna, which is not installed: pip install optuna"
