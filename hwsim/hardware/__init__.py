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
takes SCALE-Sim's configuration fields), `gpu` (tensor cores: tiles, waves,
weight-only dequantization, fused attention) and `npu` (an edge MAC array
with precision modes, SRAM and LPDDR under a power envelope).
`device_specs` defines the GPU and NPU sections of a spec, `precision` maps
operand formats to the compute precisions of a matrix unit, and `kernels`
defines the requests the LM simulation sends to the GPU and NPU models.
`scalesim_oracle` runs SCALE-Sim v3 itself for validation.
"""

from hwsim.hardware.area import AcceleratorArea, accelerator_area, pe_area, sram_area
from hwsim.hardware.cost import GemmOp, MemoryTraffic, OpCost
from hwsim.hardware.datatypes import NumberType, parse_number_type
from hwsim.hardware.device_specs import GPUSpec, NPUSpec
from hwsim.hardware.energy import EnergyEstimate, EnergyTable, add_energy, mac_energy, multiply_energy
from hwsim.hardware.gpu import GPU
from hwsim.hardware.kernels import AttentionRequest, KernelCost, MatmulRequest, VectorRequest
from hwsim.hardware.loading import accelerator_from_dict, load_accelerator, preset_names
from hwsim.hardware.memory import MemoryHierarchy, MemoryLevel
from hwsim.hardware.npu import NPU
from hwsim.hardware.pe import PEMapping, UnsupportedFormatError, map_operands
from hwsim.hardware.precision import ComputePlan, resolve_matmul
from hwsim.hardware.scalesim_compat import ScaleSimConfig, ScaleSimGemmResult, simulate_gemm
from hwsim.hardware.spec import AcceleratorSpec, MemorySpec, PESpec, SpecError, SystolicArraySpec
from hwsim.hardware.systolic import GemmEvaluation, SystolicArray
from hwsim.hardware.technology import Technology

__all__ = [
    "AcceleratorArea",
    "AcceleratorSpec",
    "AttentionRequest",
    "ComputePlan",
    "EnergyEstimate",
    "EnergyTable",
    "GPU",
    "GPUSpec",
    "GemmEvaluation",
    "GemmOp",
    "KernelCost",
    "MatmulRequest",
    "MemoryHierarchy",
    "MemoryLevel",
    "MemorySpec",
    "MemoryTraffic",
    "NPU",
    "NPUSpec",
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
    "VectorRequest",
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
    "resolve_matmul",
    "simulate_gemm",
    "sram_area",
]
