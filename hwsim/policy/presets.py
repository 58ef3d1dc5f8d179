"""Bit policies of published schemes, each with its source, its bit configuration and what the accuracy path does with it.

Every preset states two things about the accuracy path: what it
reproduces (the formats `quantizer_for` returns, which `hwsim.accuracy`
applies, and the options it implements: Hadamard rotation, SmoothQuant,
GPTQ, the key granularity and the KV window) and what it approximates.
Subsets (outlier channels, output features, PCA subspaces, sparse
outliers, salient groups) are emulated by `hwsim.policy.subsets.qdq_tensor`
from calibration scores. The calibration-time searches that a paper runs
(clipping ratios, k-means levels, per-layer splits) are not emulated.
`hwsim policies show NAME` prints a preset's bits per parameter, and
`hwsim accuracy --policy NAME` measures it: `AccuracyConfig.from_policy`
takes the preset, and `hwsim.accuracy.policy_path` chooses its subsets from
calibration data and runs GPTQ around them.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwsim.policy.policy import Policy
from hwsim.policy.quantizer import GroupMetadata, Quantizer, Subset
from hwsim.policy.rules import Rule

# KIVI's configuration: groups of 32 and the 128 latest tokens in full precision.
KIVI_GROUP_SIZE = 32
KIVI_RESIDUAL_TOKENS = 128
# OWQ's "3.01-bit" setting: the fp16 columns add 0.01 bits over 3, each fp16
# weight costing 16 - 3 bits more than a 3-bit one (OWQ's target_bit rule).
OWQ_FP16_FRACTION = 0.01 / (16 - 3)


@dataclass(frozen=True)
class Preset:
    """A published scheme as a `Policy`, with where it comes from and how faithfully hwsim models it."""

    policy: Policy
    source: str
    configuration: str
    reproduced: str
    approximated: str

    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def citation(self) -> str:
        """The source shortened to first author and venue: "Zhao et al., MLSys 2024"."""
        parts = []
        for piece in self.source.split(";"):
            segments = [segment.strip() for segment in piece.split(",")]
            if len(segments) == 1:
                parts.append(segments[0])
                continue
            venue = segments[-1]
            if venue.isdigit() and segments[-2].startswith("arXiv"):
                venue = f"{segments[-2]}, {venue}"
            parts.append(f"{segments[0]}, {venue}" if segments[0] != venue else venue)
        return "; ".join(parts)


def _roles(weight=None, activation=None, kv=None) -> tuple[Rule, ...]:
    rules = []
    if weight is not None:
        rules.append(Rule(("weight",), weight, name="weights"))
    if activation is not None:
        rules.append(Rule(("activation",), activation, name="activations"))
    if kv is not None:
        rules.append(Rule(("kv_key", "kv_value"), kv, name="kv_cache"))
    return tuple(rules)


def _uniform_fp(name: str, fmt: str, source: str, configuration: str, approximated: str) -> Preset:
    policy = Policy(name, _roles(Quantizer(fmt), Quantizer(fmt)), description=configuration)
    return Preset(policy, source, configuration, f"{fmt} weights and linear-layer inputs, bit-exact qdq", approximated)


def _kivi_rules() -> tuple[Rule, ...]:
    # KIVI keeps each group's scale and minimum in fp16.
    metadata = GroupMetadata(scale_bits=16, zero_point_bits=16)
    fmt = f"int2_asym_g{KIVI_GROUP_SIZE}"
    keys = Quantizer(fmt, axis=-2, kv_window=KIVI_RESIDUAL_TOKENS, metadata=metadata)
    values = Quantizer(fmt, axis=-1, kv_window=KIVI_RESIDUAL_TOKENS, metadata=metadata)
    return (Rule(("kv_key",), keys, name="keys per channel"), Rule(("kv_value",), values, name="values per token"))


def _build() -> dict[str, Preset]:
    presets = [
        Preset(
            Policy("fp16", _roles(Quantizer("fp16"), Quantizer("fp16"), Quantizer("fp16")), description="16-bit baseline"),
            "IEEE 754-2019 binary16",
            "weights, activations and KV cache in fp16",
            "fp16 rounding of every quantized role",
            "nothing",
        ),
        Preset(
            Policy(
                "w8a8-smoothquant",
                _roles(Quantizer("int8_channel"), Quantizer("int8_token")),
                description="W8A8 with SmoothQuant migration",
                smoothquant_alpha=0.5,
            ),
            "Xiao et al., SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language Models, ICML 2023",
            "W8A8: int8 weights, int8 activations with a scale per token, migration strength 0.5",
            "int8 per-token activations and SmoothQuant smoothing (Llama only)",
            "weight scales are per output channel, finer than the per-tensor weight scales of SmoothQuant's O1-O3 settings",
        ),
        Preset(
            Policy("w4a16-g128", _roles(Quantizer("int4_g128")), description="4-bit weights, groups of 128", weight_method="gptq"),
            "Frantar et al., GPTQ, ICLR 2023; Lin et al., AWQ: Activation-aware Weight Quantization, MLSys 2024",
            "W4A16: int4 weights with an fp16 scale per 128 input channels, 16-bit activations",
            "int4 groups of 128 with GPTQ rounding",
            "symmetric codes without the 4-bit zero point per group that GPTQ and AWQ checkpoints store (4.156 bits); "
            "AWQ's per-channel scaling search is not run",
        ),
        Preset(
            Policy("w4a8-g128", _roles(Quantizer("int4_g128"), Quantizer("int8_token")), description="4-bit weights, 8-bit activations"),
            "Lin et al., QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving, MLSys 2025",
            "W4A8: int4 weights with an fp16 scale per 128, int8 activations with a scale per token",
            "int4 weight groups and int8 per-token activations",
            "QServe's two-level weight scales and its 4-bit KV cache are not modelled (KV stays fp16)",
        ),
        Preset(
            Policy(
                "quarot-w4a4kv4",
                _roles(Quantizer("int4_channel"), Quantizer("int4_token"), Quantizer("int4_asym_token")),
                description="W4A4KV4 with Hadamard rotations",
                rotation="hadamard",
                weight_method="gptq",
            ),
            "Ashkboos et al., QuaRot: Outlier-Free 4-Bit Inference in Rotated LLMs, NeurIPS 2024",
            "W4A4KV4: int4 per-channel GPTQ weights, int4 per-token activations, asymmetric int4 KV per head, Hadamard rotations",
            "rotations, GPTQ, int4 weights, activations and KV cache (Llama only)",
            "QuaRot's clipping ratios for activations and KV are not searched",
        ),
        Preset(
            Policy(
                "atom-w4a4",
                _roles(
                    Quantizer("int4_g128", subset=Subset("outlier_channels", "int8_g128", count=128, selection="activation_amax")),
                    Quantizer("int4_g128", subset=Subset("outlier_channels", "int8_g128", count=128, selection="activation_amax")),
                    Quantizer("int4_asym_token"),
                ),
                description="W4A4KV4 with 128 int8 outlier channels",
                weight_method="gptq",
            ),
            "Zhao et al., Atom: Low-bit Quantization for Efficient and Accurate LLM Serving, MLSys 2024",
            "128 outlier input channels (reordered) in int8, the rest int4 in groups of 128, for weights and activations; KV4",
            "int4 groups of 128 through quantizer_for; the int8 outlier channels through subsets.qdq_tensor from calibration amax",
            "Atom's clipping ratios (0.9 activations, 0.85 weights in its example command) are not applied; "
            "the KV cache takes an asymmetric scale per head and token",
        ),
        Preset(
            Policy(
                "resq-w4a4kv4",
                _roles(
                    Quantizer("int4_channel", subset=Subset("pca_subspace", "int8_channel", fraction=1 / 8)),
                    Quantizer("int4_token", subset=Subset("pca_subspace", "int8_token", fraction=1 / 8)),
                    Quantizer("int4_asym_token"),
                ),
                description="W4A4KV4 with a 1/8 high-variance subspace in 8 bits",
                rotation="hadamard",
                weight_method="gptq",
            ),
            "Saxena et al., ResQ: Mixed-Precision Quantization of Large Language Models with Low-Rank Residuals, ICML 2025",
            "the 1/8 of the hidden size with the highest activation variance (PCA) in 8 bits, the rest 4 bits, with rotations",
            "the PCA subspace through subsets.qdq_tensor given the calibration basis; Hadamard rotation of the rest",
            "ResQ rotates inside each subspace and projects the KV cache too; here the KV cache is plain asymmetric int4",
        ),
        Preset(
            Policy(
                "mixllm-w4.4a8",
                _roles(
                    Quantizer("int4_asym_g128", subset=Subset("output_features", "int8_g128", fraction=0.1, selection="fisher")),
                    Quantizer("int8_token"),
                ),
                description="10% of output features in 8 bits, the rest asymmetric int4, 8-bit activations",
                weight_method="gptq",
            ),
            "Zheng et al., MixLLM: LLM Quantization with Global Mixed-precision between Output-features "
            "and Highly-efficient System Design, arXiv:2412.14590, 2024",
            "W4.4A8: 10% of output features in 8 bits and 90% in asymmetric 4 bits (4.4 element bits), int8 activations",
            "the 8-bit rows through subsets.qdq_tensor from Fisher scores",
            "MixLLM ranks output features over the whole model; here each layer keeps 10% of its rows",
        ),
        Preset(
            Policy(
                "spqr-w3",
                _roles(
                    Quantizer(
                        "int3_asym_g16",
                        subset=Subset("sparse_outliers", "fp16", fraction=0.01, index_bits=16),
                        metadata=GroupMetadata(scale_bits=3, zero_point_bits=3, second_level_group_size=16, second_level_bits=16),
                    )
                ),
                description="3-bit groups of 16 with 3-bit statistics and 1% fp16 outliers",
                weight_method="gptq",
            ),
            "Dettmers et al., SpQR: A Sparse-Quantized Representation for Near-Lossless LLM Weight Compression, ICLR 2024",
            "3-bit weights in groups of 16, 3-bit scales and zeros with 16-bit second-level statistics per 16 groups, "
            "1% of weights as fp16 outliers with a 16-bit column index",
            "sparse fp16 outliers through subsets.qdq_tensor; GPTQ rounding of the dense part",
            "the 3-bit statistics are counted in storage but qdq uses fp16 scales; the outlier share is fixed at 1%, "
            "where SpQR's threshold sets it per layer",
        ),
        Preset(
            Policy(
                "spqr-w4",
                _roles(
                    Quantizer(
                        "int4_asym_g16",
                        subset=Subset("sparse_outliers", "fp16", fraction=0.01, index_bits=16),
                        metadata=GroupMetadata(scale_bits=3, zero_point_bits=3, second_level_group_size=16, second_level_bits=16),
                    )
                ),
                description="4-bit groups of 16 with 3-bit statistics and 1% fp16 outliers",
                weight_method="gptq",
            ),
            "Dettmers et al., SpQR: A Sparse-Quantized Representation for Near-Lossless LLM Weight Compression, ICLR 2024",
            "the near-lossless setting of the SpQR README: 4-bit groups of 16, 3-bit statistics in second-level groups of 16, "
            "fp16 outliers (1% here)",
            "sparse fp16 outliers through subsets.qdq_tensor; GPTQ rounding of the dense part",
            "the 3-bit statistics are counted in storage but qdq uses fp16 scales; the outlier share is fixed at 1%",
        ),
        Preset(
            Policy(
                "owq-w3",
                _roles(
                    Quantizer(
                        "int3_asym_channel",
                        subset=Subset("outlier_channels", "fp16", fraction=OWQ_FP16_FRACTION, selection="hessian_diagonal"),
                    )
                ),
                description="3-bit per-channel weights with weak columns in fp16 (3.01 effective bits)",
                weight_method="gptq",
            ),
            "Lee et al., OWQ: Outlier-Aware Weight Quantization for Efficient Fine-Tuning and Inference of Large Language Models, AAAI 2024",
            "3.01 effective bits: asymmetric 3-bit weights with a scale per output channel, 0.077% of the input columns in fp16",
            "fp16 weak columns through subsets.qdq_tensor from Hessian-diagonal scores; GPTQ rounding",
            "OWQ spreads its fp16 columns over layer types by fixed ratios; here every layer keeps the same share",
        ),
        Preset(
            Policy(
                "squeezellm-w3",
                _roles(
                    Quantizer(
                        "int3_channel",
                        subset=Subset("sparse_outliers", "fp16", fraction=0.0045, selection="fisher", index_bits=32),
                        metadata=GroupMetadata(scale_bits=8 * 16),
                    )
                ),
                description="3-bit weights with a per-channel lookup table and 0.45% sparse fp16 outliers",
            ),
            "Kim et al., SqueezeLLM: Dense-and-Sparse Quantization, ICML 2024",
            "3-bit codes with an 8-entry fp16 lookup table per output channel, 0.45% of weights sparse in fp16",
            "sparse fp16 outliers through subsets.qdq_tensor",
            "uniform int3 levels stand in for the Fisher-weighted k-means lookup table; "
            "the 32-bit index per outlier (a CSR column index) is an estimate of the sparse format's cost",
        ),
        Preset(
            Policy("kivi-kv2", _kivi_rules(), description="2-bit KV cache: keys per channel, values per token, 128 fp16 tokens"),
            "Liu et al., KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache, ICML 2024",
            "asymmetric 2-bit keys grouped per channel over 32 tokens, values per token in groups of 32 channels, "
            "fp16 scale and minimum per group, the latest 128 tokens in fp16; weights and activations fp16",
            "2-bit keys per channel (key_granularity='channel'), values per token and the full-precision window",
            "the zero point is the format's 2-bit code in qdq, while storage counts KIVI's fp16 minimum",
        ),
        Preset(
            Policy("blockdialect-w4a4", _roles(Quantizer("blockdialect"), Quantizer("blockdialect")), description="BlockDialect W4A4"),
            "Jang and Tambe, BlockDialect: Block-wise Fine-grained Mixed Format Quantization for Energy-Efficient LLM Inference, ICML 2025",
            "each block of 32 picks one of 16 FP4 dialects, with an E8M0 scale: 4.375 bits, for weights and activations",
            "the dialect format bit for bit as hwsim.formats defines it",
            "the dialect book is reconstructed from the paper (see hwsim.formats.dialect)",
        ),
        Preset(
            Policy(
                "slim-llm-w3",
                _roles(
                    Quantizer(
                        "int3_g128",
                        subset=Subset("salient_groups", "int4_g128", fraction=0.1, selection="hessian_diagonal", low_format="int2_g128"),
                    )
                ),
                description="group-wise 2/3/4-bit weights averaging 3 bits, groups of 128",
                weight_method="gptq",
            ),
            "Huang et al., SliM-LLM: Salience-Driven Mixed-Precision Quantization for Large Language Models, arXiv:2405.14917, 2024",
            "W3A16 g128: salient groups one bit up, as many one bit down, so the average stays 3 bits",
            "the group-wise formats through subsets.qdq_tensor from Hessian-diagonal salience; GPTQ rounding",
            "SliM-LLM searches the split per layer, while this preset moves 10% of groups up and 10% down; "
            "the 2-bit preset would need 1-bit groups, which hwsim.formats lacks",
        ),
        _uniform_fp(
            "mxfp8",
            "mxfp8_e4m3",
            "OCP Microscaling Formats (MX) Specification v1.0, 2023",
            "MXFP8 E4M3 weights and activations: 8 + 8/32 = 8.25 bits; KV cache fp16",
            "the KV cache stays fp16",
        ),
        _uniform_fp(
            "mxfp6",
            "mxfp6_e2m3",
            "OCP Microscaling Formats (MX) Specification v1.0, 2023",
            "MXFP6 E2M3 weights and activations: 6 + 8/32 = 6.25 bits; KV cache fp16",
            "the KV cache stays fp16",
        ),
        _uniform_fp(
            "mxfp4",
            "mxfp4",
            "OCP Microscaling Formats (MX) Specification v1.0, 2023",
            "MXFP4 (E2M1) weights and activations: 4 + 8/32 = 4.25 bits; KV cache fp16",
            "the KV cache stays fp16",
        ),
        _uniform_fp(
            "nvfp4",
            "nvfp4",
            "NVIDIA Transformer Engine NVFP4 recipe (Blackwell), 2025",
            "NVFP4 weights and activations: E2M1 with a UE4M3 scale per 16 and an FP32 tensor scale, 4.5 bits; KV cache fp16",
            "the block-scale rounding follows the Transformer Engine reference, which cuDNN's rounds up",
        ),
    ]
    return {preset.name: preset for preset in presets}


PRESETS: dict[str, Preset] = _build()


def preset_names() -> list[str]:
    """Names of the presets, in the order `hwsim policies list` prints them."""
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    """Return the preset called `name`; raise KeyError with close matches for an unknown name."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key in PRESETS:
        return PRESETS[key]
    import difflib

    close = difflib.get_close_matches(str(key), list(PRESETS), n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise KeyError(f"unknown policy preset {name!r}: {hint}run `hwsim policies list` for the names")


def preset(name: str) -> Policy:
    """Return the policy of the preset called `name`."""
    return get_preset(name).policy
