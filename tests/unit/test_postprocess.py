"""Postprocessing on hand-built masks: specks removed, holes filled, the largest kept, per class; touching discs
separated by watershed."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label as connected_components

from flexunet.config.load import config_from_dict
from flexunet.postprocess import (
    ClassPostprocess,
    clean_mask,
    instance_labels,
    postprocess_labels,
    separate_instances,
    settings_from_config,
)


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_specks_below_min_object_px_are_removed_and_larger_objects_kept() -> None:
    mask = np.zeros((20, 20), bool)
    mask[0, 0] = True  # a stray corner pixel
    mask[5:8, 5:8] = True  # 9 px
    mask[12:16, 12:16] = True  # 16 px
    out = clean_mask(mask, ClassPostprocess(min_object_px=10))
    assert not out[0, 0] and not out[5:8, 5:8].any()
    assert out[12:16, 12:16].all() and out.sum() == 16


def test_min_object_fraction_is_of_the_image() -> None:
    mask = np.zeros((10, 10), bool)
    mask[0:2, 0:2] = True  # 4 px = 4% of the image
    mask[5:9, 5:9] = True  # 16 px
    out = clean_mask(mask, ClassPostprocess(min_object_fraction=0.05))
    assert out.sum() == 16
    assert clean_mask(mask, ClassPostprocess(min_object_fraction=0.04)).sum() == 20


def test_holes_are_filled_and_the_largest_object_kept() -> None:
    mask = np.zeros((20, 20), bool)
    mask[2:10, 2:10] = True
    mask[5, 5] = False  # a hole
    mask[14:17, 14:17] = True  # a smaller object
    filled = clean_mask(mask, ClassPostprocess(fill_holes=True))
    assert filled[5, 5] and filled.sum() == 64 + 9
    largest = clean_mask(mask, ClassPostprocess(keep_largest=True))
    assert not largest[14:17, 14:17].any() and largest.sum() == 63


def test_postprocess_is_per_class_and_fill_claims_only_background() -> None:
    labels = np.zeros((20, 20), np.int64)
    labels[2:12, 2:12] = 2  # cytoplasm
    labels[5:8, 5:8] = 1  # nucleus inside it: not a hole of the cytoplasm
    labels[15, 15] = 1  # speck of class 1
    labels[18, 18] = 2  # speck of class 2, kept: class 2 has no min size
    labels[3, 10] = 0  # a background hole inside the cytoplasm
    out = postprocess_labels(labels, None, {1: ClassPostprocess(min_object_px=2), 2: ClassPostprocess(fill_holes=True)})
    assert out[15, 15] == 0 and out[18, 18] == 2
    assert (out[5:8, 5:8] == 1).all()
    assert out[3, 10] == 2
    # nothing else changed
    changed = out != labels
    assert changed.sum() == 2


def test_removed_pixels_take_the_next_most_probable_class() -> None:
    labels = np.zeros((6, 6), np.int64)
    labels[2, 2] = 1
    probs = np.zeros((3, 6, 6), np.float32)
    probs[0] = 0.5
    probs[1, 2, 2], probs[2, 2, 2], probs[0, 2, 2] = 0.5, 0.4, 0.1
    out = postprocess_labels(labels, probs, {1: ClassPostprocess(min_object_px=2)})
    assert out[2, 2] == 2


def test_pixels_relabelled_into_a_class_already_filtered_are_filtered_too() -> None:
    """Issue 27: with min_object_px = 1000, objects of 111-124 px were left. Class 1 is cleaned first; class 2's
    specks then went to class 1 (their next most probable label) and stayed as class-1 specks."""
    labels = np.zeros((20, 20), np.int64)
    labels[2:4, 2:5] = 2  # a 6-px speck of class 2, class 1 its second choice
    labels[10:18, 10:18] = 2  # 64 px of class 2: kept
    labels[10:18, 1:9] = 1  # 64 px of class 1: kept
    labels[0, 19] = 1  # a class-1 speck, class 2 its second choice: it must not end as a class-2 speck either
    probs = np.full((3, 20, 20), 0.1, np.float32)
    probs[0] = 0.8
    probs[:, 2:4, 2:5] = np.array([0.2, 0.3, 0.5], np.float32)[:, None, None]
    probs[:, 0, 19] = (0.2, 0.5, 0.3)
    every = ClassPostprocess(min_object_px=10)
    out = postprocess_labels(labels, probs, {1: every, 2: every})
    for cls in (1, 2):  # no object under the threshold in any filtered class
        areas = np.bincount(connected_components(out == cls, connectivity=2).ravel())[1:]
        assert areas.min(initial=10) >= 10, (cls, areas)
    assert (out[2:4, 2:5] == 0).all() and out[0, 19] == 0
    assert (out[10:18, 10:18] == 2).all() and (out[10:18, 1:9] == 1).all()
    # a speck that joins a large object of its second choice stays, as before
    labels = np.zeros((20, 20), np.int64)
    labels[4, 1:9] = 2
    labels[5:9, 1:9] = 1
    probs[:, 4, 1:9] = np.array([0.2, 0.3, 0.5], np.float32)[:, None]
    out = postprocess_labels(labels, probs, {1: every, 2: every})
    assert (out[4:9, 1:9] == 1).all() and (out == 1).sum() == 40
    # background given settings as well (a notebook may pass them): still ends with a label map
    out = postprocess_labels(labels, probs, {0: every, 1: every, 2: every})
    assert out.shape == labels.shape


def test_off_changes_nothing() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (16, 16))
    assert np.array_equal(postprocess_labels(labels, None, {}), labels)
    assert np.array_equal(postprocess_labels(labels, None, {1: ClassPostprocess(), 2: ClassPostprocess()}), labels)


def test_empty_masks_pass_through() -> None:
    empty = np.zeros((8, 8), np.int64)
    every = ClassPostprocess(min_object_px=3, fill_holes=True, keep_largest=True, separate="watershed")
    assert not postprocess_labels(empty, None, {1: every}).any()
    assert not separate_instances(empty.astype(bool)).any()
    instances, classes = instance_labels(empty, {1: every}, 2)
    assert not instances.any() and classes == []


def test_two_touching_discs_are_two_objects_one_disc_one() -> None:
    shape = (60, 80)
    two = _disc(shape, (30, 25), 12) | _disc(shape, (30, 49), 12)  # centres 24 apart: the discs touch
    assert int(np.max(separate_instances(two, min_distance=5))) == 2
    from skimage.measure import label

    assert label(two).max() == 1  # without separation they are one component
    one = _disc(shape, (30, 40), 14)
    assert int(np.max(separate_instances(one, min_distance=5))) == 1


def test_counts_exact_on_50_random_layouts_of_touching_discs() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        shape = (96, 96)
        mask = np.zeros(shape, bool)
        discs: list[tuple[float, float, float]] = []
        for _ in range(rng.integers(1, 7)):
            for _ in range(100):  # rejection sampling: no overlap, but touching allowed
                r = float(rng.uniform(7, 12))
                c = (float(rng.uniform(r, shape[0] - r)), float(rng.uniform(r, shape[1] - r)))
                if discs and rng.random() < 0.6:  # put it next to an earlier disc, touching
                    y, x, r0 = discs[rng.integers(len(discs))]
                    angle = rng.uniform(0, 2 * np.pi)
                    c = (y + (r0 + r) * np.sin(angle), x + (r0 + r) * np.cos(angle))
                    if not (r <= c[0] <= shape[0] - r and r <= c[1] <= shape[1] - r):
                        continue
                if all(np.hypot(c[0] - y, c[1] - x) >= r + r0 - 0.5 for y, x, r0 in discs):
                    discs.append((c[0], c[1], r))
                    mask |= _disc(shape, c, r)
                    break
        instances = separate_instances(mask, min_distance=5)
        assert int(instances.max()) == len(discs), discs


def test_instance_labels_number_objects_across_classes() -> None:
    labels = np.zeros((20, 20), np.int64)
    labels[1:4, 1:4] = 1
    labels[10:13, 10:13] = 1
    labels[15:18, 1:4] = 2
    instances, classes = instance_labels(labels, {}, 3)
    assert classes == [1, 1, 2]
    assert set(np.unique(instances)) == {0, 1, 2, 3}
    assert (instances[15:18, 1:4] == 3).all()


def test_settings_from_config_per_class_and_auto_choice() -> None:
    cfg = config_from_dict({"model": {"num_classes": 3}, "mask": {"class_names": ["bg", "nucleus", "cytoplasm"]},
                            "postprocess": {"min_object_px": {"nucleus": 30}, "fill_holes": True,
                                            "separate": {"nucleus": "watershed"}}})
    settings = settings_from_config(cfg)
    assert settings[1] == ClassPostprocess(min_object_px=30, fill_holes=True, separate="watershed")
    assert settings[2] == ClassPostprocess(fill_holes=True)
    chosen = settings_from_config(cfg, {"nucleus": {"min_object_px": 5, "fill_holes": False, "keep_largest": True}})
    assert chosen[1] == ClassPostprocess(min_object_px=5, keep_largest=True, separate="watershed")
    assert settings_from_config(config_from_dict({})) == {}


@pytest.mark.parametrize("count", [10_000])
def test_ten_thousand_objects_in_seconds(count: int) -> None:
    import time

    side = 400  # 100 x 100 grid of 2x2 objects 4 px apart
    labels = np.zeros((side, side), np.int64)
    labels[::4, ::4] = 1
    labels[1::4, ::4] = 1
    labels[::4, 1::4] = 1
    labels[1::4, 1::4] = 1
    start = time.perf_counter()
    out = postprocess_labels(labels, None, {1: ClassPostprocess(min_object_px=2, fill_holes=True)})
    instances, classes = instance_labels(out, {1: ClassPostprocess(separate="watershed", min_distance=1)}, 2)
    assert len(classes) == count
    assert time.perf_counter() - start < 30


def test_auto_choice_removes_specks_only_when_validation_dice_rises() -> None:
    from flexunet.postprocess import candidate_settings, choose_postprocess

    truths, preds = [], []
    for i in range(4):
        truth = np.zeros((32, 32), np.int64)
        truth[8:20, 8:20] = 1  # one 144 px cell
        pred = truth.copy()
        pred[0, i] = 1  # and a stray corner pixel the model adds
        truths.append(truth)
        preds.append(pred)
    probs = [np.stack([1.0 - (p == 1), (p == 1) * 1.0]).astype(np.float32) for p in preds]
    chosen = choose_postprocess(preds, probs, truths, ["background", "cell"])["cell"]
    assert chosen["dice_after"] == 1.0 and chosen["dice_before"] < 1.0
    assert chosen["choice"]["min_object_px"] > 1 and not chosen["choice"]["fill_holes"]  # simplest that works
    # clean predictions: nothing beats off, so off is kept
    clean = choose_postprocess(truths, probs, truths, ["background", "cell"])["cell"]
    assert clean["choice"] == {"min_object_px": 0, "min_object_fraction": 0.0, "fill_holes": False,
                               "keep_largest": False}
    assert candidate_settings(np.array([100.0, 200.0]))[0] == ClassPostprocess()


def test_auto_keeps_off_when_the_gain_is_negligible() -> None:
    """One stray pixel beside a 90,000 px cell: removing it lifts Dice by ~6e-6, below AUTO_MIN_GAIN: off is kept."""
    from flexunet.postprocess import AUTO_MIN_GAIN, choose_postprocess

    truth = np.zeros((320, 320), np.int64)
    truth[10:310, 10:310] = 1
    pred = truth.copy()
    pred[0, 0] = 1
    probs = [np.stack([1.0 - (pred == 1), (pred == 1) * 1.0]).astype(np.float32)]
    chosen = choose_postprocess([pred], probs, [truth], ["background", "cell"])["cell"]
    assert 0 < 1.0 - chosen["dice_before"] < AUTO_MIN_GAIN
    assert chosen["choice"]["min_object_px"] == 0 and chosen["dice_after"] == chosen["dice_before"]


def test_separate_on_a_class_with_no_objects_is_a_note() -> None:
    from flexunet.postprocess import separation_notes

    settings = {1: ClassPostprocess(separate="watershed"), 2: ClassPostprocess(separate="watershed")}
    notes = separation_notes(settings, ["background", "nucleus", "cytoplasm"], {"nucleus": 3, "cytoplasm": 0})
    assert notes == ["[postprocess] separate = \"watershed\" for class 'cytoplasm': no cytoplasm object was "
                     "predicted, so there was nothing to separate"]


def test_watershed_distance_beyond_the_image_is_the_image_side() -> None:
    """min_distance = 1e9 built a (2e9 + 1)**2 footprint (MemoryError); past the image's side it changes nothing."""
    mask = _disc((30, 40), (15, 12), 8) | _disc((30, 40), (15, 27), 8)
    far = separate_instances(mask, min_distance=10**9)
    assert np.array_equal(far, separate_instances(mask, min_distance=40))
    assert far.max() == 1  # one seed for the whole component at any distance past the image


def test_threshold_choice_finds_where_the_truth_was_cut_and_ties_keep_the_configured_one() -> None:
    from flexunet.postprocess import THRESHOLDS, choose_threshold

    rng = np.random.default_rng(0)
    probs = [rng.random((1, 32, 32)).astype(np.float32) for _ in range(4)]
    low = [(p[0] > 0.3).astype(np.uint8) for p in probs]  # a model whose positives start at 0.3, not 0.5
    chosen = choose_threshold(probs, low, current=0.5)
    assert chosen["value"] == 0.3 and chosen["dice_after"] == 1.0 and chosen["dice_before"] < 0.9
    assert chosen["tried"] == len(THRESHOLDS)
    exact = [(p[0] > 0.5).astype(np.uint8) for p in probs]  # already right: 0.5 stays (no strictly better value)
    assert choose_threshold(probs, exact, current=0.5)["value"] == 0.5
    # the configured threshold is kept when nothing beats it, even off the grid
    assert choose_threshold(probs, [(p[0] > 0.42).astype(np.uint8) for p in probs], current=0.42)["value"] == 0.42
