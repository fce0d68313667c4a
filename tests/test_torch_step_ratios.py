"""bench/torch_step_ratios.py, run small: its workloads are the adapter's and its numbers add up."""

import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import torch_step_ratios  # noqa: E402
import torch_workloads  # noqa: E402


def test_workloads_compute_what_they_name():
    """Ours samples by convolving and trains by solving; the baseline is nn.Conv2d (checked by value)."""
    shape = (3, 2, 4, 5)
    torch.manual_seed(1)
    layer, baseline = torch_workloads.inverse_conv(2, "cpu"), torch_workloads.conv2d(2, "cpu")
    z, g = torch_workloads.inputs(shape, "cpu")
    w = layer.effective_weight().detach()
    import invconv_cupy.torch as ict

    torch.testing.assert_close(torch_workloads.sample_pass(layer)(z), ict.conv(z, w))
    with torch.no_grad():
        torch.testing.assert_close(torch_workloads.sample_pass(baseline)(z), baseline(z))

    x = torch.randn(shape, dtype=torch.float32, requires_grad=True)
    torch_workloads.training_step(layer)(x, g)
    # d<g, solve(x, W)>/dx = T^-T g (the log-determinant does not depend on x): <T v, x.grad> = <v, g>
    v = torch.randn(shape)
    torch.testing.assert_close((ict.conv(v, w) * x.grad).sum(), (v * g).sum(), rtol=1e-4, atol=1e-4)
    assert layer.weight.grad is not None and layer.log_scale.grad is not None


def test_a_small_run_writes_consistent_ratios(tmp_path, capsys):
    out = tmp_path / "ratios.json"
    assert torch_step_ratios.main(["--shapes", "2x3x4x4", "--rounds", "3", "--block-seconds", "0.002",
                                   "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["environment"]["torch_threads"] == torch.get_num_threads()
    rows = results["results"]
    assert [(row["shape"], row["workload"]) for row in rows] == [([2, 3, 4, 4], "sample"), ([2, 3, 4, 4], "train")]
    for row in rows:
        assert row["ours_us"] > 0 and row["baseline_us"] > 0
        low, high = row["ratio_range"]
        assert 0 < low <= row["ratio"] <= high and math.isfinite(high)
        assert min(row["calls_per_block"]) >= 3
    printed = capsys.readouterr().out
    assert "2x3x4x4 sample: ours" in printed and "2x3x4x4 train: ours" in printed


@pytest.mark.parametrize("argv", [["--shapes", "2x3x4"], ["--shapes", "2xAx4x4"], ["--rounds", "0"],
                                  ["--shapes", "0x3x4x4"], ["--block-seconds", "0"]])
def test_bad_arguments_exit_2_with_one_message(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        torch_step_ratios.main(argv)
    assert exit.value.code == 2
    assert "error:" in capsys.readouterr().err
