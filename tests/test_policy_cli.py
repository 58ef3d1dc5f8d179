"""`hwsim policies list` and `hwsim policies show`."""

from __future__ import annotations

from hwsim.cli import main
from hwsim.policy import PRESETS, Policy, preset


def run(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_list_prints_every_preset_with_bits(capsys):
    status, output, error = run(capsys, "policies", "list")

    assert status == 0
    assert error == ""
    for name in PRESETS:
        assert name in output
    assert "bits per parameter over the linear layers of llama-2-7b" in output
    mxfp4 = next(line for line in output.splitlines() if line.strip().startswith("mxfp4 "))
    assert "4.2500" in mxfp4
    assert "OCP Microscaling Formats (MX) Specification v1.0, 2023" in mxfp4


def test_show_preset_prints_rules_bits_and_source(capsys):
    status, output, _ = run(capsys, "policies", "show", "w4a16-g128")

    assert status == 0
    assert "policy: w4a16-g128" in output
    assert "source: Frantar et al., GPTQ, ICLR 2023" in output
    assert "accuracy path approximates:" in output
    assert "int4_g128" in output
    # Llama-2-7B linear layers: 4 + 16/128 bits, every weight shape a multiple of 128.
    assert "linear weights: 4.125000 bits per parameter" in output
    assert "scale bits: 0.125000 per parameter" in output


def test_show_kv_bits_at_context(capsys):
    status, output, _ = run(capsys, "policies", "show", "kivi-kv2", "--context", "4096")

    assert status == 0
    # (3968 * 3 + 128 * 16) / 4096
    assert "keys 3.406250, values 3.406250 bits per element" in output


def test_show_yaml_file(tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    path.write_text(preset("atom-w4a4").to_yaml())

    status, output, _ = run(capsys, "policies", "show", str(path), "--model", "smollm2-135m")
    assert status == 0
    assert "policy: atom-w4a4" in output
    assert "storage on smollm2-135m" in output

    status, output, _ = run(capsys, "policies", "show", str(path), "--yaml")
    assert status == 0
    assert Policy.from_yaml(output) == preset("atom-w4a4")


def test_show_unknown_name_is_one_line_error(capsys):
    status, output, error = run(capsys, "policies", "show", "atom")

    assert status == 2
    assert output == ""
    assert error.startswith("hwsim policies: error: unknown policy preset 'atom'")
    assert len(error.strip().splitlines()) == 1


def test_show_invalid_yaml_policy(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nrules:\n  - name: w\n    roles: [weight]\n    quantizer: {format: int9_g128}\n")

    status, _, error = run(capsys, "policies", "show", str(path))

    assert status == 2
    assert "rule 0 ('w'), field quantizer.format" in error
