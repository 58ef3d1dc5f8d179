"""Simulate a whole language model on an accelerator: `simulate(model, policy, accelerator, scenario)`.

    from hwsim import simulate
    from hwsim.workload import Scenario

    report = simulate("llama-3-8b", "w4a16-g128", "h100-sxm", Scenario.decode(1, 1024, 128))
    report.ops          # one row per op: latency_s, energy_j by component, bytes per memory level, bound
    report.totals       # per phase: time to first token, time per output token, tokens/s, J/token
    report.memory       # weights, KV cache and activations against the accelerator's memory
"""

from hwsim.simulation.engine import simulate
from hwsim.simulation.report import MemoryFootprint, ModelDoesNotFitError, PhaseTotals, SimulationReport

__all__ = ["MemoryFootprint", "ModelDoesNotFitError", "PhaseTotals", "SimulationReport", "simulate"]
