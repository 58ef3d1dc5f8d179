"""The architecture of a language model, reduced to the numbers that set its op shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Field of ModelSpec -> key in a Hugging Face config.json, for error messages.
CONFIG_KEYS = {
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
    "head_dim": "head_dim",
    "intermediate_size": "intermediate_size",
    "vocab_size": "vocab_size",
    "max_position_embeddings": "max_position_embeddings",
    "num_experts": "num_local_experts",
    "experts_per_token": "num_experts_per_tok",
    "sliding_window": "sliding_window",
    "embedding_size": "word_embed_proj_dim",
}


@dataclass(frozen=True)
class ModelSpec:
    """Shape-setting facts of one transformer, from its Hugging Face config.

    Sizes are element counts. `num_kv_heads` below `num_attention_heads` is
    grouped-query attention, and 1 is multi-query attention. A
    `sliding_window` of W means that each query attends to at most the W
    latest positions, itself included, in every layer, and that the KV
    cache keeps only those positions.
    """

    name: str
    model_type: str
    architecture: str
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    hidden_act: str
    gated_mlp: bool
    norm: Literal["rmsnorm", "layernorm"]
    position_embedding: Literal["rotary", "learned"]
    rotary_dim: int = 0
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    fused_qkv: bool = False
    fused_gate_up: bool = False
    num_experts: int = 0
    experts_per_token: int = 0
    sliding_window: int | None = None
    is_encoder: bool = False
    pre_norm: bool = True
    embedding_size: int = 0
    position_embedding_rows: int = 0
    token_type_rows: int = 0
    final_norm: bool = True
    pooler: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        for field_name in ("hidden_size", "num_layers", "num_attention_heads", "num_kv_heads", "head_dim", "intermediate_size", "vocab_size", "max_position_embeddings"):
            self._check_positive(field_name)
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(
                f"invalid model {self.name!r}: num_key_value_heads={self.num_kv_heads} must divide "
                f"num_attention_heads={self.num_attention_heads}; fix config.json"
            )
        if self.norm not in ("rmsnorm", "layernorm"):
            raise ValueError(f"invalid model {self.name!r}: norm={self.norm!r}; choose 'rmsnorm' or 'layernorm'")
        if self.position_embedding not in ("rotary", "learned"):
            raise ValueError(f"invalid model {self.name!r}: position_embedding={self.position_embedding!r}; choose 'rotary' or 'learned'")
        if not 0 <= self.rotary_dim <= self.head_dim or self.rotary_dim % 2:
            raise ValueError(f"invalid model {self.name!r}: rotary_dim={self.rotary_dim} must be even and at most head_dim={self.head_dim}")
        if self.num_experts < 0 or self.experts_per_token < 0:
            raise ValueError(f"invalid model {self.name!r}: num_local_experts and num_experts_per_tok must not be negative")
        if self.num_experts and not 1 <= self.experts_per_token <= self.num_experts:
            raise ValueError(
                f"invalid model {self.name!r}: num_experts_per_tok={self.experts_per_token} must be from 1 to "
                f"num_local_experts={self.num_experts}; fix config.json"
            )
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise ValueError(f"invalid model {self.name!r}: sliding_window={self.sliding_window} must be positive, or null for full attention")
        if self.embedding_size < 0:
            raise ValueError(f"invalid model {self.name!r}: word_embed_proj_dim={self.embedding_size} must be positive")

    def _check_positive(self, field_name: str) -> None:
        value = getattr(self, field_name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            key = CONFIG_KEYS.get(field_name, field_name)
            raise ValueError(f"invalid model {self.name!r}: {key}={value!r} must be a positive integer; fix config.json")

    @property
    def query_size(self) -> int:
        """Width of the query projection: attention heads times head dim."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        """Width of the key and of the value projection: KV heads times head dim."""
        return self.num_kv_heads * self.head_dim

    @property
    def token_embedding_size(self) -> int:
        """Width of the token embedding table; OPT's word_embed_proj_dim can differ from hidden_size."""
        return self.embedding_size or self.hidden_size

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def has_lm_head(self) -> bool:
        return not self.is_encoder
