"""What the accuracy path quantizes, and how.

`AccuracyConfig` is a small frozen dataclass: formats for the weights, the
inputs of the linear layers and the KV cache, and the enablers to run.
`quantizer_for(config, layer_name, role)` is the one function that maps a
layer and a tensor role to a `Quantizer`. The wrapping code calls it and
nothing else, so a rule-based bit policy can take the dataclass's place
there.

Format names follow `hwsim.formats.get`, and the granularity is part of the
name: "int8_channel" for weights is one scale per output channel,
"int8_token" for activations one scale per token, "int8_tensor" one scale
per tensor, "int4_g128" and "mxfp4" one scale per block along K.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from dataclasses import dataclass
from typing import Literal

import torch

from hwsim import formats
from hwsim.accuracy.torch_qdq import qdq
from hwsim.formats.params import ROUNDING_MODES

Role = Literal["weight", "input", "key", "value"]
ROLES = ("weight", "input", "key", "value")
KEY_GRANULARITIES = ("token", "channel")

# Policy strings of the CLI that are not of the w<bits>a<bits> form.
_NAMED_POLICIES = {"fp32": None, "fp16": "w16a16kv16"}


@dataclass(frozen=True)
class Quantizer:
    """One tensor's qdq: a format, the axis its groups run along, and a rounding mode.

    NOTE: every call uses the same seed, so stochastic rounding draws the same
    random bits at the same flat index of every tensor it quantizes.
    """

    format: str
    axis: int = -1
    rounding: str = "nearest_even"
    seed: int = 0
    kv_window: int = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return qdq(x, self.format, axis=self.axis, rounding=self.rounding, seed=self.seed)


@dataclass(frozen=True)
class AccuracyConfig:
    """Formats and enablers for one accuracy evaluation.

    weight: format of every linear layer's weight [out, in], groups along in.
    activation: format of every linear layer's input, groups along the last axis.
    key, value: formats of the KV cache, written as (batch, heads, tokens, head_dim).
        Values are grouped along head_dim (a scale per token); keys too when
        key_granularity="token", or along tokens (a scale per channel, as
        KIVI does) when key_granularity="channel".
    kv_window: most recent tokens kept in full precision (KIVI's residual).
    rounding: rounding mode of every qdq; seed keys stochastic rounding.
    keep: fnmatch patterns of linear layers left in full precision.
    quantize_lm_head: quantize the output projection too (off by default,
        as GPTQ, AWQ and QuaRot leave it in 16 bits).
    rotate: QuaRot-style Hadamard rotations (Llama only).
    smoothquant_alpha: SmoothQuant migration strength in [0, 1] (Llama only).
    gptq: GPTQ weight rounding from calibration data (Llama only).
    calibration_tokens: tokens of calibration text for SmoothQuant and GPTQ.
    arith_layers: fnmatch patterns of linear layers whose matmul runs through
        `hwsim.arith.matmul`, bit-accurate, with the activation and weight
        formats as operands (fp32 where a role has none), the accumulator
        `arith_accumulator` (a name from `hwsim.arith.accumulator_names()`)
        and the order of additions `arith_order`.
    policy: a rule-based `hwsim.policy.Policy` that gives every tensor its
        quantizer, in place of weight, activation, key and value (see
        `from_policy`). Its subsets are chosen from calibration data, and
        its KV rules carry their own windows and key axes.
    """

    weight: str | None = None
    activation: str | None = None
    key: str | None = None
    value: str | None = None
    key_granularity: Literal["token", "channel"] = "token"
    kv_window: int = 0
    rounding: str = "nearest_even"
    seed: int = 0
    keep: tuple[str, ...] = ()
    quantize_lm_head: bool = False
    rotate: bool = False
    smoothquant_alpha: float | None = None
    gptq: bool = False
    calibration_tokens: int = 2048
    arith_layers: tuple[str, ...] = ()
    arith_accumulator: str = "fp32"
    arith_order: Literal["sequential", "pairwise"] = "sequential"
    policy: object = None

    def __post_init__(self) -> None:
        if self.policy is not None:
            self._check_policy()
        for role in ("weight", "activation", "key", "value"):
            name = getattr(self, role)
            if name is not None:
                # Raises KeyError with close matches for an unknown name.
                formats.get(name)
        if str(self.rounding).lower().replace("-", "_") not in ROUNDING_MODES:
            raise ValueError(f"invalid rounding={self.rounding!r}: choose one of {', '.join(ROUNDING_MODES)}")
        if self.key_granularity not in KEY_GRANULARITIES:
            raise ValueError(f"invalid key_granularity={self.key_granularity!r}: choose 'token' (a scale per token) or 'channel' (a scale per channel)")
        if isinstance(self.kv_window, bool) or not isinstance(self.kv_window, int) or self.kv_window < 0:
            raise ValueError(f"invalid kv_window={self.kv_window!r}: give the number of recent tokens kept in full precision, 0 or more")
        alpha = self.smoothquant_alpha
        if alpha is not None and not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
            raise ValueError(f"invalid smoothquant_alpha={alpha!r}: SmoothQuant's migration strength lies in [0, 1], such as 0.5")
        if isinstance(self.calibration_tokens, bool) or not isinstance(self.calibration_tokens, int) or self.calibration_tokens < 1:
            raise ValueError(f"invalid calibration_tokens={self.calibration_tokens!r}: give a positive number of tokens, such as 2048")
        if self.gptq and self.weight is None and self.policy is None:
            raise ValueError("gptq=True rounds weights, but weight=None; give a weight format such as 'int4_g128'")
        if self.gptq and str(self.rounding).lower() == "stochastic":
            raise ValueError("gptq=True rounds each weight to nearest and feeds the error forward; use a nearest or toward_zero rounding mode")
        for field_name in ("keep", "arith_layers"):
            patterns = getattr(self, field_name)
            if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
                raise ValueError(f"invalid {field_name}={patterns!r}: give a tuple of layer-name patterns such as ('model.layers.0.*',)")
        if self.arith_order not in ("sequential", "pairwise"):
            raise ValueError(f"invalid arith_order={self.arith_order!r}: choose 'sequential' or 'pairwise'")

    def _check_policy(self) -> None:
        from hwsim.policy import Policy

        if not isinstance(self.policy, Policy):
            raise ValueError(f"invalid policy={self.policy!r}: give a hwsim.policy.Policy, or build the config with AccuracyConfig.from_policy(text)")
        given = [role for role in ("weight", "activation", "key", "value") if getattr(self, role) is not None]
        if given:
            raise ValueError(f"policy {self.policy.name!r} gives every tensor its format, and {', '.join(given)} were given too; drop them or the policy")
        if self.kv_window or self.key_granularity != "token":
            raise ValueError(
                f"policy {self.policy.name!r} sets the KV window and key axis in its kv_key and kv_value rules; "
                "leave kv_window=0 and key_granularity='token', or edit the policy's rules"
            )

    @classmethod
    def from_policy(cls, policy, **options) -> AccuracyConfig:
        """Build a config from a bit policy and enabler options.

        policy is a `hwsim.policy.Policy`, or a text. "fp32" quantizes
        nothing, and "fp16" rounds weights, activations and the KV cache to
        fp16. Strings that `hwsim.policy.UniformPolicy.parse` reads ("w8a8",
        "w4a16", "w4a4kv4", "w4a16-g64", "w=mxfp4,a=mxfp8_e4m3,kv=fp8_e4m3")
        set the weight, activation, key and value formats. Their fp32 roles
        are left alone, because the model already computes in fp32. Any other
        text names a preset ("atom-w4a4") or a policy YAML file, as
        `hwsim.policy.resolve.resolve_policy` reads it. A Policy's rotation,
        smoothquant_alpha and weight_method="gptq" turn on rotate,
        smoothquant_alpha and gptq; options may add to them.
        """
        from hwsim.policy import Policy, UniformPolicy
        from hwsim.policy.resolve import is_uniform_text, resolve_policy

        text = policy.strip().lower() if isinstance(policy, str) else policy
        if isinstance(text, str) and text not in _NAMED_POLICIES and not is_uniform_text(text):
            policy = resolve_policy(policy.strip())
        if isinstance(policy, Policy):
            return cls._from_rules(policy, options)
        if text in _NAMED_POLICIES:
            if _NAMED_POLICIES[text] is None:
                return cls(**options)
            text = _NAMED_POLICIES[text]
        uniform = UniformPolicy.parse(text)
        roles = {
            "weight": uniform.weight,
            "activation": uniform.activation,
            "key": uniform.kv_cache,
            "value": uniform.kv_cache,
        }
        roles = {role: (None if name == "fp32" else name) for role, name in roles.items()}
        return cls(**roles, **options)

    @classmethod
    def _from_rules(cls, policy, options: dict) -> AccuracyConfig:
        if policy.weight_method == "awq":
            raise ValueError(
                f"policy {policy.name!r} asks for weight_method='awq', which the accuracy path does not run; "
                "set weight_method to 'rtn' or 'gptq'"
            )
        options = dict(options)
        options["rotate"] = bool(options.get("rotate")) or policy.rotation == "hadamard"
        if options.get("smoothquant_alpha") is None:
            options["smoothquant_alpha"] = policy.smoothquant_alpha
        gptq = bool(options.get("gptq")) or policy.weight_method == "gptq"
        if gptq and str(options.get("rounding", "nearest_even")).lower() == "stochastic":
            raise ValueError(f"policy {policy.name!r} rounds weights with GPTQ, which rounds to nearest; drop rounding='stochastic'")
        options["gptq"] = gptq
        return cls(policy=policy, **options)

    @property
    def weight_only(self) -> bool:
        """True when only weights leave full precision (fp16 activations and KV count as full precision here)."""
        if self.policy is not None:
            formats_by_role = {rule.quantizer.format for rule in self.policy.rules if rule.quantizer is not None
                               and any(role != "weight" for role in rule.roles)}
            return any("weight" in rule.roles for rule in self.policy.rules) and formats_by_role <= {"fp16", "bf16"}
        low = [name for name in (self.activation, self.key, self.value) if name not in (None, "fp16", "bf16")]
        return self.weight is not None and not low

    @property
    def calibrated(self) -> bool:
        """True when quantizing needs calibration text: SmoothQuant, GPTQ, or policy subsets chosen from calibration data."""
        if self.smoothquant_alpha is not None or self.gptq:
            return True
        if self.policy is None:
            return False
        from hwsim.accuracy.policy_path import needs_calibration

        return any(needs_calibration(rule.quantizer) for rule in self.policy.rules)

    @property
    def label(self) -> str:
        """A short description: the formats per role and the enablers that are on."""
        if self.policy is not None:
            parts = [f"policy={self.policy.name}"]
        else:
            parts = [f"w={self.weight or 'fp32'}", f"a={self.activation or 'fp32'}"]
        if self.key or self.value:
            parts.append(f"k={self.key or 'fp32'}({self.key_granularity})")
            parts.append(f"v={self.value or 'fp32'}")
            if self.kv_window:
                parts.append(f"kv_window={self.kv_window}")
        if self.rounding != "nearest_even":
            parts.append(f"rounding={self.rounding}")
        if self.smoothquant_alpha is not None:
            parts.append(f"smoothquant={self.smoothquant_alpha}")
        if self.rotate:
            parts.append("rotate")
        if self.gptq:
            parts.append("gptq")
        if self.keep:
            parts.append(f"keep={','.join(self.keep)}")
        if self.quantize_lm_head:
            parts.append("quantize_lm_head")
        if self.arith_layers:
            parts.append(f"arith={','.join(self.arith_layers)}:{self.arith_accumulator},{self.arith_order}")
        return " ".join(parts)

    def to_dict(self) -> dict:
        """Return every field as JSON-ready values, for cache keys and result tables."""
        return {field.name: _jsonable(getattr(self, field.name)) for field in dataclasses.fields(self)}


def _jsonable(value):
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return list(value) if isinstance(value, tuple) else value


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """True when a layer name matches one of the fnmatch patterns."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def quantizer_for(config: AccuracyConfig, layer_name: str, role: Role, *, lm_head_name: str | None = None,
                  calibration: dict | None = None):
    """Return the quantizer of one tensor, or None to leave it in full precision.

    layer_name is a linear layer's module name for the roles "weight" and
    "input", and the attention module's name for "key" and "value".
    lm_head_name is the model's output projection, which stays in full
    precision unless config.quantize_lm_head. With a policy, calibration
    maps (layer_name, role) to the (scores, basis) of the tensor's subset;
    a quantizer with a subset or a KV window comes back as a
    `hwsim.accuracy.policy_path.SubsetQdq`.
    """
    if role not in ROLES:
        raise ValueError(f"unknown tensor role {role!r}: expected one of {', '.join(ROLES)}")
    if role in ("weight", "input"):
        if matches(layer_name, config.keep):
            return None
        if layer_name == lm_head_name and not config.quantize_lm_head:
            return None
    if config.policy is not None:
        return _policy_quantizer(config, layer_name, role, calibration or {})
    if role in ("weight", "input"):
        name = config.weight if role == "weight" else config.activation
        return Quantizer(name, -1, config.rounding, config.seed) if name else None
    if role == "key":
        if config.key is None:
            return None
        # Cache entries are (batch, heads, tokens, head_dim): a scale per channel groups along tokens.
        axis = -2 if config.key_granularity == "channel" else -1
        return Quantizer(config.key, axis, config.rounding, config.seed, config.kv_window)
    if config.value is None:
        return None
    return Quantizer(config.value, -1, config.rounding, config.seed, config.kv_window)


def _policy_quantizer(config: AccuracyConfig, layer_name: str, role: str, calibration: dict):
    from hwsim.accuracy.policy_path import SubsetQdq

    # Every linear layer that reaches the policy is a "linear" parameter, the output head too when quantize_lm_head is set.
    kind = "linear" if role == "weight" else None
    rule_quantizer = config.policy.quantizer_for(layer_name, role, parameter_kind=kind)
    if rule_quantizer is None or rule_quantizer.format in ("fp32",):
        return None
    rounding = config.rounding if config.rounding != "nearest_even" else rule_quantizer.rounding
    if rule_quantizer.subset is None:
        return Quantizer(rule_quantizer.format, rule_quantizer.axis, rounding, config.seed, rule_quantizer.kv_window)
    scores, basis = calibration.get((layer_name, role), (None, None))
    return SubsetQdq(replace_rounding(rule_quantizer, rounding), config.seed, config.policy.full_precision_format, scores, basis)


def replace_rounding(quantizer, rounding: str):
    return quantizer if quantizer.rounding == rounding else dataclasses.replace(quantizer, rounding=rounding)
