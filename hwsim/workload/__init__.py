"""Language-model workloads: architecture configs to ops with shapes, MACs, tensor roles and the KV cache.

    spec = load_model("llama-3-8b")
    workload = build_workload(spec, Scenario.decode(batch_size=8, context_tokens=2048, generated_tokens=256))
    workload.to_frame()       # one row per op, counts summed over the 256 steps
    summarize(spec, UniformPolicy.parse("w4a16"))
"""

from hwsim.workload.graph import forward_ops
from hwsim.workload.loading import (
    SUPPORTED_MODEL_TYPES,
    ModelSource,
    load_model,
    model_sources,
    model_spec_from_config,
    shipped_config_paths,
    shipped_model_names,
)
from hwsim.workload.model import ModelSpec
from hwsim.workload.ops import MoERouting, Op, TensorSpec
from hwsim.workload.parameters import Parameter, active_parameter_count, embedding_parameter_count, parameter_count, parameters
from hwsim.workload.scenario import Scenario
from hwsim.workload.summary import ModelSummary, flops_per_token, kv_cache_bytes_per_token, summarize, tensor_bytes, weight_bytes
from hwsim.workload.workload import OpCounts, Workload, build_workload

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "ModelSource",
    "ModelSpec",
    "ModelSummary",
    "MoERouting",
    "Op",
    "OpCounts",
    "Parameter",
    "Scenario",
    "TensorSpec",
    "Workload",
    "active_parameter_count",
    "build_workload",
    "embedding_parameter_count",
    "flops_per_token",
    "forward_ops",
    "kv_cache_bytes_per_token",
    "load_model",
    "model_sources",
    "model_spec_from_config",
    "parameter_count",
    "parameters",
    "shipped_config_paths",
    "shipped_model_names",
    "summarize",
    "tensor_bytes",
    "weight_bytes",
]
