"""Object metrics worked out by hand: matching at IoU >= 0.5, detection F1, PQ, count error, grouped intervals."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flexunet.metrics.objects import (
    ObjectCounts,
    bootstrap_object_metric,
    count_error,
    count_ratio,
    match_objects,
    object_counts,
    object_f1,
    object_precision,
    object_recall,
    panoptic_quality,
    segmentation_quality,
)


def test_matching_by_iou_hand_computed() -> None:
    truth = np.zeros((10, 20), np.int32)
    pred = np.zeros((10, 20), np.int32)
    truth[0:4, 0:4] = 1  # 16 px
    pred[0:4, 0:3] = 5  # 12 px inside it: IoU 12/16 = 0.75 -> match
    truth[0:4, 10:14] = 2  # 16 px
    pred[0:4, 12:16] = 6  # overlap 8, union 24: IoU 1/3 -> no match
    pred[8:10, 0:2] = 7  # nothing there: false positive
    truth[8:10, 18:20] = 3  # missed
    tp, fp, fn, iou = match_objects(truth, pred)
    assert (tp, fp, fn) == (1, 2, 2)
    assert iou == pytest.approx(0.75)


def test_iou_exactly_half_matches() -> None:
    truth = np.zeros((4, 4), np.int32)
    pred = np.zeros((4, 4), np.int32)
    truth[0:2, 0:2] = 1  # 4 px
    pred[0:2, 0:4] = 1  # 8 px, overlap 4: IoU 0.5
    assert match_objects(truth, pred)[:3] == (1, 0, 0)


def test_f1_pq_sq_and_counts_from_counts() -> None:
    c = ObjectCounts(tp=np.array([2.0]), fp=np.array([1.0]), fn=np.array([1.0]), iou=np.array([1.5]))
    assert object_precision(c)[0] == pytest.approx(2 / 3)
    assert object_recall(c)[0] == pytest.approx(2 / 3)
    assert object_f1(c)[0] == pytest.approx(4 / 6)
    assert segmentation_quality(c)[0] == pytest.approx(0.75)
    assert panoptic_quality(c)[0] == pytest.approx(1.5 / 3)  # SQ 0.75 x RQ 2/3
    assert count_error(c)[0] == 0 and count_ratio(c)[0] == 1
    none = ObjectCounts(*(np.zeros(1) for _ in range(4)))
    assert np.isnan(object_f1(none)[0]) and np.isnan(panoptic_quality(none)[0])


def test_object_counts_per_class_on_label_maps() -> None:
    truth = np.zeros((12, 12), np.int64)
    truth[0:3, 0:3] = 1
    truth[6:9, 6:9] = 1
    truth[0:3, 8:11] = 2
    pred = np.zeros_like(truth)
    pred[0:3, 0:3] = 1  # exact
    pred[0:3, 8:11] = 1  # class 1 where truth is class 2: a false positive for 1, a miss for 2
    pred[11, 11] = 2  # speck
    c = object_counts(truth, pred, 3)
    assert c.tp.tolist() == [1, 0] and c.fp.tolist() == [1, 1] and c.fn.tolist() == [1, 1]
    assert count_error(c).tolist() == [0, 0]
    # instances: one predicted map with two touching squares counted as two objects
    truth2 = np.zeros((4, 8), np.int64)
    truth2[0:4, 0:8] = 1
    inst = np.zeros((4, 8), np.int32)
    inst[:, :4], inst[:, 4:] = 1, 2
    assert object_counts(truth2, truth2, 2, truth_instances=inst).true.tolist() == [2]
    halves = object_counts(truth2, truth2, 2, pred_instances=inst)  # each half has IoU 16/32 = 0.5 with the whole
    assert (halves.tp.tolist(), halves.fp.tolist(), halves.fn.tolist()) == ([1], [1], [0])


def test_ten_thousand_objects_are_matched_quickly() -> None:
    import time

    truth = np.zeros((400, 400), np.int64)
    truth[::4, ::4] = 1
    truth[1::4, 1::4] = 1
    truth[::4, 1::4] = 1
    truth[1::4, ::4] = 1
    start = time.perf_counter()
    c = object_counts(truth, truth, 2)
    assert c.tp.tolist() == [10_000] and c.fp.tolist() == [0]
    assert time.perf_counter() - start < 30


def test_bootstrap_resamples_groups_together() -> None:
    # 4 images in 2 groups: a group that is all hits and one that is all misses
    hit = ObjectCounts(np.array([1.0]), np.array([0.0]), np.array([0.0]), np.array([1.0]))
    miss = ObjectCounts(np.array([0.0]), np.array([0.0]), np.array([1.0]), np.array([0.0]))
    per_image = ObjectCounts.stack([hit, hit, miss, miss])
    grouped = bootstrap_object_metric(per_image, object_recall, 200, 0, groups=torch.tensor([0, 0, 1, 1]))
    single = bootstrap_object_metric(per_image, object_recall, 200, 0)
    # with groups a resample holds 0, 2 or 4 hits of 4 images: only 0, 0.5, 1 occur
    assert grouped.low[0] == 0 and grouped.high[0] == 1
    assert single.high[0] - single.low[0] <= grouped.high[0] - grouped.low[0]
