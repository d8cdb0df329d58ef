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
