"""The ops of one forward pass of a model, with their shapes, counts and tensors.

Every layer of the supported architectures is the same, so block ops are
built once, named "layers.*.<op>", and carry count = num_layers.

Counts of the elementwise and reduction ops follow the operations that the
eager transformers code runs, per element. Fused kernels differ, so these
counts are estimates:

- RMSNorm: 4 ops per element (square, sum, scale, weight) and one rsqrt per token;
- LayerNorm: 7 ops per element (sum, subtract mean, square, sum, scale,
  weight, bias) and one rsqrt per token;
- softmax over attention scores: 5 ops per score (scale by 1/sqrt(head_dim),
  running max, subtract, sum, normalise), one exp per score and one
  reciprocal per row;
- rotary embedding: 3 ops per rotated element (x*cos + rotate_half(x)*sin).
"""

from __future__ import annotations

from dataclasses import replace

from hwsim.workload.model import ModelSpec
from hwsim.workload.ops import MoERouting, Op, TensorSpec
from hwsim.workload.parameters import Parameter, parameter_lookup

RMSNORM_OPS_PER_ELEMENT = 4
LAYERNORM_OPS_PER_ELEMENT = 7
SOFTMAX_OPS_PER_SCORE = 5
ROTARY_OPS_PER_ELEMENT = 3
# Router softmax over the experts: max, subtract, sum, normalise.
ROUTER_SOFTMAX_OPS_PER_LOGIT = 4


def forward_ops(
    spec: ModelSpec,
    batch_size: int,
    query_tokens: int,
    cached_tokens: int = 0,
    *,
    causal_mask_halving: bool = True,
    logits_per_sequence: int = 1,
) -> tuple[Op, ...]:
    """Build the ops of one forward pass of `query_tokens` new tokens per sequence.

    `cached_tokens` positions per sequence are read from the KV cache (0 for
    a prefill). `logits_per_sequence` rows per sequence go through the LM head:
    1 for generation, which needs the logits of the last position only, or
    `query_tokens` to score every position.

    With `causal_mask_halving`, attention counts only the (query, key) pairs
    that the causal mask and any sliding window keep, because
    FlashAttention-style kernels skip masked blocks. A prompt of n tokens
    then has n(n+1)/2 pairs per head. Without it, attention counts the dense
    query x key rectangle that a masked GEMM computes. Encoders have no mask,
    so the option does not change them.
    """
    for label, value in (("batch_size", batch_size), ("query_tokens", query_tokens), ("logits_per_sequence", logits_per_sequence)):
        if value < 1:
            raise ValueError(f"invalid {label}={value}: must be at least 1")
    if cached_tokens < 0:
        raise ValueError(f"invalid cached_tokens={cached_tokens}: must not be negative")
    if logits_per_sequence > query_tokens:
        raise ValueError(f"invalid logits_per_sequence={logits_per_sequence}: must be at most query_tokens={query_tokens}")

    builder = _PassBuilder(spec, batch_size, query_tokens, cached_tokens, causal_mask_halving)
    ops = builder.embedding_ops()
    ops += [replace(op, count=spec.num_layers) for op in builder.layer_ops()]
    ops += builder.head_ops(logits_per_sequence)
    return tuple(ops)


