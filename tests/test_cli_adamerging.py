"""``osrm adamerge`` end to end on the tiny fixtures, and its one-line refusals."""

from __future__ import annotations

import json

import pytest

from tests.cli_support import one_error_line, run


def test_adamerge_prints_coefficients_and_scores_writes_json_and_exports(capsys, tmp_path, tiny_base_dir, tiny_adapters):
    out = tmp_path / "ada.json"
    code, stdout, err = run(capsys, "adamerge", *tiny_adapters, "--base", tiny_base_dir, "--device", "cpu", "--mode", "layer",
                            "--steps", "3", "--lr", "0.05", "--eval-every", "2", "--json", out, "--export-kind", "adapter",
                            "--out", tmp_path / "exported")
    assert code == 0, err
    assert "AdaMerging (layer-wise): 3 steps" in stdout
    assert "block 0" in stdout and "block 1" in stdout  # the coefficient table, per transformer block
    assert "validation" in stdout and "test" in stdout and "average" in stdout
    document = json.loads(out.read_text())
    assert document["mode"] == "layer" and document["tasks"] == ["colour", "animal"]
    assert len(document["coefficients"]) == 2 and len(document["coefficients"][0]) == len(document["layers"]) == 4
    assert all(0 <= v <= 1 for row in document["coefficients"] for v in row)
    assert [h["step"] for h in document["history"]] == [1, 2, 3] and document["history"][1]["validation"] is not None
    assert set(document["scores"]) == {"validation", "test"} and set(document["scores"]["test"]) == {"colour", "animal"}
    assert sorted(p.name for p in (tmp_path / "exported").iterdir()) == ["animal", "colour"]
    assert (tmp_path / "exported" / "colour" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("extra, expected", [
    (["--pool", "test"], "pool 'test'"),
    (["--lr", "0"], "learning rate"),
    (["--mode", "layer", "--export-kind", "recipe", "--out", "x.json"], "recipe"),
    (["--export-kind", "full"], "needs --out"),
])
def test_adamerge_bad_input_is_one_line(capsys, tmp_path, tiny_base_dir, tiny_adapters, extra, expected):
    code, _, err = run(capsys, "adamerge", *tiny_adapters, "--base", tiny_base_dir, "--device", "cpu", "--steps", "1",
                            *[str(tmp_path / e) if e.endswith(".json") else e for e in extra])
    assert code == 2
    line = one_error_line(err)
    assert line.startswith("osrm: error:") and expected in line
