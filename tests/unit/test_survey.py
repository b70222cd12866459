"""`flexunet init`'s data fingerprint: mask kinds, suffixes, sizes, source groups, the input size rule, and the
budget planner's choice and refusals."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from flexunet.data.masks import MaskDecoding, decode_mask
from flexunet.errors import DataError
from flexunet.init_project import input_size
from flexunet.prepare.survey import Objects, mask_kind, source_groups, survey
from flexunet.train.plan import Candidate, Timing, choose


def _write(folder: Path, name: str, array: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    assert cv2.imwrite(str(path), array)
    return path


def _instances(size: int = 64, count: int = 12, dtype=np.uint16, first_id: int = 1) -> np.ndarray:
    mask = np.zeros((size, size), dtype)
    for k in range(count):
        y, x = divmod(k, 4)
        mask[4 + y * 14: 12 + y * 14, 4 + x * 14: 12 + x * 14] = first_id + k
    return mask


def test_mask_kinds_are_told_apart(tmp_path: Path) -> None:
    grey = np.zeros((32, 32), np.uint8)
    grey[8:20, 8:20] = 255
    assert mask_kind([(tmp_path / "a.png", grey)])[0] == "binary"
    assert mask_kind([(tmp_path / "a.png", (grey > 0).astype(np.uint8))])[0] == "binary"
    index = np.zeros((32, 32), np.uint8)
    index[:10], index[20:] = 1, 2
    kind, _, classes, why = mask_kind([(tmp_path / "a.png", index)])
    assert (kind, classes) == ("index", 3) and "0..2" in why
    palette = np.zeros((32, 32, 3), np.uint8)
    palette[:14] = (255, 0, 0)  # the more frequent colour gets the lower index
    palette[20:] = (0, 255, 0)
    kind, rgb_map, classes, why = mask_kind([(tmp_path / "a.png", palette)])
    assert kind == "palette" and classes == 3 and rgb_map == {(0, 0, 0): 0, (255, 0, 0): 1, (0, 255, 0): 2}
    assert "RGB palette with 3 colours -> num_classes 3" in why
    assert mask_kind([(tmp_path / "a.png", _instances(first_id=300))])[0] == "instances"  # 16-bit ids
    assert mask_kind([(tmp_path / "a.png", _instances(dtype=np.uint8))])[0] == "instances"  # 12 one-object ids


def test_photos_in_the_mask_folder_are_refused(tmp_path: Path) -> None:
    photo = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with pytest.raises(DataError, match="these look like photos, not masks"):
        mask_kind([(tmp_path / "m.png", photo)])
    grey_photo = np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)
    with pytest.raises(DataError, match="these look like photos, not masks"):
        mask_kind([(tmp_path / "m.png", grey_photo)])


def test_instance_masks_read_every_id_as_foreground() -> None:
    """16-bit ids below 257 were divided by 257 to level 0: every such object became background."""
    mask = _instances(first_id=1)
    labels, _ = decode_mask(mask, MaskDecoding(num_classes=1, instances=True), "m.png")
    assert labels.sum() == (mask > 0).sum() > 0
    big = mask.copy()
    big[0, 0] = 1000  # a 16-bit mask with one id over 255
    labels, _ = decode_mask(big, MaskDecoding(num_classes=1, instances=True), "m.png")
    assert labels.sum() == (big > 0).sum()


def test_survey_finds_suffix_kind_and_refuses_unpaired_and_mixed(tmp_path: Path) -> None:
    for i in range(4):
        image = np.full((48, 64, 3), 40 + i, np.uint8)
        mask = np.zeros((48, 64), np.uint8)
        mask[10:30, 10:30] = 255
        _write(tmp_path / "ds" / "images", f"case{i}.jpg", image)
        _write(tmp_path / "ds" / "masks", f"case{i}_segmentation.png", mask)
    found = survey(tmp_path / "ds")
    assert found.mask_suffix == "_segmentation" and found.mask_kind == "binary" and found.num_classes == 1
    assert found.typical_size == (64, 48) and len(found.pairs) == 4
    assert found.objects[1].count == 4
    _write(tmp_path / "ds" / "images", "lonely.jpg", np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(DataError, match="lonely.jpg: no mask for this image"):
        survey(tmp_path / "ds")
    (tmp_path / "ds" / "images" / "lonely.jpg").unlink()
    _write(tmp_path / "ds" / "images", "huge.jpg", np.zeros((600, 600, 3), np.uint8))
    _write(tmp_path / "ds" / "masks", "huge_segmentation.png", np.zeros((600, 600), np.uint8))
    with pytest.raises(DataError, match="more than 8x apart"):
        survey(tmp_path / "ds")


def test_copies_under_other_names_share_a_source_group(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for i in range(3):
        image = cv2.GaussianBlur(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), (5, 5), 0)
        mask = np.zeros((64, 64), np.uint8)
        mask[16:40, 16:40] = 255
        _write(tmp_path / "ds" / "images", f"cell{i}.png", image)
        _write(tmp_path / "ds" / "masks", f"cell{i}.png", mask)
        if i == 0:  # a flipped copy under an unrelated name, and one under a seed prefix
            _write(tmp_path / "ds" / "images", "zz_other.png", image[:, ::-1])
            _write(tmp_path / "ds" / "masks", "zz_other.png", mask[:, ::-1])
            _write(tmp_path / "ds" / "images", "flipped_cell0.png", image[::-1])
            _write(tmp_path / "ds" / "masks", "flipped_cell0.png", mask[::-1])
    groups = {Path(k).stem: v for k, v in source_groups(survey(tmp_path / "ds")).items()}
    assert groups["zz_other"] == groups["cell0"] == groups["flipped_cell0"]
    assert len({groups["cell0"], groups["cell1"], groups["cell2"]}) == 3


def test_input_size_keeps_small_originals_and_shrinks_large_ones(tmp_path: Path) -> None:
    def fake(size: tuple[int, int], median: float, small: float):
        from collections import Counter

        from flexunet.prepare.survey import Survey

        return Survey(tmp_path, (), (), {}, "", Counter({size: 3}), 3, "binary", None, 1, ["background", "fg"],
                      (0.9, 0.1), {1: Objects(10, median, small)})

    assert input_size(fake((128, 128), 60, 40))[0] == (128, 128)  # <= 256: kept
    assert input_size(fake((2048, 2048), 800, 500))[0] == (256, 256)  # big objects: 256 is plenty
    assert input_size(fake((2048, 2048), 40, 20))[0] == (512, 512)  # small objects: as large as the cap allows
    assert input_size(fake((3000, 2000), 1000, 600))[0] == (256, 160)  # aspect kept, multiples of 32


def _timing(label: str, train_s: float, needs: int) -> Timing:
    return Timing(Candidate(label, {"model": "flexunet"}, needs), train_s, train_s / 3, 1000)


def test_the_plan_takes_the_largest_network_that_sees_enough_images() -> None:
    small, big = _timing("small", 0.01, 0), _timing("big", 0.1, 3000)
    short = choose([small, big], 200, 4, 2000, 200)
    assert short.timing is small and "under the 3,000 it needs" in short.reasons[1]
    long = choose([small, big], 3600, 4, 2000, 200)
    assert long.timing is big and long.images_seen > 3000
    assert long.epochs >= 10 and long.steps_per_epoch  # an epoch (a validation) every few minutes, not per pass
    assert not long.augment or long.passes > 4
    with pytest.raises(DataError, match=r"too short to train here.*give --budget 1m or more"):
        choose([small, big], 5, 4, 2000, 200)


def test_evaluation_counts_the_true_objects_of_instance_masks(tmp_path: Path) -> None:
    """Two touching nuclei are one connected blob: with [mask] kind = instances they are two true objects."""
    import json

    from flexunet.config import load_config
    from flexunet.evaluate import evaluate_from_config
    from tests.conftest import make_config, save_random_checkpoint, write_disc_pairs

    for split, seed in (("train", 0), ("valid", 1), ("test", 2)):
        folder = write_disc_pairs(tmp_path / "data" / split, 3, seed=seed)
        for mask in (folder / "masks").iterdir():
            ids = np.zeros((32, 32), np.uint16)
            ids[8:16, 4:14], ids[8:16, 14:24] = 5, 300  # touching: one 8-connected blob
            assert cv2.imwrite(str(mask), ids)
    config = make_config(tmp_path, tmp_path / "data", {"mask": {"kind": "instances"}})
    save_random_checkpoint(config)
    evaluate_from_config(load_config(config), device="cpu", quiet=True, report=False)
    per_class = json.loads((tmp_path / "eval" / "metrics.json").read_text())["per_class"]
    assert per_class["class_1"]["true_objects"] == 6  # 2 per test image, not 1


def test_stats_and_the_doctor_recognise_instance_masks(tmp_path: Path) -> None:
    """Read as grey and thresholded, these ids fell to the background and the doctor said nothing."""
    from flexunet.prepare.doctor import doctor
    from flexunet.prepare.stats import dataset_stats, format_stats
    from tests.conftest import write_disc_pairs

    folder = write_disc_pairs(tmp_path / "ds" / "train", 3, size=64)
    ids = _instances(first_id=1)  # ids 1..12, 8x8 squares
    ids[0, 0] = 400  # and one over 255: a 16-bit id mask
    for mask in (folder / "masks").iterdir():
        assert cv2.imwrite(str(mask), ids)
    stats = dataset_stats(tmp_path / "ds")
    assert stats.instances and "instance labels" in format_stats(stats)[0]
    assert stats.splits[0].class_fractions[1] > 0.1  # every object is foreground, ids below 257 too
    assert any('kind = "instances"' in n for n in doctor(tmp_path / "ds").notes)


def test_instance_masks_made_from_the_demo_nuclei_keep_every_nucleus(tmp_path: Path) -> None:
    """The demo's nuclei, each cut into two touching objects with 16-bit ids: init's survey calls the masks instance
    labels, and evaluation counts those objects as the truth (connected blobs would be half as many)."""
    import json

    from skimage.measure import label as connected_components

    from flexunet.config import load_config
    from flexunet.demo import DEMO_RGB_MAP, make_demo_dataset
    from flexunet.evaluate import evaluate_from_config
    from flexunet.prepare.survey import survey
    from tests.conftest import make_config, save_random_checkpoint

    data = make_demo_dataset(tmp_path, 64, (6, 3, 4), seed=5)
    nucleus = next(np.array(c, np.uint8) for c, i in DEMO_RGB_MAP.items() if i == 2)
    expected = 0
    for split in ("train", "valid", "test"):
        for mask in sorted((data / split / "masks").glob("*.png")):
            rgb = cv2.cvtColor(cv2.imread(str(mask)), cv2.COLOR_BGR2RGB)
            blobs = connected_components((rgb == nucleus).all(-1), connectivity=2)
            ids = np.zeros(blobs.shape, np.uint16)
            columns = np.arange(blobs.shape[1])[None, :].repeat(blobs.shape[0], 0)
            for k in range(1, blobs.max() + 1):  # each nucleus two touching objects: ids, not blobs, are counted
                left = columns < columns[blobs == k].mean()
                ids[(blobs == k) & left], ids[(blobs == k) & ~left] = 255 + 2 * k, 256 + 2 * k  # over 255: 16-bit
            if split == "test":
                expected += len(np.unique(ids)) - 1
            assert cv2.imwrite(str(mask), ids)
    assert survey(data).mask_kind == "instances"
    config = make_config(tmp_path, data, {"mask": {"kind": "instances"}})
    save_random_checkpoint(config)
    evaluate_from_config(load_config(config), device="cpu", quiet=True, report=False)
    per_class = json.loads((tmp_path / "eval" / "metrics.json").read_text())["per_class"]
    assert expected > 4 and per_class["class_1"]["true_objects"] == expected
