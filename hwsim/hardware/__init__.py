"""Hardware cost models: accelerator specs, memory hierarchy, energy and area tables, the systolic array.

The pieces every accelerator model shares:

- `spec` and `loading`: YAML accelerator specs validated into frozen dataclasses;
- `technology`: energy and area scaling between CMOS nodes;
- `energy`: energy per arithmetic operation by operand format (Horowitz ISSCC 2014);
- `memory`: energy per byte and bandwidth of each memory level;
- `area`: PE and SRAM area (Bit Fusion ISCA 2018 synthesis numbers);
- `pe`: how a processing element runs a pair of operand formats;
- `cost`: the op (`GemmOp`) and the result (`OpCost`) of every model.

Accelerator models: `systolic` (with `scalesim_compat`, the entry point that
takes SCALE-Sim's configuration fields). `scalesim_oracle` runs SCALE-Sim v3
itself for validation.
"""

from hwsim.hardware.area import AcceleratorArea, accelerator_area, pe_area, sram_area
from hwsim.hardware.cost import GemmOp, MemoryTraffic, OpCost
from hwsim.hardware.datatypes import NumberType, parse_number_type
from hwsim.hardware.energy import EnergyEstimate, EnergyTable, add_energy, mac_energy, multiply_energy
from hwsim.hardware.loading import accelerator_from_dict, load_accelerator, preset_names
from hwsim.hardware.memory import MemoryHierarchy, MemoryLevel
from hwsim.hardware.pe import PEMapping, UnsupportedFormatError, map_operands
from hwsim.hardware.scalesim_compat import ScaleSimConfig, ScaleSimGemmResult, simulate_gemm
from hwsim.hardware.spec import AcceleratorSpec, MemorySpec, PESpec, SpecError, SystolicArraySpec
from hwsim.hardware.systolic import GemmEvaluation, SystolicArray
from hwsim.hardware.technology import Technology

__all__ = [
    "AcceleratorArea",
    "AcceleratorSpec",
    "EnergyEstimate",
    "EnergyTable",
    "GemmEvaluation",
    "GemmOp",
    "MemoryHierarchy",
    "MemoryLevel",
    "MemorySpec",
    "MemoryTraffic",
    "NumberType",
    "OpCost",
    "PEMapping",
    "PESpec",
    "ScaleSimConfig",
    "ScaleSimGemmResult",
    "SpecError",
    "SystolicArray",
    "SystolicArraySpec",
    "Technology",
    "UnsupportedFormatError",
    "accelerator_area",
    "accelerator_from_dict",
    "add_energy",
    "load_accelerator",
    "mac_energy",
    "map_operands",
    "multiply_energy",
    "parse_number_type",
    "pe_area",
    "preset_names",
    "simulate_gemm",
    "sram_area",
]
