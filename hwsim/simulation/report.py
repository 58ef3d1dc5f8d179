"""The result of `hwsim.simulate`: one row per op, totals per phase, and the memory footprint."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import pandas as pd


class ModelDoesNotFitError(ValueError):
    """The model, its KV cache and activations need more memory than the accelerator has."""


@dataclass(frozen=True)
class MemoryFootprint:
    """Bytes a scenario needs at its peak, against the accelerator's main memory.

    `kv_cache_bytes` is the cache at the longest sequence of the scenarios;
    `activation_bytes` is the largest working set of one op (its inputs and
    outputs other than weights and cache).
    """

    weight_bytes: float
    kv_cache_bytes: float
    activation_bytes: float
    capacity_bytes: float
    memory_level: str

    @property
    def peak_bytes(self) -> float:
        return self.weight_bytes + self.kv_cache_bytes + self.activation_bytes

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.capacity_bytes

    def describe(self) -> str:
        return (
            f"needs {self.peak_bytes / 1e9:.3f} GB (weights {self.weight_bytes / 1e9:.3f} GB + KV cache "
            f"{self.kv_cache_bytes / 1e9:.3f} GB + activations {self.activation_bytes / 1e9:.3f} GB) and its "
            f"{self.memory_level} holds {self.capacity_bytes / 1e9:.3f} GB"
        )


@dataclass(frozen=True)
class PhaseTotals:
    """Totals of one phase, or of "prefill+decode" for a generation that runs both.

    Token counts are over all sequences of the batch. `tokens_per_s` and
    `energy_j_per_token` count prompt tokens for a prefill and generated
    tokens otherwise. `time_to_first_token_s` is None for a decode alone,
    and `time_per_output_token_s` is None for a prefill alone.
    """

    phase: str
    batch_size: int
    context_tokens: int
    generated_tokens: int
    latency_s: float
    energy_j: float
    compute_energy_j: float
    sram_energy_j: float
    dram_energy_j: float
    static_energy_j: float
    tokens: int
    tokens_per_s: float
    energy_j_per_token: float
    average_power_w: float
    time_to_first_token_s: float | None
    time_per_output_token_s: float | None

    @property
    def joules_per_token(self) -> float:
        """The older name of `energy_j_per_token`, kept for existing callers."""
        return self.energy_j_per_token


@dataclass
class SimulationReport:
    """Result of `hwsim.simulate`.

    `ops` has one row per op and phase. Its columns are `runs` over the
    phase, `latency_s`, `energy_j` and its components, and the bytes read
    and written at each memory level. `utilization` is the latency-weighted
    use of the compute units, `bound` is what limits the op for most of its
    time, and `note` names the compute precision and conversions chosen.
    `peak_flops_per_s` and `dram_bandwidth_bytes_per_s` are the roofs of
    each op: the peak rate of the compute unit and precision it runs on, and
    the bandwidth of main memory (HBM on a GPU). `totals` has one row per
    phase (see `PhaseTotals`), with the scenario's `peak_memory_bytes` and
    whether it `fits` on every row. It also carries `joules_per_token`, a
    copy of `energy_j_per_token` under its older name. Units are SI
    throughout.
    """

    model: str
    accelerator: str
    accelerator_kind: str
    policy: str
    ops: pd.DataFrame
    totals: pd.DataFrame
    memory: MemoryFootprint
    notes: tuple[str, ...] = field(default=())

    @property
    def fits(self) -> bool:
        return self.memory.fits

    def phase(self, name: str) -> dict:
        """Totals of one phase ("prefill", "decode" or "prefill+decode") as a dict."""
        rows = self.totals[self.totals["phase"] == name]
        if rows.empty:
            raise KeyError(f"the report has no phase {name!r}; it has {', '.join(self.totals['phase'])}")
        return {key: _plain(value) for key, value in rows.iloc[0].to_dict().items()}

    def to_dict(self) -> dict:
        """Return the totals, the memory footprint and the notes as plain JSON types."""
        return {
            "model": self.model,
            "accelerator": self.accelerator,
            "accelerator_kind": self.accelerator_kind,
            "policy": self.policy,
            "phases": {row["phase"]: {k: _plain(v) for k, v in row.items() if k != "phase"} for row in self.totals.to_dict("records")},
            "memory": {**asdict(self.memory), "peak_bytes": self.memory.peak_bytes, "fits": self.memory.fits},
            "peak_memory_bytes": self.memory.peak_bytes,
            "fits": self.memory.fits,
            "notes": list(self.notes),
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)


def _plain(value):
    """Convert numpy scalars to Python numbers and NaN (a missing value in pandas) to None."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