class _PassBuilder:
    """Builder of the ops of one forward pass. Each method returns the ops of one part of the model."""

    def __init__(self, spec: ModelSpec, batch_size: int, query_tokens: int, cached_tokens: int, causal_mask_halving: bool):
        self.spec = spec
        self.params = parameter_lookup(spec)
        self.batch = batch_size
        self.query = query_tokens
        self.cached = cached_tokens
        self.tokens = batch_size * query_tokens
        self.halving = causal_mask_halving and not spec.is_encoder

    # Model input and output.

    def embedding_ops(self) -> list[Op]:
        spec, tokens, h = self.spec, self.tokens, self.spec.hidden_size
        width = spec.token_embedding_size
        ops = [
            Op(
                "embed_tokens",
                "elementwise",
                m=tokens,
                n=width,
                tensors=(
                    # A gather reads one row of the table per token.
                    TensorSpec("embed_tokens.weight", "weight", (tokens, width), parameter_kind="embedding"),
                    TensorSpec("embed_tokens.output", "output", (tokens, width), "write"),
                ),
            )
        ]
        if width != h:
            ops.append(self.linear("project_in", tokens, self.params["project_in.weight"]))
        if spec.position_embedding_rows:
            ops.append(self.embedding_add("embed_positions"))
        if spec.token_type_rows:
            ops.append(self.embedding_add("embed_token_types"))
        if spec.is_encoder:
            ops.append(self.norm("embed_norm"))
        if spec.position_embedding == "rotary":
            ops.append(self.rotary_table())
        return ops

    def head_ops(self, logits_per_sequence: int) -> list[Op]:
        spec = self.spec
        ops = []
        if spec.final_norm:
            ops.append(self.norm("final_norm"))
        if spec.token_embedding_size != spec.hidden_size:
            ops.append(self.linear("project_out", self.tokens, self.params["project_out.weight"]))
        if spec.has_lm_head:
            weight = self.params["embed_tokens.weight" if spec.tie_word_embeddings else "lm_head.weight"]
            ops.append(self.linear("lm_head", self.batch * logits_per_sequence, weight))
        if spec.pooler:
            # BertPooler: dense and tanh on the first token of each sequence.
            ops.append(self.linear("pooler", self.batch, self.params["pooler.weight"], self.params["pooler.bias"]))
            ops.append(self.activation("pooler.tanh", self.batch, spec.hidden_size, gated=False))
        return ops

    # One transformer block.

    def layer_ops(self) -> list[Op]:
        spec = self.spec
        ops = []
        if spec.pre_norm:
            ops.append(self.norm("layers.*.attn_norm"))
        ops += self.attention_ops()
        ops.append(self.residual("layers.*.attn_residual"))
        if not spec.pre_norm:
            ops.append(self.norm("layers.*.attn_norm"))
        if spec.pre_norm:
            ops.append(self.norm("layers.*.mlp_norm"))
        ops += self.moe_ops() if spec.is_moe else self.mlp_ops()
        ops.append(self.residual("layers.*.mlp_residual"))
        if not spec.pre_norm:
            ops.append(self.norm("layers.*.mlp_norm"))
        return ops

    def attention_ops(self) -> list[Op]:
        spec, tokens = self.spec, self.tokens
        batch, query, cached = self.batch, self.query, self.cached
        heads, kv_heads, head_dim = spec.num_attention_heads, spec.num_kv_heads, spec.head_dim
        keys = cached + query
        pairs = self.attended_pairs()
        ops = []

        if spec.fused_qkv:
            ops.append(self.linear_named("layers.*.self_attn.qkv_proj", tokens))
        else:
            for name in ("q_proj", "k_proj", "v_proj"):
                ops.append(self.linear_named(f"layers.*.self_attn.{name}", tokens))
        if spec.position_embedding == "rotary":
            rotated = tokens * (heads + kv_heads) * spec.rotary_dim
            ops.append(
                Op(
                    "layers.*.self_attn.rotary",
                    "elementwise",
                    m=tokens,
                    n=(heads + kv_heads) * spec.rotary_dim,
                    elementwise_ops=ROTARY_OPS_PER_ELEMENT * rotated,
                    tensors=(
                        TensorSpec("query", "activation", (tokens, spec.query_size)),
                        TensorSpec("key", "activation", (tokens, spec.kv_size)),
                        TensorSpec("rotary_table", "activation", (tokens, spec.rotary_dim)),
                        TensorSpec("query_rotated", "output", (tokens, spec.query_size), "write"),
                        TensorSpec("key_rotated", "output", (tokens, spec.kv_size), "write"),
                    ),
                )
            )

        new_kv_shape = (batch, kv_heads, query, head_dim)
        cached_kv_shape = (batch, kv_heads, cached, head_dim)
        if not spec.is_encoder:
            ops.append(
                Op(
                    "layers.*.self_attn.kv_cache_write",
                    "elementwise",
                    m=tokens,
                    n=2 * spec.kv_size,
                    tensors=(
                        TensorSpec("key", "activation", new_kv_shape),
                        TensorSpec("value", "activation", new_kv_shape),
                        TensorSpec("key_cache", "kv_cache", new_kv_shape, "write"),
                        TensorSpec("value_cache", "kv_cache", new_kv_shape, "write"),
                    ),
                )
            )

        # Queries use all attention heads, but keys and values, new and cached, use only the KV heads.
        score_inputs = [TensorSpec("query", "activation", (batch, heads, query, head_dim)), TensorSpec("key", "activation", new_kv_shape)]
        context_inputs = [TensorSpec("probabilities", "activation", (batch, heads, pairs)), TensorSpec("value", "activation", new_kv_shape)]
        if cached:
            score_inputs.append(TensorSpec("key_cache", "kv_cache", cached_kv_shape))
            context_inputs.append(TensorSpec("value_cache", "kv_cache", cached_kv_shape))
        ops.append(
            Op(
                "layers.*.self_attn.scores",
                "attention",
                m=query,
                n=keys,
                k=head_dim,
                batch=batch * heads,
                macs=batch * heads * pairs * head_dim,
                tensors=(*score_inputs, TensorSpec("scores", "output", (batch, heads, pairs), "write")),
            )
        )
        rows = batch * heads * query
        ops.append(
            Op(
                "layers.*.self_attn.softmax",
                "reduction",
                m=rows,
                n=keys,
                elementwise_ops=SOFTMAX_OPS_PER_SCORE * batch * heads * pairs,
                nonlinear_ops=batch * heads * pairs + rows,
                tensors=(
                    TensorSpec("scores", "activation", (batch, heads, pairs)),
                    TensorSpec("probabilities", "output", (batch, heads, pairs), "write"),
                ),
            )
        )
        ops.append(
            Op(
                "layers.*.self_attn.context",
                "attention",
                m=query,
                n=head_dim,
                k=keys,
                batch=batch * heads,
                macs=batch * heads * pairs * head_dim,
                tensors=(*context_inputs, TensorSpec("context", "output", (tokens, spec.query_size), "write")),
            )
        )
        ops.append(self.linear_named("layers.*.self_attn.o_proj", tokens))
        return ops

    def attended_pairs(self) -> int:
        """Count the (query, key) pairs per sequence and head that the attention ops compute."""
        query, cached = self.query, self.cached
        window = self.spec.sliding_window
        if not self.halving:
            return query * (cached + query)
        if query == 1:
            # The caller keeps cached_tokens within the window, so the one query attends to all of them.
            return cached + 1
        # Query i (from 1) attends to min(cached + i, window) keys. Sum that in closed form.
        last = cached + query
        if window is None or last <= window:
            return query * cached + query * (query + 1) // 2
        full_rows = max(0, last - max(window, cached))
        growing = query - full_rows
        return growing * cached + growing * (growing + 1) // 2 + full_rows * window

    def mlp_ops(self) -> list[Op]:
        spec, tokens = self.spec, self.tokens
        ops = []
        if spec.gated_mlp and spec.fused_gate_up:
            ops.append(self.linear_named("layers.*.mlp.gate_up_proj", tokens))
        elif spec.gated_mlp:
            ops.append(self.linear_named("layers.*.mlp.gate_proj", tokens))
            ops.append(self.linear_named("layers.*.mlp.up_proj", tokens))
        else:
            ops.append(self.linear_named("layers.*.mlp.up_proj", tokens))
        ops.append(self.activation("layers.*.mlp.act", tokens, spec.intermediate_size, gated=spec.gated_mlp))
        ops.append(self.linear_named("layers.*.mlp.down_proj", tokens))
        return ops

    def moe_ops(self) -> list[Op]:
        spec, tokens, h = self.spec, self.tokens, self.spec.hidden_size
        experts, top_k, size = spec.num_experts, spec.experts_per_token, spec.intermediate_size
        routing = MoERouting(experts, top_k, tokens)
        routed_rows = tokens * top_k
        ops = [
            self.linear_named("layers.*.moe.router", tokens),
            Op(
                "layers.*.moe.routing",
                "reduction",
                m=tokens,
                n=experts,
                # Softmax over the experts, top-k by k passes of compares, then the k weights renormalised.
                elementwise_ops=tokens * (ROUTER_SOFTMAX_OPS_PER_LOGIT * experts + top_k * experts + 2 * top_k),
                nonlinear_ops=tokens * (experts + 1),
                tensors=(
                    TensorSpec("router_logits", "activation", (tokens, experts)),
                    TensorSpec("routing_weights", "output", (tokens, top_k), "write"),
                ),
                routing=routing,
            ),
        ]
        for name, out_features, in_features in (("gate_proj", size, h), ("up_proj", size, h)):
            ops.append(self.expert_linear(name, routing, out_features, in_features))
        ops.append(replace(self.activation("layers.*.moe.experts.act", routed_rows, size, gated=True), routing=routing))
        ops.append(self.expert_linear("down_proj", routing, h, size))
        ops.append(
            Op(
                "layers.*.moe.combine",
                "elementwise",
                m=tokens,
                n=h,
                # Each output element: top_k products with the routing weights, top_k - 1 adds.
                elementwise_ops=tokens * h * (2 * top_k - 1),
                tensors=(
                    TensorSpec("expert_outputs", "activation", (routed_rows, h)),
                    TensorSpec("routing_weights", "activation", (tokens, top_k)),
                    TensorSpec("moe_output", "output", (tokens, h), "write"),
                ),
                routing=routing,
            )
        )
        return ops

    def expert_linear(self, name: str, routing: MoERouting, out_features: int, in_features: int) -> Op:
        """Build one projection of all experts as a grouped GEMM over the tokens * top_k routed rows."""
        weight = self.params[f"layers.*.moe.experts.{name}.weight"]
        rows = routing.tokens * routing.top_k
        kind = "GEMV" if routing.expected_tokens_per_expert <= 1 else "GEMM"
        return Op(
            f"layers.*.moe.experts.{name}",
            kind,
            m=rows,
            n=out_features,
            k=in_features,
            macs=rows * out_features * in_features,
            tensors=(
                TensorSpec(f"experts.{name}.input", "activation", (rows, in_features)),
                # Only the experts that receive a token are read.
                weight.tensor(accessed_fraction=routing.expected_active_experts / routing.experts),
                TensorSpec(f"experts.{name}.output", "output", (rows, out_features), "write"),
            ),
            routing=routing,
        )

    # Building blocks.

    def linear_named(self, name: str, rows: int) -> Op:
        return self.linear(name, rows, self.params[f"{name}.weight"], self.params.get(f"{name}.bias"))

    def linear(self, name: str, rows: int, weight: Parameter, bias: Parameter | None = None) -> Op:
        out_features, in_features = weight.shape
        tensors = [TensorSpec(f"{name}.input", "activation", (rows, in_features)), weight.tensor()]
        if bias is not None:
            tensors.append(bias.tensor())
        tensors.append(TensorSpec(f"{name}.output", "output", (rows, out_features), "write"))
        return Op(
            name,
            "GEMV" if rows == 1 else "GEMM",
            m=rows,
            n=out_features,
            k=in_features,
            macs=rows * out_features * in_features,
            elementwise_ops=rows * out_features if bias is not None else 0,
            tensors=tuple(tensors),
        )

    def norm(self, name: str) -> Op:
        spec, tokens, h = self.spec, self.tokens, self.spec.hidden_size
        per_element = RMSNORM_OPS_PER_ELEMENT if spec.norm == "rmsnorm" else LAYERNORM_OPS_PER_ELEMENT
        weights = [self.params[f"{name}.weight"].tensor()]
        if spec.norm == "layernorm":
            weights.append(self.params[f"{name}.bias"].tensor())
        return Op(
            name,
            "reduction",
            m=tokens,
            n=h,
            elementwise_ops=per_element * tokens * h,
            nonlinear_ops=tokens,
            tensors=(
                TensorSpec(f"{name}.input", "activation", (tokens, h)),
                *weights,
                TensorSpec(f"{name}.output", "output", (tokens, h), "write"),
            ),
        )

    def activation(self, name: str, rows: int, width: int, gated: bool) -> Op:
        """Build the activation function (SiLU, GELU, ReLU, tanh) on rows x width, times the up projection if gated."""
        inputs = [TensorSpec(f"{name}.input", "activation", (rows, width))]
        if gated:
            inputs.append(TensorSpec(f"{name}.up", "activation", (rows, width)))
        return Op(
            name,
            "elementwise",
            m=rows,
            n=width,
            elementwise_ops=rows * width if gated else 0,
            nonlinear_ops=rows * width,
            tensors=(*inputs, TensorSpec(f"{name}.output", "output", (rows, width), "write")),
        )

    def residual(self, name: str) -> Op:
        tokens, h = self.tokens, self.spec.hidden_size
        return Op(
            name,
            "elementwise",
            m=tokens,
            n=h,
            elementwise_ops=tokens * h,
            tensors=(
                TensorSpec(f"{name}.input", "activation", (tokens, h)),
                TensorSpec(f"{name}.residual", "activation", (tokens, h)),
                TensorSpec(f"{name}.output", "output", (tokens, h), "write"),
            ),
        )

    def embedding_add(self, name: str) -> Op:
        """Gather one row of a position or token-type table per token and add it to the hidden state."""
        tokens, h = self.tokens, self.spec.hidden_size
        return Op(
            name,
            "elementwise",
            m=tokens,
            n=h,
            elementwise_ops=tokens * h,
            tensors=(
                TensorSpec(f"{name}.weight", "weight", (tokens, h), parameter_kind="embedding"),
                TensorSpec(f"{name}.input", "activation", (tokens, h)),
                TensorSpec(f"{name}.output", "output", (tokens, h), "write"),
            ),
        )

    def rotary_table(self) -> Op:
        """Build the table of cos and sin of position x inverse frequency, computed once per pass for all layers."""
        tokens, dim = self.tokens, self.spec.rotary_dim
        return Op(
            "rotary_table",
            "elementwise",
            m=tokens,
            n=dim,
            elementwise_ops=tokens * dim // 2,
            nonlinear_ops=tokens * dim,
            tensors=(TensorSpec("rotary_table", "output", (tokens, dim), "write"),),
        )
