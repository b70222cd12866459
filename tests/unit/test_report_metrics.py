"""HD95 per image and bootstrap intervals: values worked out by hand, empty cases explicit; copies of one source
resampled together."""
from __future__ import annotations

import math

import numpy as np
import torch

from flexunet.config import config_from_dict
from flexunet.data.pairing import Pair
from flexunet.evaluate.groups import UNIT_GROUPS, UNIT_IMAGES, image_resampling, resampling_for
from flexunet.data.split_file import read_split_groups, write_split_file
from flexunet.metrics import Counts, dice
from flexunet.metrics.bootstrap import bootstrap_counts_metric, bootstrap_mean, resample_weights
from flexunet.metrics.distance import hd95_per_image, mean_hd95, one_sided_as


def square(size: int, top: int, left: int, side: int, label: int = 1) -> torch.Tensor:
    out = torch.zeros(size, size, dtype=torch.long)
    out[top:top + side, left:left + side] = label
    return out


def test_hd95_of_a_square_shifted_by_two_pixels_is_two() -> None:
    pred = square(16, 4, 6, 5).unsqueeze(0)
    target = square(16, 4, 4, 5).unsqueeze(0)
    assert hd95_per_image(pred, target, 2).tolist() == [[2.0]]
    assert hd95_per_image(target, target, 2).tolist() == [[0.0]]


def test_hd95_empty_cases_are_nan_and_inf() -> None:
    empty, blob = torch.zeros(1, 8, 8, dtype=torch.long), square(8, 2, 2, 3).unsqueeze(0)
    assert math.isnan(hd95_per_image(empty, empty, 2).item())  # class in neither mask: nothing to measure
    assert math.isinf(hd95_per_image(empty, blob, 2).item())  # missed object
    assert math.isinf(hd95_per_image(blob, empty, 2).item())  # false alarm


def test_hd95_per_class_leaves_background_out() -> None:
    target = square(12, 1, 1, 4, label=1) + square(12, 6, 6, 4, label=2)
    pred = square(12, 1, 2, 4, label=1)  # class 1 shifted by 1, class 2 missed
    hd = hd95_per_image(pred.unsqueeze(0), target.unsqueeze(0), 3)
    assert hd.shape == (1, 2) and hd[0, 0].item() == 1.0 and math.isinf(hd[0, 1].item())


def test_mean_hd95_counts_one_sided_as_the_worst_and_skips_nan() -> None:
    values = torch.tensor([[1.0], [math.inf], [math.nan]], dtype=torch.float64)
    assert mean_hd95(values, worst=10.0).tolist() == [5.5]


def test_resample_weights_draw_n_images_each_time() -> None:
    weights = resample_weights(7, resamples=50, seed=3)
    assert weights.shape == (50, 7) and (weights.sum(1) == 7).all()
    assert torch.equal(weights, resample_weights(7, resamples=50, seed=3))  # seeded: same report every run


def test_group_column_of_a_split_file(tmp_path) -> None:
    path = write_split_file(tmp_path / "split.csv", [("a1", "a", "test"), ("a2", "a", "test"), ("b1", "b", "train")])
    assert dict(read_split_groups(path)) == {"a1": "a", "a2": "a", "b1": "b"}
    (tmp_path / "by_hand.csv").write_text("stem,split\na1,test\n")
    assert dict(read_split_groups(tmp_path / "by_hand.csv")) == {}  # no group column: the prefixes decide


def test_bootstrap_of_identical_images_has_zero_width() -> None:
    per_image = Counts(torch.full((10, 1), 8.0), torch.full((10, 1), 2.0), torch.full((10, 1), 2.0))
    ci = bootstrap_counts_metric(per_image, dice, resamples=200)
    assert abs(ci.low.item() - 0.8) < 1e-12 and abs(ci.high.item() - 0.8) < 1e-12


