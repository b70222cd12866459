"""Split: augmented copies of one source never cross splits; one seed gives one split; configs can use the list."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from flexunet.config.load import config_from_dict
from flexunet.data.dataset import pairs_for
from flexunet.errors import DataError, OutputError
from flexunet.prepare.split import source_id, split_dataset
from flexunet.data.split_file import read_split_file

PREFIXES = ["", "flipped_", "mirrored_", "rotated_90_", "rotated_330_", "barrdistorted_1004_0.3_0.3_",
            "deformed_alpha_1300_sigmoid_8_"]


def write_augmented(folder: Path, sources: int = 30) -> Path:
    """Every source id with each seed augmentation prefix: tiny 4x4 images and masks."""
    for kind in ("images", "masks"):
        (folder / kind).mkdir(parents=True)
    pixel = np.zeros((4, 4, 3), np.uint8)
    for s in range(sources):
        for prefix in PREFIXES:
            cv2.imwrite(str(folder / "images" / f"{prefix}cell-{s:03d}.png"), pixel)
            cv2.imwrite(str(folder / "masks" / f"{prefix}cell-{s:03d}.png"), pixel)
    return folder


@pytest.mark.parametrize("stem, expected", [
    ("rotated_30_149056410-149056423-003", "149056410-149056423-003"), ("mirrored_rotated_90_abc", "abc"),
    ("barrdistorted_1004_0.3_0.3_51", "51"), ("deformed_alpha_1300_sigmoid_8_40", "40"),
    ("distorted_0.03_rsigma0.5_sigma40_12", "12"), ("A-Koilocytotic_214", "A-Koilocytotic_214"),
])
def test_source_id_strips_seed_prefixes(stem: str, expected: str) -> None:
    assert source_id(stem) == expected


def test_no_group_crosses_splits_and_seed_repeats(tmp_path: Path) -> None:
    data = write_augmented(tmp_path / "data")
    first = split_dataset(data / "images", data / "masks", tmp_path / "a", seed=5)
    again = split_dataset(data / "images", data / "masks", tmp_path / "b", seed=5)
    other = split_dataset(data / "images", data / "masks", tmp_path / "c", seed=6)

    listing = read_split_file(first.split_file)
    split_of_group: dict[str, set[str]] = {}
    for stem, split in listing.items():
        split_of_group.setdefault(source_id(stem), set()).add(split)
    assert all(len(splits) == 1 for splits in split_of_group.values())
    assert len(listing) == 30 * len(PREFIXES)
    assert first.split_file.read_text() == again.split_file.read_text()
    assert first.split_file.read_text() != other.split_file.read_text()
    assert [len(first.pairs[n]) // len(PREFIXES) for n in ("train", "valid", "test")] == [24, 3, 3]


def test_group_by_regex_and_copied_folders(tmp_path: Path) -> None:
    data = write_augmented(tmp_path / "data", sources=10)
    result = split_dataset(data / "images", data / "masks", tmp_path / "out", (0.5, 0.5), group_by=r"cell-(\d+)",
                           seed=1, files="copy")
    train = {source_id(p.name) for p in (tmp_path / "out" / "train" / "images").glob("*.png")}
    valid = {source_id(p.name) for p in (tmp_path / "out" / "valid" / "masks").glob("*.png")}
    assert train and valid and not train & valid
    assert result.groups == {"train": 5, "valid": 5}
    with pytest.raises(DataError, match="already holds split folders"):
        split_dataset(data / "images", data / "masks", tmp_path / "out", (0.5, 0.5), files="copy")
    with pytest.raises(DataError, match="summing to 1"):
        split_dataset(data / "images", data / "masks", tmp_path / "x", (0.5, 0.6))



def test_split_files_into_a_folder_holding_the_inputs_is_refused_before_writing(tmp_path: Path) -> None:
    data = write_augmented(tmp_path / "data", sources=4)
    with pytest.raises(OutputError) as info:
        split_dataset(data / "images", data / "masks", data, (0.5, 0.5), files="copy")
    assert str(info.value) == (f"split --files copy: OUT {data} contains IMAGES_DIR {data / 'images'}: its outputs "
                               "would overwrite or move the inputs; choose another folder")
    assert sorted(p.name for p in data.iterdir()) == ["images", "masks"]
    assert split_dataset(data / "images", data / "masks", data, (0.5, 0.5)).split_file == data / "split.csv"

def test_config_split_file_filters_pairs(tmp_path: Path) -> None:
    data = write_augmented(tmp_path / "data", sources=10)
    result = split_dataset(data / "images", data / "masks", tmp_path / "out", seed=2)
    common = {"images_dir": str(data / "images"), "masks_dir": str(data / "masks"), "split_file": str(result.split_file)}
    cfg = config_from_dict({"train": common, "valid": common, "test": common})
    for name in ("train", "valid", "test"):
        assert [p.stem for p in pairs_for(cfg, name)] == [p.stem for p in result.pairs[name]]


def test_the_groups_of_split_files_link_reach_the_evaluation_intervals(tmp_path: Path) -> None:
    """Split by slide with --files link, the test folder's images carry only cell names; evaluate drew 19 cell groups
    instead of the slides. The split.csv written beside the folders now gives the groups."""
    from flexunet.evaluate.groups import resampling_for

    data = tmp_path / "data"
    for kind in ("images", "masks"):
        (data / kind).mkdir(parents=True)
    for slide in range(6):
        for cell in range(3):
            for kind in ("images", "masks"):
                cv2.imwrite(str(data / kind / f"slide{slide}-cell{slide * 3 + cell}.png"), np.zeros((8, 8), np.uint8))
    split_dataset(data / "images", data / "masks", tmp_path / "out", (0.5, 0.5), group_by=r"^(slide\d+)-",
                  seed=1, files="link")
    cfg = config_from_dict({"valid": {"images_dir": str(tmp_path / "out" / "valid" / "images"),
                                      "masks_dir": str(tmp_path / "out" / "valid" / "masks")}})
    found = resampling_for(cfg, "valid", pairs_for(cfg, "valid"))
    assert found.unit != "images" and found.count == 3 and "split.csv" in found.source  # 3 slides, not 9 cells
