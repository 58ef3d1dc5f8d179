"""SCALE-Sim v3 as an oracle: its own virtual environment, run as a subprocess.

`scalesim` 3.0.0 from PyPI fails under numpy 2 ("only 0-dimensional arrays
can be converted to Python scalars"), so it gets a virtual environment with
`numpy<2`, created on first use. `run_scalesim` sends GEMMs to
`_scalesim_runner.py` inside that environment and returns SCALE-Sim's
reports. The environment lives at $HWSIM_SCALESIM_VENV if set, else at
.venv-scalesim in the repository root of a source checkout, else under
~/.cache/hwsim.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import venv
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SCALESIM_REQUIREMENTS = ("scalesim==3.0.0", "numpy<2")
RUNNER = Path(__file__).with_name("_scalesim_runner.py")
VENV_ENVIRONMENT_VARIABLE = "HWSIM_SCALESIM_VENV"


@dataclass(frozen=True)
class ScaleSimCase:
    """One GEMM under one SCALE-Sim configuration, in SCALE-Sim's units (kB of SRAM, words per cycle)."""

    rows: int
    cols: int
    dataflow: str
    ifmap_kb: int
    filter_kb: int
    ofmap_kb: int
    bandwidth: int
    m: int
    n: int
    k: int


def default_venv_path() -> Path:
    if os.environ.get(VENV_ENVIRONMENT_VARIABLE):
        return Path(os.environ[VENV_ENVIRONMENT_VARIABLE])
    repository_root = Path(__file__).resolve().parents[2]
    if (repository_root / "pyproject.toml").exists():
        return repository_root / ".venv-scalesim"
    return Path.home() / ".cache" / "hwsim" / "venv-scalesim"


def _venv_python(path: Path) -> Path:
    return path / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def _has_scalesim(python: Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run([str(python), "-c", "import scalesim.scale_sim"], capture_output=True, text=True)
    return probe.returncode == 0


def ensure_scalesim_venv(path: Path | None = None) -> Path:
    """Return the Python of a virtual environment with SCALE-Sim 3.0.0, creating it if needed (needs pip access)."""
    path = Path(path) if path is not None else default_venv_path()
    python = _venv_python(path)
    if _has_scalesim(python):
        return python
    log.info("creating a SCALE-Sim virtual environment at %s", path)
    venv.EnvBuilder(with_pip=True, clear=python.exists()).create(path)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *SCALESIM_REQUIREMENTS], capture_output=True, text=True
    )
    if install.returncode != 0 or not _has_scalesim(python):
        raise RuntimeError(
            f"failed to install {' '.join(SCALESIM_REQUIREMENTS)} into {path}: {install.stderr.strip()[-2000:]}; "
            f"check network access to the package index, or set {VENV_ENVIRONMENT_VARIABLE} to an environment that has it"
        )
    log.info("SCALE-Sim environment ready at %s", path)
    return python


def run_scalesim(cases: list[ScaleSimCase], python: Path | None = None, timeout_s: float = 600.0) -> list[dict]:
    """SCALE-Sim's cycle and traffic reports for each case, in order."""
    python = python if python is not None else ensure_scalesim_venv()
    payload = json.dumps([asdict(case) for case in cases])
    try:
        completed = subprocess.run(
            [str(python), str(RUNNER)], input=payload, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"SCALE-Sim timed out after {timeout_s} s on {len(cases)} GEMM(s); send fewer or smaller GEMMs") from error
    if completed.returncode != 0:
        raise RuntimeError(f"SCALE-Sim failed (exit status {completed.returncode}): {completed.stderr.strip()[-2000:]}")
    results = json.loads(completed.stdout)
    if len(results) != len(cases):
        raise RuntimeError(f"SCALE-Sim returned {len(results)} results for {len(cases)} GEMMs")
    return results
