"""Figures drawn from hand-made tables (no Ray): written, readable PNGs, skipped when the
columns they need are absent."""

import matplotlib.image as mpimg
import pandas as pd

from analysis.figures import weights_figure


def test_weights_figure_for_synthetic_trials(tmp_path):
    rows = []
    for seed, wd in [(0, 0.0), (1, 0.0), (0, 0.01)]:
        row = {"status": "finished", "weight_decay": wd, "seed": seed}
        for k, post in enumerate([4.0, 1.0, 0.25]):
            row[f"synthetic/post_weight/{k}"] = post
            row[f"synthetic/pre_weight/{k}"] = post**0.5
        rows.append(row)
    rows.append({**rows[0], "status": "failed"})
    path = weights_figure(pd.DataFrame(rows), tmp_path, "toy")
    assert path is not None and path.name == "weights_pre_vs_post.png"
    image = mpimg.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 300


def test_weights_figure_skipped_without_weight_columns(tmp_path):
    frame = pd.DataFrame({"status": ["finished"], "probe/digit/pre": [0.5]})
    assert weights_figure(frame, tmp_path, "toy") is None
    assert not list(tmp_path.iterdir())


def test_axis_figure_labels_lines_by_what_varies_within_each_head(tmp_path):
    from analysis.figures import _label_keys, _line_label, axis_figures
    from analysis.tables import HEAD_KEY

    rows = [
        {HEAD_KEY: "mlp", "loss.mi_lambda": lam, "model.head.k": 20} for lam in (0.0, 0.1, 0.5)
    ] + [{HEAD_KEY: "topk_sae", "loss.mi_lambda": 0.0, "model.head.k": k} for k in (10, 40)]
    gaps = pd.DataFrame(rows).assign(
        target="digit", pre_mean=0.4, post_mean=0.2, gap_mean=0.2, pre_std=0.01, post_std=0.01,
        gap_std=0.01,
    )  # fmt: skip
    keys = _label_keys(gaps, [HEAD_KEY, "model.head.k"])
    labels = {_line_label(row, keys(row)) for _, row in gaps.iterrows()}
    assert labels == {"mlp", "topk_sae, k=10", "topk_sae, k=40"}
    settings = [HEAD_KEY, "loss.mi_lambda", "model.head.k"]
    paths = axis_figures(gaps, settings, tmp_path, "toy")
    assert {p.name for p in paths} == {"digit_vs_loss_mi_lambda.png", "digit_vs_model_head_k.png"}
