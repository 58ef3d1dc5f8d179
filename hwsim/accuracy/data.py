"""Evaluation and calibration text: the WikiText-2 raw test split that hwsim ships.

The file keeps one paragraph per line without the upstream's empty rows,
so the text is its lines joined with "\n\n", which restores the spacing
that perplexity numbers in papers are computed on. Calibration batches come
from the end of the split and evaluation windows from its start, so the
two stay apart unless an evaluation scores nearly the whole split.
"""

from __future__ import annotations

import hashlib
import logging
from functools import lru_cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)

WIKITEXT2_TEST = Path(__file__).resolve().parent.parent / "data" / "wikitext-2-raw" / "wiki.test.raw"
WIKITEXT2_JOIN = "\n\n"
DATASET_NAME = "WikiText-2 raw, test split"


def wikitext2_text() -> str:
    """Return the test split as one string: the file's lines joined with WIKITEXT2_JOIN."""
    if not WIKITEXT2_TEST.is_file():
        raise FileNotFoundError(f"{WIKITEXT2_TEST} is missing; reinstall hwsim, which ships it as package data")
    return WIKITEXT2_JOIN.join(WIKITEXT2_TEST.read_text(encoding="utf-8").splitlines())


@lru_cache(maxsize=1)
def wikitext2_sha256() -> str:
    return hashlib.sha256(WIKITEXT2_TEST.read_bytes()).hexdigest()


@lru_cache(maxsize=4)
def wikitext2_tokens(tokenizer) -> torch.Tensor:
    """Token ids (int64, 1-D) of the whole split, without special tokens such as BOS."""
    log.info("tokenizing %s with %s", DATASET_NAME, type(tokenizer).__name__)
    ids = tokenizer(wikitext2_text(), add_special_tokens=False, return_tensors="pt").input_ids[0]
    ids.requires_grad_(False)
    return ids


def calibration_batches(tokenizer, tokens: int = 2048, length: int = 256) -> list[torch.Tensor]:
    """Return batches [1, length] covering the last `tokens` tokens of the split (rounded down to whole batches)."""
    if tokens < length:
        raise ValueError(f"invalid calibration size: {tokens} tokens are fewer than one batch of {length}; give at least {length}")
    ids = wikitext2_tokens(tokenizer)
    count = tokens // length
    tail = ids[len(ids) - count * length:]
    return [tail[i * length:(i + 1) * length][None, :] for i in range(count)]


def wikitext2_paragraphs(count: int, min_words: int = 20) -> list[str]:
    """Return the first `count` lines of the split that are paragraphs (not " = Heading = " lines) of at least min_words words."""
    paragraphs = []
    for line in WIKITEXT2_TEST.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text.startswith("=") or len(text.split()) < min_words:
            continue
        paragraphs.append(text)
        if len(paragraphs) == count:
            break
    return paragraphs
