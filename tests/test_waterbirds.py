"""The Waterbirds loader on small generated files in the public format (metadata.csv plus JPEGs
in class folders): what it reads, and that malformed inputs are refused naming file and column."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headsweep import TrialConfig, pretrain
from headsweep import metrics as M
from headsweep.config import DataConfig
from headsweep.data import DATASETS, STATS, TARGETS, groups_of, load_dataset, targets_of
from headsweep.data.waterbirds import FOLDER, METADATA

CLASSES = ("001.Black_footed_Albatross", "014.Indigo_Bunting")
HEADER = ["img_id", "img_filename", "y", "place", "split", "place_filename"]


def rows(n_per_split: int = 4) -> list[dict[str, object]]:
    """Every (y, place) group in every split: waterbirds (y 1) are albatrosses."""
    out: list[dict[str, object]] = []
    for split in (0, 1, 2):
        for i in range(n_per_split):
            y, place = i % 2, (i // 2) % 2
            name = f"{CLASSES[1 - y]}/{CLASSES[1 - y].split('.')[1]}_{split}{i:02d}_18.jpg"
            out.append(
                {
                    "img_id": len(out) + 1,
                    "img_filename": name,
                    "y": y,
                    "place": place,
                    "split": split,
                    "place_filename": f"/b/bamboo_forest/{i:08d}.jpg",
                }
            )
    return out


def write(folder: Path, table: list[dict[str, object]], header: list[str] = HEADER) -> Path:
    """metadata.csv and one JPEG per row (a colour that encodes y and place, odd sizes)."""
    folder.mkdir(parents=True, exist_ok=True)
    for row in table:
        path = folder / str(row["img_filename"])
        path.parent.mkdir(parents=True, exist_ok=True)
        # str(): malformed tables hold text or out-of-range values here
        colour = (200 * (str(row["y"]) == "1"), 200 * (str(row["place"]) == "1"), 90)
        Image.new("RGB", (47, 39), colour).save(path, "JPEG")
    with (folder / METADATA).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)
    return folder


def config(root: Path, **extra) -> DataConfig:
    return DataConfig(
        **{"name": "waterbirds", "root": str(root), "n_train": 0, "n_test": 0, **extra}
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write(tmp_path / FOLDER, rows())


def test_reads_the_public_format(folder: Path):
    data = load_dataset(config(folder))
    assert data.classes == {"y": 2, "place": 2} and data.group_by == ("y", "place")
    assert data.train.inputs.shape == (4, 3, 32, 32) and data.train.inputs.dtype == torch.uint8
    assert len(data.test) == 4  # split 2; the val rows (split 1) are not used
    assert data.train.labels["y"].tolist() == [0, 1, 0, 1]
    assert data.test.labels["place"].tolist() == [0, 0, 1, 1]
    # The colour written for (y, place) survives JPEG and resizing (within compression error).
    red = data.test.inputs[:, 0].float().mean((1, 2))
    assert torch.allclose(red, 200.0 * data.test.labels["y"], atol=6)
    assert data.train.overlay is None


def test_root_may_be_the_parent_folder_sizes_and_subsets(folder: Path):
    data = load_dataset(config(folder.parent, image_size=16, n_train=3, n_test=2))
    assert data.train.inputs.shape == (3, 3, 16, 16) and len(data.test) == 2


def test_registered_with_targets_groups_and_statistics(folder: Path):
    assert "waterbirds" in DATASETS and TARGETS["waterbirds"] == ("y", "place")
    assert len(STATS["waterbirds"]) == 2
    cfg = TrialConfig.from_dict({"data": {"name": "waterbirds", "root": str(folder)}})
    assert targets_of(cfg.data) == ["y", "place"] and groups_of(cfg.data) == ("y", "place")
    with pytest.raises(ValueError, match=r"data\.image_size"):
        TrialConfig.from_dict({"data": {"name": "waterbirds", "image_size": 2}})


@pytest.mark.parametrize("download", [False, True])
def test_a_missing_folder_says_where_to_get_it(tmp_path: Path, download: bool):
    with pytest.raises(FileNotFoundError, match="group_DRO") as error:
        load_dataset(config(tmp_path / "nowhere", download=download))
    assert METADATA in str(error.value)
    if download:
        assert "data.download cannot fetch it" in str(error.value)


def malformed(tmp_path: Path, edit) -> Path:
    table, header = rows(), list(HEADER)
    edit(table, header)
    return write(tmp_path / "wb", table, header)


def _drop_column(table, header):
    header.remove("y")


def _text_label(table, header):
    table[2]["y"] = "waterbird"


def _unknown_split(table, header):
    table[5]["split"] = 3


def _label_out_of_range(table, header):
    table[0]["place"] = 2


CASES = {
    "missing column": (_drop_column, r"missing column 'y'"),
    "non-integer y": (_text_label, r"line 4: column 'y' must be an integer, got 'waterbird'"),
    "unknown split": (_unknown_split, r"line 7: column 'split' has unknown value 3"),
    "place out of range": (_label_out_of_range, r"line 2: column 'place' has unknown value 2"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_metadata_is_refused_naming_file_and_column(tmp_path: Path, case: str):
    edit, message = CASES[case]
    root = malformed(tmp_path, edit)
    with pytest.raises(ValueError, match=message) as error:
        load_dataset(config(root))
    assert str(root / METADATA) in str(error.value)


def test_a_missing_image_is_refused_naming_file_column_and_image(folder: Path):
    missing = folder / str(rows()[1]["img_filename"])
    missing.unlink()
    with pytest.raises(ValueError, match="column 'img_filename'") as error:
        load_dataset(config(folder))
    assert str(folder / METADATA) in str(error.value) and str(missing) in str(error.value)
    assert "line 3" in str(error.value)


def test_an_unreadable_image_is_refused_naming_it(folder: Path):
    broken = folder / str(rows()[0]["img_filename"])
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot read the image") as error:
        load_dataset(config(folder))
    assert str(broken) in str(error.value)


def test_a_tiny_trial_on_waterbirds_scores_worst_group(tmp_path: Path):
    table = [dict(r, img_filename=f"x{k}/{r['img_filename']}") for k in range(4) for r in rows()]
    root = write(tmp_path / "wb", table)
    result = pretrain(
        {
            "data": {"name": "waterbirds", "root": str(root), "n_train": 0, "n_test": 0},
            "aug": {"recipe": "sas_digits"},
            "train": {"epochs": 1, "batch_size": 8},
            "model": {"widths": [8, 16], "head": {"hidden": 16, "out": 8}},
            "probe": {"steps": 20, "online_n": 8},
        }
    )
    assert {(r["target"], r["n_groups"]) for r in result.groups} == {("y", 4), ("place", 4)}
    assert np.isfinite(result.metrics[M.worst_group("y", "pre", "dfr")])
