"""QuaRot-style Hadamard rotations of a Llama model (Ashkboos et al., "QuaRot", NeurIPS 2024).

Rotations spread outlier channels over all channels, so a per-tensor or
per-token scale fits the values better. Applied to a Llama model:

1. Each RMSNorm weight is folded into the linear layers it feeds, which
   leaves a norm that commutes with any orthogonal Q (||x Q|| = ||x||).
2. The residual stream is rotated by Q = diag(random signs) H / sqrt(n):
   the embedding and the inputs of q/k/v/gate/up_proj and the LM head
   absorb Q, the outputs of o_proj and down_proj absorb Q^T. No online
   operation is needed.
3. Values are rotated per head by H_head: folded into v_proj's rows and
   o_proj's columns, so the V cache stores rotated values.
4. The input of down_proj is rotated online by H_intermediate (it follows
   the SwiGLU product, so nothing can absorb it); down_proj's weight
   absorbs the inverse.
5. Keys are rotated online by H_head where the KV cache quantizes them,
   and rotated back after the qdq, which gives the attention scores of
   rotating queries and keys both (see `hwsim.accuracy.kv_cache`).

QuaRot's extra online Hadamard across attention heads before o_proj is not
applied: it needs a Hadamard matrix of order num_heads (9 for SmolLM2-135M,
which has none). Rotations are computed in float64 and stored in the
model's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hwsim.accuracy.architectures import decoder_layers, fold_norm_into, require_llama, untie_lm_head
from hwsim.accuracy.hadamard import HadamardTransform, hadamard_matrix


@dataclass
class Rotation:
    """The rotations applied to a model, to undo them when comparing layer outputs with the original.

    residual: Q (hidden x hidden), float64; head: H_head / sqrt(head_dim),
    float64; mlp: the online transform of down_proj's input.
    """

    residual: torch.Tensor
    head: torch.Tensor
    mlp: HadamardTransform
    head_dim: int

    def unrotate_residual(self, y: torch.Tensor) -> torch.Tensor:
        return (y.to(torch.float64) @ self.residual.T.to(y.device)).to(y.dtype)

    def unrotate_heads(self, y: torch.Tensor) -> torch.Tensor:
        heads = y.reshape(*y.shape[:-1], -1, self.head_dim).to(torch.float64)
        return (heads @ self.head.T.to(y.device)).reshape(y.shape).to(y.dtype)


def random_signs(n: int, seed: int) -> torch.Tensor:
    """+-1 per channel from `seed`, float64: the diagonal of QuaRot's randomised Hadamard matrix diag(s) H."""
    return torch.from_numpy(np.random.default_rng(seed).choice(np.array([-1.0, 1.0]), size=n))


def _left(linear: torch.nn.Linear, transform) -> None:
    """W <- M^T W, so that the layer's output y becomes y @ M, with transform(x) = x @ M."""
    weight = linear.weight.detach().to(torch.float64)
    linear.weight.data = transform(weight.T).T.contiguous().to(linear.weight.dtype)
    if linear.bias is not None:
        linear.bias.data = transform(linear.bias.detach().to(torch.float64)).to(linear.bias.dtype)


def _right(linear: torch.nn.Linear, transform) -> None:
    """W <- W M, so that the layer takes inputs x @ M and gives the same output, with transform(x) = x @ M."""
    weight = linear.weight.detach().to(torch.float64)
    linear.weight.data = transform(weight).to(linear.weight.dtype)


def rotate_llama(model: torch.nn.Module, seed: int = 0) -> Rotation:
    """Fold the rotations of the module docstring into a Llama model in place; return them."""
    require_llama(model, "rotate")
    config = model.config
    hidden = int(config.hidden_size)
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    intermediate = int(config.intermediate_size)
    embedding = model.get_input_embeddings()
    device = embedding.weight.device

    # Build every transform first, so an unsupported size raises before the model changes.
    signs = random_signs(hidden, seed).to(device)
    hidden_transform = HadamardTransform(hidden, device=device, dtype=torch.float64)
    head = torch.from_numpy(hadamard_matrix(head_dim)).to(device)
    mlp_transform = HadamardTransform(intermediate, device=device, dtype=torch.float64)
    online_mlp = HadamardTransform(intermediate, device=device, dtype=embedding.weight.dtype)

    def residual_transform(x):  # x @ Q with Q = diag(signs) H / sqrt(hidden)
        return hidden_transform(x * signs)

    def head_transform(x):  # x @ blockdiag(H_head, ..., H_head) along the last axis
        return (x.reshape(*x.shape[:-1], -1, head_dim) @ head).reshape(x.shape)

    untie_lm_head(model)
    layers = decoder_layers(model)
    for layer in layers:
        attention, feed_forward = layer.self_attn, layer.mlp
        fold_norm_into(layer.input_layernorm, [attention.q_proj, attention.k_proj, attention.v_proj])
        fold_norm_into(layer.post_attention_layernorm, [feed_forward.gate_proj, feed_forward.up_proj])
    fold_norm_into(model.model.norm, [model.get_output_embeddings()])

    embedding.weight.data = residual_transform(embedding.weight.detach().to(torch.float64)).to(embedding.weight.dtype)
    for layer in layers:
        attention, feed_forward = layer.self_attn, layer.mlp
        for linear in (attention.q_proj, attention.k_proj, attention.v_proj, feed_forward.gate_proj, feed_forward.up_proj):
            _right(linear, residual_transform)
        _left(attention.o_proj, residual_transform)
        _left(feed_forward.down_proj, residual_transform)

        # Values per head: v_proj's rows of head h become H^T W_h, and o_proj's columns absorb H.
        _left(attention.v_proj, head_transform)
        _right(attention.o_proj, head_transform)
        _right(feed_forward.down_proj, mlp_transform)
    _right(model.get_output_embeddings(), residual_transform)
    residual = residual_transform(torch.eye(hidden, dtype=torch.float64, device=device))
    return Rotation(residual=residual, head=head, mlp=online_mlp, head_dim=head_dim)
