"""`hwsim models list` and `hwsim models show`."""

from __future__ import annotations

import pytest

from hwsim.cli import main
from hwsim.cli.models_cmd import format_count, format_si


def run(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_show_llama3_prints_headline_numbers(capsys):
    status, output, error = run(capsys, "models", "show", "llama-3-8b")

    assert status == 0
    assert error == ""
    assert "parameters: 8,030,261,248 (8.03 B)" in output
    assert "FLOPs per token at a context of 2048 tokens:" in output
    assert "GFLOP" in output
    assert "KV-cache bytes per token: 131,072 bytes (131 kB)" in output
    # fp16: 2 bytes per parameter.
    assert "weight bytes: 16,060,522,496 bytes (16.1 GB)" in output
    assert "source: meta-llama/Meta-Llama-3-8B" in output


def test_show_llama2_kv_bytes(capsys):
    status, output, _ = run(capsys, "models", "show", "llama-2-7b")

    assert status == 0
    assert "KV-cache bytes per token: 524,288 bytes (524 kB)" in output


def test_show_with_policy_and_context(capsys):
    status, output, _ = run(capsys, "models", "show", "llama-3-8b", "--policy", "w4a16kv8", "--context", "8192")

    assert status == 0
    assert "bit policy: w=int4_g128,a=fp16,kv=int8_token" in output
    assert "FLOPs per token at a context of 8192 tokens:" in output
    # int8 codes and an fp16 scale per KV head and token: 2 x 32 x 8 x (128 + 2) bytes.
    assert "KV-cache bytes per token: 66,560 bytes" in output


def test_show_moe_prints_active_parameters(capsys):
    status, output, _ = run(capsys, "models", "show", "mixtral-8x7b")

    assert status == 0
    assert "parameters: 46,702,792,704 (46.7 B)" in output
    assert "active parameters per token: 12,879,925,248 (12.9 B)" in output
    assert "experts: 8, 2 per token" in output


def test_show_encoder_has_no_kv_cache(capsys):
    status, output, _ = run(capsys, "models", "show", "all-minilm-l6-v2")

    assert status == 0
    assert "parameters: 22,713,216 (22.7 M)" in output
    assert "KV-cache bytes per token: none" in output


def test_show_accepts_config_path(capsys, tmp_path):
    from hwsim.workload import shipped_config_paths

    path = tmp_path / "config.json"
    path.write_text(shipped_config_paths()["smollm2-135m"].read_text())

    status, output, _ = run(capsys, "models", "show", str(path))

    assert status == 0
    assert "parameters: 134,515,008 (135 M)" in output
    assert "source:" not in output


def test_list_prints_every_shipped_model(capsys):
    status, output, _ = run(capsys, "models", "list")

    lines = output.strip().splitlines()

    assert status == 0
    assert len(lines) == 1 + 12
    assert "llama-2-7b" in output
    assert "6.74 B" in output
    assert "46.7 B (12.9 B active)" in output
    assert "13.0 B" in output
    assert "sentence-transformers/all-MiniLM-L6-v2" in output


@pytest.mark.parametrize(
    "argv, message",
    [
        (("models", "show", "llama-3-9b"), "unknown model 'llama-3-9b'"),
        (("models", "show", "llama-3-8b", "--policy", "w5"), "invalid bit policy 'w5'"),
        (("models", "show", "llama-3-8b", "--context", "9000"), "invalid --context 9000"),
        (("models", "show", "llama-3-8b", "--context", "0"), "invalid --context 0"),
        (("models", "show", "llama-3-8b", "--policy", "w=mxfp5"), "unknown format 'mxfp5'"),
    ],
)
def test_bad_input_is_one_line_and_status_2(capsys, argv, message):
    status, output, error = run(capsys, *argv)

    assert status == 2
    assert output == ""
    assert error.count("\n") == 1
    assert error.startswith("hwsim models: error: ")
    assert message in error


def test_missing_action_is_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["models"])

    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    "value, expected",
    [(8_030_261_248, "8.03 B"), (13_015_864_320, "13.0 B"), (134_515_008, "135 M"), (22_713_216, "22.7 M"), (950, "950")],
)
def test_format_count(value, expected):
    assert format_count(value) == expected


@pytest.mark.parametrize(
    "value, unit, expected",
    [(16_060_522_496, "B", "16.1 GB"), (131_072, "B", "131 kB"), (524_288, "B", "524 kB"), (26_198_208, "FLOP", "26.2 MFLOP"), (12, "B", "12.0 B")],
)
def test_format_si(value, unit, expected):
    assert format_si(value, unit) == expected
