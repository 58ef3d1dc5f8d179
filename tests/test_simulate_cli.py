"""`hwsim simulate`: the table, --json, --ops, and one-line errors with exit status 2."""

from __future__ import annotations

import json

import pytest

from hwsim.cli import main
from hwsim.simulation import simulate
from hwsim.workload import Scenario


def run(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_decode_table(capsys):
    status, output, error = run(capsys, "simulate", "--model", "llama-3-8b", "--accelerator", "h100-sxm",
                                "--policy", "w4a16-g128", "--phase", "decode", "--batch", "1", "--context", "1024")
    assert status == 0
    assert error == ""
    assert "llama-3-8b on h100-sxm (gpu), policy w=int4_g128,a=fp16,kv=fp16" in output
    assert "per output token (ms)" in output
    assert "memory: fits;" in output


def test_json_matches_the_api(capsys):
    argv = ["simulate", "--model", "llama-3-8b", "--accelerator", "h100-sxm", "--policy", "w4a16-g128",
            "--phase", "decode", "--batch", "1", "--context", "1024", "--json"]
    status, output, _ = run(capsys, *argv)
    assert status == 0
    data = json.loads(output)
    expected = simulate("llama-3-8b", "w4a16-g128", "h100-sxm", Scenario.decode(1, 1024, 1)).phase("decode")
    assert data["phases"]["decode"]["time_per_output_token_s"] == pytest.approx(expected["time_per_output_token_s"], rel=1e-12)
    assert data["fits"] is True
    assert set(data) >= {"model", "accelerator", "policy", "phases", "memory", "peak_memory_bytes", "fits"}


def test_both_phases_and_ops(capsys):
    status, output, _ = run(capsys, "simulate", "--model", "smollm2-135m", "--accelerator", "a100-sxm4-80gb",
                            "--phase", "both", "--context", "64", "--generated", "4", "--ops")
    assert status == 0
    assert "prefill+decode" in output
    assert "layers.*.self_attn.attention" in output


def test_model_that_does_not_fit_fails_with_numbers(capsys):
    status, output, error = run(capsys, "simulate", "--model", "llama-2-70b", "--accelerator", "a100-sxm4-80gb")
    assert status == 2
    assert output == ""
    assert error.count("\n") == 1
    assert "does not fit" in error
    assert "hbm holds 85.899 GB" in error
    assert "--allow-overflow" in error


def test_allow_overflow_reports_and_warns(capsys):
    status, output, error = run(capsys, "simulate", "--model", "llama-2-70b", "--accelerator", "a100-sxm4-80gb",
                                "--allow-overflow", "--json")
    assert status == 0
    assert json.loads(output)["fits"] is False
    assert "warning: model 'llama-2-70b'" in error


def test_unsupported_format_fails_or_emulates(capsys):
    status, _, error = run(capsys, "simulate", "--model", "smollm2-135m", "--accelerator", "h100-sxm", "--policy", "w4a4")
    assert status == 2
    assert "--emulate-unsupported" in error
    status, output, _ = run(capsys, "simulate", "--model", "smollm2-135m", "--accelerator", "h100-sxm", "--policy", "w4a4",
                            "--emulate-unsupported", "--json")
    assert status == 0
    assert json.loads(output)["phases"]["decode"]["latency_s"] > 0


@pytest.mark.parametrize("flag, value, known", [("--model", "llama-9", "llama-3-8b"), ("--accelerator", "h200", "h100-sxm")])
def test_unknown_names_list_known_ones(capsys, flag, value, known):
    argv = {"--model": "smollm2-135m", "--accelerator": "h100-sxm"}
    argv[flag] = value
    status, _, error = run(capsys, "simulate", "--model", argv["--model"], "--accelerator", argv["--accelerator"])
    assert status == 2
    assert known in error


def test_bad_batch_is_named(capsys):
    status, _, error = run(capsys, "simulate", "--model", "smollm2-135m", "--accelerator", "h100-sxm", "--batch", "0")
    assert status == 2
    assert "--batch=0" in error


def test_help_states_units(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    output = capsys.readouterr().out
    assert "TOKENS" in output
    assert "in tokens" in output
    assert "SI units" in output
