"""Waterbirds (Sagawa et al. 2020, the spurious-correlation benchmark [X] evaluates on) read
from its public folder format.

Layout: `data.root` is the dataset folder itself, or its parent holding `FOLDER`:

    metadata.csv    columns img_id (optional), img_filename, y, place, split
    <img_filename>  JPEG images in class folders, e.g.
                    001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg

`y`: 0 landbird, 1 waterbird; `place`: 0 land, 1 water background; `split`: 0 train,
1 val, 2 test. The train split is 95% correlated (waterbirds mostly on water); val and test
pair birds and backgrounds independently.

Here: train = split 0 (pretraining and probe fitting, biased as in [X]), test = split 2; the
val split (1) is not used (the DFR refit of headsweep.groups draws its group-balanced subset from
the train split). Targets `y` and `place` (2 classes each), groups = (y, place). Images are
decoded with PIL, converted to RGB and resized whole (no crop, so the background stays in the
frame) to `data.image_size` x `data.image_size` with Pillow's antialiased bilinear filter:
inputs uint8 (N, 3, S, S). `data.n_train` / `data.n_test` keep the first rows of each split in
metadata order (0 = all).

Nothing is downloaded (the dataset is a 1.7 GB tarball with no checksum-stable mirror this code
may fetch): a missing folder raises FileNotFoundError saying where to get it. Malformed metadata
(a missing column, a non-integer or out-of-range value, an image file that does not exist) is
refused with a ValueError naming the file, the line and the column.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from headsweep.config import DataConfig
from headsweep.data.base import Dataset, Split

FOLDER = "waterbird_complete95_forest2water2"  # what the public tarball extracts to
METADATA = "metadata.csv"
COLUMNS = ("img_filename", "y", "place", "split")  # img_id is optional
ALLOWED = {"y": (0, 1), "place": (0, 1), "split": (0, 1, 2)}
SPLIT_NAMES = {0: "train", 1: "val", 2: "test"}
TRAIN, TEST = 0, 2
SOURCE = (
    "get waterbird_complete95_forest2water2.tar.gz (linked from the README of "
    "https://github.com/kohpangwei/group_DRO, served at "
    "https://nlp.stanford.edu/data/dro/waterbird_complete95_forest2water2.tar.gz) and extract "
    "it under data.root"
)
# ImageNet's channel statistics: what Waterbirds pipelines (group_DRO, DFR) normalise with.
WATERBIRDS_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class Entry:
    """One row of metadata.csv: the image path (resolved) and its integer fields."""

    path: Path
    y: int
    place: int
    split: int
    line: int  # 1-based line in metadata.csv (the header is line 1)


def find_folder(cfg: DataConfig) -> Path:
    """The folder holding metadata.csv: data.root itself or data.root/FOLDER."""
    root = Path(cfg.root).expanduser()
    for candidate in (root, root / FOLDER):
        if (candidate / METADATA).is_file():
            return candidate
    how = (
        "data.download cannot fetch it (no download is implemented for Waterbirds): "
        if cfg.download
        else ""
    )
    raise FileNotFoundError(
        f"Waterbirds: no {METADATA} in {root} or {root / FOLDER} (data.root = {cfg.root!r}); "
        f"{how}{SOURCE}"
    )


def _integer(text: str, column: str, path: Path, line: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(
            f"{path} line {line}: column {column!r} must be an integer, got {text!r}"
        ) from None
    allowed = ALLOWED[column]
    if value not in allowed:
        names = (
            ", ".join(f"{k} {v}" for k, v in SPLIT_NAMES.items())
            if column == "split"
            else ", ".join(map(str, allowed))
        )
        raise ValueError(
            f"{path} line {line}: column {column!r} has unknown value {value} (allowed: {names})"
        )
    return value


def read_metadata(folder: Path) -> list[Entry]:
    """Every row of folder/metadata.csv, checked (columns present, integers in range, image
    path given); image existence is checked for the rows that are loaded (`load_split`)."""
    path = folder / METADATA
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ValueError(
                f"{path}: missing column {missing[0]!r} (found columns: {', '.join(header)}; "
                f"needed: {', '.join(COLUMNS)})"
            )
        entries = []
        for line, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "") for k, v in raw.items()}
            name = row["img_filename"].strip()
            if not name:
                raise ValueError(f"{path} line {line}: column 'img_filename' is empty")
            entries.append(
                Entry(
                    folder / name,
                    _integer(row["y"], "y", path, line),
                    _integer(row["place"], "place", path, line),
                    _integer(row["split"], "split", path, line),
                    line,
                )
            )
    return entries


def _image(entry: Entry, size: int, metadata: Path) -> np.ndarray:
    """One image as uint8 (3, size, size)."""
    from PIL import Image  # local: only this dataset decodes JPEGs

    if not entry.path.is_file():
        raise ValueError(
            f"{metadata} line {entry.line}: column 'img_filename' names {entry.path}, "
            "which does not exist"
        )
    try:
        with Image.open(entry.path) as image:
            rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except OSError as exc:
        raise ValueError(f"{entry.path}: cannot read the image ({exc})") from None
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def load_split(entries: list[Entry], split: int, n: int, size: int, metadata: Path) -> Split:
    """The rows of one split (the first n; 0 = all) as a Split with targets y and place."""
    rows = [e for e in entries if e.split == split]
    rows = rows[:n] if n else rows
    if not rows:
        raise ValueError(f"{metadata}: no rows with split = {split} ({SPLIT_NAMES[split]})")
    images = torch.from_numpy(np.stack([_image(e, size, metadata) for e in rows]))
    labels: dict[str, Tensor] = {
        "y": torch.tensor([e.y for e in rows], dtype=torch.int64),
        "place": torch.tensor([e.place for e in rows], dtype=torch.int64),
    }
    return Split(images, labels)


def waterbirds(cfg: DataConfig) -> Dataset:
    """Waterbirds: train = split 0, test = split 2; targets y and place; groups (y, place)."""
    folder = find_folder(cfg)
    entries = read_metadata(folder)
    metadata = folder / METADATA
    train = load_split(entries, TRAIN, cfg.n_train, cfg.image_size, metadata)
    test = load_split(entries, TEST, cfg.n_test, cfg.image_size, metadata)
    return Dataset("waterbirds", "image", train, test, {"y": 2, "place": 2}, ("y", "place"))