def test_bootstrap_interval_brackets_the_pooled_value_and_narrows_with_more_images() -> None:
    tp = torch.tensor([[9.0], [1.0], [5.0], [7.0], [3.0], [8.0]])
    fp, fn = 10 - tp, torch.full_like(tp, 2.0)
    small = Counts(tp, fp, fn)
    pooled = dice(small.total()).item()
    ci = bootstrap_counts_metric(small, dice, resamples=2000, seed=1)
    assert ci.low.item() < pooled < ci.high.item()
    large = Counts(tp.repeat(20, 1), fp.repeat(20, 1), fn.repeat(20, 1))
    wide = ci.high - ci.low
    assert (bootstrap_counts_metric(large, dice, resamples=2000, seed=1).high
            - bootstrap_counts_metric(large, dice, resamples=2000, seed=1).low).item() < wide.item() / 2


def test_bootstrap_of_a_class_never_present_is_nan() -> None:
    zeros = torch.zeros(5, 1)
    ci = bootstrap_counts_metric(Counts(zeros, zeros, zeros), dice, resamples=100)
    assert math.isnan(ci.low.item()) and math.isnan(ci.high.item())
    values = torch.tensor([[1.0], [3.0], [math.inf], [math.nan]], dtype=torch.float64)
    ci = bootstrap_mean(one_sided_as(values, torch.full((4, 1), 5.0, dtype=torch.float64)), resamples=500)
    assert 1.0 <= ci.low.item() <= ci.high.item() <= 5.0
    assert math.isnan(bootstrap_mean(torch.full((3, 1), math.nan)).low.item())


# 20 source cells x 13 copies (flips, rotations): copies score almost alike, cells differ (Dice about 0.45 to 0.95)
SOURCES, COPIES = 20, 13


def grouped_counts(seed: int = 0) -> tuple[Counts, torch.Tensor]:
    """(260, 1) per-image counts where each source's 13 copies are near-identical, and each image's group index."""
    rng = np.random.default_rng(seed)
    quality = rng.uniform(0.3, 0.9, SOURCES).repeat(COPIES) + rng.normal(0, 0.005, SOURCES * COPIES)
    tp = 1000 * quality
    fp = fn = 1000 * (1 - quality)
    as_column = (lambda a: torch.tensor(a, dtype=torch.float64)[:, None])
    return Counts(as_column(tp), as_column(fp), as_column(fn)), torch.arange(SOURCES).repeat_interleave(COPIES)


def direct_group_interval(values_per_group: np.ndarray, statistic, resamples: int = 4000, seed: int = 7) -> tuple[float, float]:
    """The group bootstrap written out plainly: draw 20 sources with replacement, apply `statistic` to their copies."""
    rng = np.random.default_rng(seed)
    draws = [statistic(values_per_group[rng.integers(0, SOURCES, SOURCES)]) for _ in range(resamples)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def test_group_bootstrap_of_pooled_dice_is_as_wide_as_resampling_the_sources() -> None:
    counts, groups = grouped_counts()
    per_source = np.stack([c.numpy()[:, 0].reshape(SOURCES, COPIES) for c in (counts.tp, counts.fp, counts.fn)], -1)
    pooled_dice = (lambda g: 2 * g[..., 0].sum() / (2 * g[..., 0].sum() + g[..., 1].sum() + g[..., 2].sum()))
    low, high = direct_group_interval(per_source, pooled_dice)
    grouped = bootstrap_counts_metric(counts, dice, resamples=4000, groups=groups)
    images = bootstrap_counts_metric(counts, dice, resamples=4000)
    width = grouped.high.item() - grouped.low.item()
    assert abs(grouped.low.item() - low) < 0.01 and abs(grouped.high.item() - high) < 0.01
    assert abs(width - (high - low)) < 0.1 * (high - low)
    assert width > 2.5 * (images.high.item() - images.low.item())  # about sqrt(13) = 3.6 times


def test_group_bootstrap_of_mean_per_image_dice_is_as_wide_as_resampling_the_sources() -> None:
    counts, groups = grouped_counts(seed=1)
    per_image = dice(counts)  # (260, 1)
    low, high = direct_group_interval(per_image.numpy()[:, 0].reshape(SOURCES, COPIES), np.mean)
    grouped = bootstrap_mean(per_image, resamples=4000, groups=groups)
    images = bootstrap_mean(per_image, resamples=4000)
    assert abs(grouped.low.item() - low) < 0.01 and abs(grouped.high.item() - high) < 0.01
    assert grouped.high.item() - grouped.low.item() > 2.5 * (images.high.item() - images.low.item())


def test_group_weights_count_every_copy_of_a_drawn_source() -> None:
    groups = torch.tensor([0, 0, 0, 1, 2, 2])
    weights = resample_weights(6, resamples=200, seed=2, groups=groups)
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 4] == weights[:, 5]).all()
    assert (weights[:, [0, 3, 4]].sum(1) == 3).all()  # three sources drawn each time


