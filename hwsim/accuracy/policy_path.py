"""A rule-based bit policy on a real model: subsets chosen from calibration data, and GPTQ that respects them.

`hwsim.policy.Policy.quantizer_for` gives each tensor a quantizer that may
keep a subset in a higher-precision format (outlier channels, output
features, a PCA subspace, sparse outliers, salient groups) and, for the KV
cache, a window of recent tokens. `SubsetQdq` applies such a quantizer
through `hwsim.policy.subsets.qdq_tensor`, with the scores or basis that
the subset's selection rule needs:

- activation_amax: the largest |x| of each input channel over calibration
  inputs (Atom). Weights and inputs of a layer get the same scores, so they
  keep the same channels;
- hessian_diagonal: h_j (w_ij - q(w_ij))^2 with h = diag(X^T X) of the
  calibration inputs, summed per column, row or group (OWQ, SliM-LLM);
- fisher: the empirical Fisher diagonal of the weight times the squared
  rounding error (MixLLM, SqueezeLLM);
- activation_variance: the principal directions of the calibration inputs
  (ResQ); weights and inputs share the basis, so X W^T is unchanged before rounding;
- weight_magnitude: ranked from the tensor itself, without calibration.

`SubsetQdq.gptq` rounds a weight with GPTQ under the same subset. Kept
channels (moved last) and kept directions (first) form their own column
segments. Kept rows form a separate matrix. Sparse outliers are a mask,
and salient groups a per-group choice of format.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch

from hwsim.policy.quantizer import Quantizer as PolicyQuantizer
from hwsim.policy.subsets import channel_amax, hessian_diagonal, pca_basis, qdq_tensor, subset_selection, weight_error_scores

log = logging.getLogger(__name__)

# Selection rules that need calibration inputs, and the one that needs gradients too.
CALIBRATED_SELECTIONS = ("activation_amax", "hessian_diagonal", "activation_variance", "fisher")


@dataclass(frozen=True, eq=False)
class SubsetQdq:
    """qdq of one tensor under a policy quantizer with a subset or a KV window.

    format, axis and rounding are the dense part's, as the rest of the
    accuracy path reads them from a quantizer. kv_window is applied by the
    KV cache (older tokens only), so calls here quantize every token given.
    """

    quantizer: PolicyQuantizer
    seed: int = 0
    full_precision_format: str = "fp16"
    scores: torch.Tensor | None = None
    basis: torch.Tensor | None = None

    @property
    def format(self) -> str:
        return self.quantizer.format

    @property
    def axis(self) -> int:
        return self.quantizer.axis

    @property
    def rounding(self) -> str:
        return self.quantizer.rounding

    @property
    def kv_window(self) -> int:
        return self.quantizer.kv_window

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        device, dtype = x.device, x.dtype
        y = qdq_tensor(
            x.detach().to("cpu", torch.float32),
            replace(self.quantizer, kv_window=0),
            scores=self.scores,
            basis=self.basis,
            full_precision_format=self.full_precision_format,
            seed=self.seed,
        )
        return y.to(device=device, dtype=dtype)

    def gptq(self, weight: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
        """Return weight [out, in] rounded by GPTQ under this quantizer's subset."""
        from hwsim.accuracy.gptq import GroupChoicePlan, MaskPlan, SegmentPlan, gptq_weight

        subset = self.quantizer.subset
        fmt, rounding = self.format, self.rounding
        if subset is None:
            return gptq_weight(weight, hessian, fmt, rounding)
        w = weight.detach().to("cpu", torch.float32)
        h = hessian.detach().to("cpu", torch.float64)
        columns = w.shape[1]
        if subset.kind in ("outlier_channels", "pca_subspace"):
            if subset.kind == "outlier_channels":
                mask = subset_selection(w, self.quantizer, self.scores)
                order = torch.cat([torch.nonzero(~mask).flatten(), torch.nonzero(mask).flatten()])
                kept = int(mask.sum())
                segments = [(0, columns - kept, fmt), (columns - kept, columns, subset.format)]
                transform = torch.eye(columns, dtype=torch.float64)[:, order]
            else:
                basis = self.basis if self.basis is not None else pca_basis(w)
                kept = subset.size_of(columns)
                segments = [(0, kept, subset.format), (kept, columns, fmt)]
                transform = basis.to(torch.float64)
            # W X^T = (W T)(T^T X^T) for an orthonormal T: round W T against the Hessian of X T.
            moved = w.to(torch.float64) @ transform
            moved_hessian = transform.T @ h @ transform
            segments = [segment for segment in segments if segment[1] > segment[0]]
            rounded = gptq_weight(moved, moved_hessian, fmt, rounding, plan=SegmentPlan(segments, rounding))
            return (rounded @ transform.T).to(device=weight.device, dtype=weight.dtype)
        if subset.kind == "output_features":
            rows = subset_selection(w, self.quantizer, self.scores)
            result = torch.empty_like(w)
            for selected, part_format in ((~rows, fmt), (rows, subset.format)):
                if selected.any():
                    result[selected] = gptq_weight(w[selected], h, part_format, rounding).to(result.dtype)
            return result.to(device=weight.device, dtype=weight.dtype)
        if subset.kind == "sparse_outliers":
            plan = MaskPlan(fmt, subset_selection(w, self.quantizer, self.scores), subset.format, rounding)
        else:
            choices = {0: fmt, 1: subset.format}
            if subset.low_format:
                choices[-1] = subset.low_format
            plan = GroupChoicePlan(choices, subset_selection(w, self.quantizer, self.scores), rounding)
        return gptq_weight(w, h, fmt, rounding, plan=plan).to(device=weight.device, dtype=weight.dtype)


