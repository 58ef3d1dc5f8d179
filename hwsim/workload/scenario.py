"""Scenarios: which phase of inference runs, on how many sequences, over how many tokens."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hwsim.workload.model import ModelSpec

log = logging.getLogger(__name__)

Phase = Literal["prefill", "decode"]


@dataclass(frozen=True)
class Scenario:
    """One phase of inference on `batch_size` sequences of equal length.

    - prefill: one forward pass over a prompt of `context_tokens` tokens;
    - decode: `generated_tokens` forward passes of one token each, after a
      context of `context_tokens` tokens already sits in the KV cache. Step i
      (from 0) feeds the token at position context_tokens + i, so it
      attends to context_tokens + i + 1 positions, itself included.

    Build scenarios with `Scenario.prefill` and `Scenario.decode`.
    """

    phase: Phase
    batch_size: int
    context_tokens: int
    generated_tokens: int = 0

    def __post_init__(self) -> None:
        if self.phase not in ("prefill", "decode"):
            raise ValueError(f"invalid phase {self.phase!r}: choose 'prefill' or 'decode'")
        _check_count("batch_size", self.batch_size, "the number of sequences")
        label = "context_tokens (the prompt length)" if self.phase == "prefill" else "context_tokens (tokens already in the KV cache)"
        _check_count(label, self.context_tokens, "a length of at least 1 token")
        if self.phase == "decode":
            _check_count("generated_tokens", self.generated_tokens, "the number of decode steps")
        elif self.generated_tokens != 0:
            raise ValueError(
                f"invalid prefill scenario: generated_tokens={self.generated_tokens!r}; a prefill generates nothing, "
                f"so use Scenario.decode for generation"
            )

    @classmethod
    def prefill(cls, batch_size: int, prompt_tokens: int) -> Scenario:
        return cls("prefill", batch_size, prompt_tokens)

    @classmethod
    def decode(cls, batch_size: int, context_tokens: int, generated_tokens: int = 1) -> Scenario:
        return cls("decode", batch_size, context_tokens, generated_tokens)

    @property
    def steps(self) -> int:
        """Forward passes: 1 for prefill, one per generated token for decode."""
        return 1 if self.phase == "prefill" else self.generated_tokens

    @property
    def tokens_per_sequence(self) -> int:
        """Positions in use after the scenario: the prompt, or the context plus the generated tokens."""
        return self.context_tokens + self.generated_tokens

    def cached_tokens_per_step(self, sliding_window: int | None = None) -> np.ndarray:
        """Positions each step reads from the KV cache, per sequence (int64, one entry per step).

        Prefill reads nothing from the cache: its keys and values are
        computed in the same pass. Decode step i reads the context_tokens + i
        positions before its own token, or the sliding_window - 1 latest of
        them when the model has a window.
        """
        if self.phase == "prefill":
            return np.zeros(1, dtype=np.int64)
        cached = self.context_tokens + np.arange(self.generated_tokens, dtype=np.int64)
        if sliding_window is not None:
            cached = np.minimum(cached, sliding_window - 1)
        return cached

    def check_fits(self, spec: ModelSpec, *, allow_long_context: bool = False) -> None:
        """Raise ValueError if the scenario does not fit the model.

        An encoder has no decode phase. A sequence longer than
        max_position_embeddings raises ValueError unless allow_long_context
        is True, which logs a warning instead for rotary models (their
        quality past the trained length is unknown). Models with learned
        position tables (OPT, BERT) have no row past the table, so they
        always raise.
        """
        if spec.is_encoder and self.phase == "decode":
            raise ValueError(f"model {spec.name!r} is an encoder, which has no decode phase; use Scenario.prefill")
        length = self.tokens_per_sequence
        limit = spec.max_position_embeddings
        if length <= limit:
            return
        problem = f"{self.phase} of {length} tokens per sequence is longer than max_position_embeddings={limit} of model {spec.name!r}"
        if spec.position_embedding == "learned":
            raise ValueError(f"{problem}, and its learned position table has no rows past that; use at most {limit} tokens")
        if not allow_long_context:
            raise ValueError(f"{problem}; use at most {limit} tokens, or pass allow_long_context=True to model it anyway")
        log.warning("%s; modelling it anyway because allow_long_context=True", problem)


def _check_count(label: str, value: object, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"invalid {label}={value!r}: must be a positive integer, {meaning}")