def test_sources_come_from_the_split_file_else_from_the_prefixes_flexunet_split_strips() -> None:
    stems = [f"{prefix}cell{i}" for i in range(4) for prefix in ("", "flipped_", "mirrored_", "rotated_90_")]
    by_prefix = image_resampling(stems)
    assert (by_prefix.unit, by_prefix.count) == (UNIT_GROUPS, 4) and by_prefix.groups.tolist()[:5] == [0, 0, 0, 0, 1]
    listed = image_resampling(stems, {s: f"g{i % 2}" for i, s in enumerate(stems)}, "split.csv")
    assert (listed.unit, listed.count) == (UNIT_GROUPS, 2) and "split.csv" in listed.source
    partial = image_resampling(stems, {stems[0]: "g0"})  # the list does not name every image: prefixes decide
    assert partial.count == 4
    alone = image_resampling([f"cell{i}" for i in range(5)])  # every group one image: resample images
    assert (alone.unit, alone.count, alone.groups) == (UNIT_IMAGES, 5, None)


def test_renamed_copies_are_grouped_by_the_doctor_s_fingerprints(tmp_path) -> None:
    """Flips and rotations saved under unrelated names: the prefixes find nothing, the fingerprints find the sources."""
    import cv2

    rng = np.random.default_rng(0)
    sources = [cv2.GaussianBlur(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), (0, 0), 2) for _ in range(5)]
    copies = [(k, turn(image)) for k, image in enumerate(sources) for turn in (lambda a: a, np.fliplr, np.rot90)]
    order = rng.permutation(len(copies))
    pairs = []
    for n, i in enumerate(order):
        path = tmp_path / f"img_{n:03d}.png"
        cv2.imwrite(str(path), np.ascontiguousarray(copies[i][1]))
        pairs.append(Pair(path, path))
    cfg = config_from_dict({"model": {"image_width": 32, "image_height": 32}})
    found = resampling_for(cfg, "test", pairs)
    assert (found.unit, found.count) == (UNIT_GROUPS, 5) and "fingerprints" in found.source
    truth = [copies[i][0] for i in order]
    assert all((found.groups[a] == found.groups[b]) == (truth[a] == truth[b]) for a in range(15) for b in range(15))
    assert resampling_for(cfg, "test", pairs, fingerprints=False).unit == UNIT_IMAGES
    distinct = resampling_for(cfg, "test", [pairs[list(order).index(3 * k)] for k in range(5)])  # one copy each
    assert (distinct.unit, distinct.count) == (UNIT_IMAGES, 5)


def test_cli_evaluate_line_says_what_the_intervals_resampled(tmp_path, monkeypatch, capsys) -> None:
    """`dice 0.81 [0.75, 0.86]` on the console must say whether 20 cells or 260 of their copies were drawn."""
    import flexunet.evaluate
    from flexunet.evaluate import EvalResult
    from flexunet.evaluate.groups import Resampling
    from tests.conftest import make_config, run_cli

    values = {"dice": 0.81, "dice_ci_low": 0.75, "dice_ci_high": 0.86, "iou": 0.7, "precision": 0.8, "recall": 0.8,
              "hd95": 2.0, "dice_image_mean": 0.8}
    result = EvalResult(0.3, {}, {"nucleus": values}, [], (tmp_path / "metrics.json",),
                        resampling=Resampling(UNIT_GROUPS, 20, "group column of split.csv", None))
    monkeypatch.setattr(flexunet.evaluate, "evaluate_from_config", lambda *args, **kwargs: result)
    assert run_cli(monkeypatch, "evaluate", str(make_config(tmp_path, tmp_path)), "-q", "--no-report") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("nucleus: dice 0.8100 [0.7500, 0.8600]")
    assert lines[1] == "[low, high]: 95% CI over 20 source groups (bootstrap, group column of split.csv)"