def needs_calibration(quantizer: PolicyQuantizer | None) -> bool:
    """True when the quantizer's subset is chosen from calibration inputs."""
    return quantizer is not None and quantizer.subset is not None and quantizer.subset.selection in CALIBRATED_SELECTIONS


def needs_fisher(quantizer: PolicyQuantizer | None) -> bool:
    return quantizer is not None and quantizer.subset is not None and quantizer.subset.selection == "fisher"


def _reduce(element_scores: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-element scores of a weight [out, in] summed the way a subset kind ranks its candidates."""
    if kind == "outlier_channels":
        return element_scores.sum(dim=0)
    if kind == "output_features":
        return element_scores.sum(dim=1)
    return element_scores


def weight_scores(quantizer: PolicyQuantizer, weight: torch.Tensor, inputs: torch.Tensor | None,
                  fisher: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(scores, basis) of a weight's subset from the layer's calibration inputs [tokens, in] and Fisher diagonal."""
    subset = quantizer.subset
    if subset is None or subset.selection == "weight_magnitude":
        return None, None
    if subset.kind == "pca_subspace":
        return None, pca_basis(inputs)
    if subset.selection == "activation_amax":
        return channel_amax(inputs), None
    w = weight.detach().to("cpu", torch.float32)
    if subset.selection == "hessian_diagonal":
        return _reduce(weight_error_scores(w, quantizer.format, hessian_diagonal(inputs), rounding=quantizer.rounding), subset.kind), None
    # fisher: F_ij (w_ij - q(w_ij))^2, the second-order loss change that SqueezeLLM and MixLLM rank by.
    error = weight_error_scores(w, quantizer.format, torch.ones(w.shape[1], dtype=torch.float64), rounding=quantizer.rounding)
    return _reduce(error * fisher.to("cpu", torch.float64), subset.kind), None


def input_scores(quantizer: PolicyQuantizer, inputs: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(scores, basis) of an input's subset; kinds other than channels and subspaces rank each tensor as it comes."""
    subset = quantizer.subset
    if subset is None or inputs is None:
        return None, None
    if subset.kind == "pca_subspace":
        return None, pca_basis(inputs)
    if subset.kind == "outlier_channels":
        if subset.selection == "activation_amax":
            return channel_amax(inputs), None
        if subset.selection == "hessian_diagonal":
            return hessian_diagonal(inputs), None
    return None, None
