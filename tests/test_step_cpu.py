"""benchmarks/step_cpu.py (issue 12, acceptance point 3): its --quick run checks the logic of
the step-vs-matmul-ceiling benchmark at tiny sizes; the measurement itself is a manual run."""

import importlib
import json

import pytest


@pytest.fixture(scope="module")
def bench():
    """benchmarks.step_cpu (benchmarks/ is a directory of the repository, not a package)."""
    return importlib.import_module("benchmarks.step_cpu")


def test_quick_run_writes_json_and_percentages_are_achieved_over_the_ceiling(
    bench, tmp_path, capsys
):
    out = tmp_path / "step.json"
    # One thread: tiny ops on a busy 2-core machine are thread hand-offs (see benchmarks/gpu.py).
    code = bench.main(["--quick", "--models", "grid_cnn", "--threads", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == result
    assert code == 0 and not bench.has_error(result), json.dumps(result, indent=1)
    assert result["quick"] and result["warning"].startswith("not a measurement")
    assert result["machine"]["torch_threads"] == 1

    mm = result["matmul"]
    best = max(mm["sizes"].values(), key=lambda r: r["gflops_per_s"])
    assert mm["ceiling_gflops_per_s"] == best["gflops_per_s"] > 0 and mm["ceiling_n"] == best["n"]
    for n, row in mm["sizes"].items():
        assert row["gflops_per_s"] == pytest.approx(2 * int(n) ** 3 / row["median_s"] / 1e9)
    ceiling = mm["ceiling_gflops_per_s"]

    (batch, row), *_ = result["step"]["grid_cnn"].items()
    assert row["views_per_step"] == 2 * int(batch) == 64
    assert row["gflop_per_step"] > 0
    assert sum(row["flops_by_op"].values()) == pytest.approx(row["gflop_per_step"])
    # The quickstart's own config, channels_last as train.memory_format auto decides.
    assert "textures_v2, sas_digits, grid_cnn widths [32, 64, 128, 128]" in row["recipe"]
    assert "head mlp (preset sas), nt_xent, adam" in row["recipe"] and "-> fp32" in row["recipe"]
    assert f"memory_format auto -> channels_last {row['channels_last']}" in row["recipe"]
    for part in ("model", "fwd_bwd", "epoch"):
        r = row[part]
        seconds = r["step_s"] if part == "epoch" else r["median_s"]
        assert r["gflops_per_s"] == pytest.approx(row["gflop_per_step"] / seconds)
        assert r["pct_matmul"] == pytest.approx(100 * r["gflops_per_s"] / ceiling)
        assert r["images_per_s"] > 0 and "others_cpu" in r and "load_avg_1m" in r
    mf = row["memory_format"]
    for layout in ("channels_last", "contiguous"):
        assert mf[layout]["pct_matmul"] == pytest.approx(100 * mf[layout]["gflops_per_s"] / ceiling)
    ratio = mf["channels_last"]["images_per_s"] / mf["contiguous"]["images_per_s"]
    assert mf["channels_last_speedup"] == pytest.approx(ratio)
    assert mf["auto_picks"] == ("channels_last" if row["channels_last"] else "contiguous")

    # Batch 512 was not run: the acceptance rows say so rather than judging the tiny batch.
    targets = {a["model"]: a for a in result["acceptance"]}
    assert targets["grid_cnn"]["target_pct"] == 55 and targets["resnet18"]["target_pct"] == 85
    assert all(a["pct_matmul"] is None and a["met"] is None for a in targets.values())


def test_acceptance_judges_the_model_part_at_batch_512(bench):
    step = {"grid_cnn": {"512": {"model": {"pct_matmul": 60.0}}, "256": {}}}
    step["resnet18"] = {"512": {"model": {"pct_matmul": 80.0}}}
    rows = {a["model"]: a for a in bench.acceptance(step)}
    assert rows["grid_cnn"]["met"] is True and rows["resnet18"]["met"] is False
    rows = {a["model"]: a for a in bench.acceptance({"grid_cnn": {"512": {"error": "x"}}})}
    assert rows["grid_cnn"]["met"] is None


def test_unknown_model_is_refused(bench):
    with pytest.raises(SystemExit, match="unknown"):
        bench.main(["--quick", "--models", "vgg"])


def test_the_op_breakdown_splits_a_step_into_conv_forward_backward_and_the_rest(tmp_path, capsys):
    """benchmarks/step_ops.py --quick: every part timed and counted, the shares add to 1."""
    step_ops = importlib.import_module("benchmarks.step_ops")
    out = tmp_path / "ops.json"
    result = step_ops.main(["--quick", "--threads", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == result == json.loads(capsys.readouterr().out)
    for name, row in result["models"].items():
        forward, backward = row["conv_forward"], row["conv_backward"]
        assert forward["s_per_step"] > 0 and backward["s_per_step"] > 0, name
        # backward of a convolution: input and weight gradients, twice the forward's FLOPs
        # (the first layer's input needs no gradient, hence a little less)
        assert 1.5 < backward["gflop_per_step"] / forward["gflop_per_step"] <= 2.0, name
        shares = forward["share"] + backward["share"] + row["other"]["share"]
        assert shares == pytest.approx(1.0), name


@pytest.mark.slow  # torch.compile of a step: ~40 s on 2 cores even at tiny sizes
def test_the_compiled_step_is_timed_beside_the_eager_one_and_computes_the_same(tmp_path, capsys):
    """benchmarks/step_compile.py --quick: both steps and the ceiling timed in every round, the
    medians are the rounds' medians, and both compute the same gradients."""
    step_compile = importlib.import_module("benchmarks.step_compile")
    out = tmp_path / "compile.json"
    result = step_compile.main(["--quick", "--threads", "1", "--rounds", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == result == json.loads(capsys.readouterr().out)
    assert len(result["rounds"]) == 2 and result["compile_s"] > 0
    for key, median in result["median"].items():
        assert median == pytest.approx(sum(r[key] for r in result["rounds"]) / 2), key
    for row in result["rounds"]:
        for name in ("eager", "compiled"):
            rate = row[f"{name}_gflops_per_s"]
            assert row[f"{name}_pct_matmul"] == pytest.approx(
                100 * rate / row["ceiling_gflops_per_s"]
            )
    assert result["compiled_over_eager"] == pytest.approx(
        result["median"]["compiled_gflops_per_s"] / result["median"]["eager_gflops_per_s"]
    )
    assert result["grad_max_rel_diff"] < 1e-3  # fp32, the same parameters: reordered sums only
