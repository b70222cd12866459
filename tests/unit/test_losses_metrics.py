"""Seed formulas checked against values worked out by hand on tiny tensors, and the honest metrics' edge cases."""
from __future__ import annotations

import math

import pytest
import torch

from flexunet.config import config_from_dict
from flexunet.errors import ConfigError
from flexunet.losses import LOSSES, build_loss
from flexunet.metrics import SEED_METRICS, confusion_counts, dice, iou, precision, recall

# One 2x2 binary image: target [[1,0],[0,0]], probabilities [[.8,.2],[.1,.5]].
TARGET = torch.tensor([[[1, 0], [0, 0]]])
PROBS = torch.tensor([[[[0.8, 0.2], [0.1, 0.5]]]])
LOGITS = torch.logit(PROBS)
BCE = -(math.log(0.8) + math.log(0.8) + math.log(0.9) + math.log(0.5)) / 4  # 0.311197


def test_seed_dice_and_iou_by_hand() -> None:
    t = TARGET.unsqueeze(1).float()
    assert SEED_METRICS["dice_coef"](t, PROBS).item() == pytest.approx(2.6 / 3.6)
    assert SEED_METRICS["iou_coef"](t, PROBS).item() == pytest.approx(0.8 / 1.8, rel=1e-5)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dice_loss", 1 - 2.6 / 3.6),
        ("iou_loss", 1 - 0.8 / 1.8),
        ("bce_iou_loss", (BCE + 1 - 0.8 / 1.8) / 2),
        ("bce_dice_loss", (BCE + 1 - 2.6 / 3.6) / 2),
        ("binary_crossentropy", BCE),
    ],
)
def test_seed_losses_by_hand(name: str, expected: float) -> None:
    assert LOSSES[name](LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-4)


def test_dice_coef_multiclass_counts_background() -> None:
    # 1 sample, 2 pixels, 2 classes: one-hot [[1,0],[0,1]], softmax [[.9,.1],[.3,.7]] -> (2*1.6+1)/(2+2+1) = 0.84
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)
    p = torch.tensor([[0.9, 0.1], [0.3, 0.7]]).T.reshape(1, 2, 1, 2)
    assert SEED_METRICS["dice_coef_multiclass"](t, p).item() == pytest.approx(0.84)


def test_dice_coef_multiclass_is_inflated_by_background() -> None:
    # a model that predicts background everywhere on an image with a small object still scores ~0.99
    labels = torch.zeros(1, 64, 64, dtype=torch.long)
    labels[0, :4, :4] = 1
    t = torch.nn.functional.one_hot(labels, 2).permute(0, 3, 1, 2).float()
    p = torch.zeros_like(t)
    p[:, 0] = 1.0
    assert SEED_METRICS["dice_coef_multiclass"](t, p).item() > 0.99
    counts = confusion_counts(p.argmax(1), labels, 2)
    assert dice(counts)[0, 1].item() == 0.0  # the honest foreground Dice


def test_binary_accuracy_and_sensitivity() -> None:
    t = TARGET.unsqueeze(1).float()
    p = torch.tensor([[[[0.8, 0.2], [0.1, 0.6]]]])
    assert SEED_METRICS["binary_accuracy"](t, p).item() == pytest.approx(0.75)
    assert SEED_METRICS["sensitivity"](t, p).item() == pytest.approx(1.0, rel=1e-5)
    assert SEED_METRICS["specificity"](t, p).item() == pytest.approx(2 / 3, rel=1e-5)


def test_counts_metrics_by_hand_and_nan_for_absent_class() -> None:
    pred = torch.tensor([[[1, 1], [0, 0]]])
    target = torch.tensor([[[1, 0], [0, 0]]])
    c = confusion_counts(pred, target, 3)
    assert c.tp[0].tolist() == [2, 1, 0] and c.fp[0].tolist() == [0, 1, 0] and c.fn[0].tolist() == [1, 0, 0]
    assert dice(c)[0, 1].item() == pytest.approx(2 / 3)
    assert iou(c)[0, 1].item() == pytest.approx(0.5)
    assert precision(c)[0, 1].item() == pytest.approx(0.5) and recall(c)[0, 1].item() == 1.0
    assert math.isnan(dice(c)[0, 2].item())  # class 2 in neither: NaN, not a free 1.0


def test_every_loss_has_gradients_for_binary_and_multiclass() -> None:
    torch.manual_seed(0)
    for channels, labels in ((1, torch.randint(0, 2, (2, 16, 16))), (3, torch.randint(0, 3, (2, 16, 16)))):
        for name, fn in LOSSES.items():
            logits = torch.randn(2, channels, 16, 16, requires_grad=True)
            loss = fn(logits, labels)
            loss.backward()
            assert torch.isfinite(loss) and logits.grad is not None and logits.grad.abs().sum() > 0, name


def test_unknown_loss_names_the_key() -> None:
    cfg = config_from_dict({"model": {"loss": "bce_iou_loss"}})
    section = cfg.model.model_copy(update={"loss": "bce_iou"})
    with pytest.raises(ConfigError, match=r"\[model\] loss = 'bce_iou': unknown loss; did you mean 'bce_iou_loss'"):
        build_loss(section)


def test_seed_dice_losses_are_batch_global_so_halves_do_not_average_to_the_whole() -> None:
    """Why torchrun takes the loss on the gathered batch (flexunet.train.distributed.gather_batch): the seed's Dice
    sums over the whole batch, so the mean of two half-batch losses is not the batch's loss; a pixel mean is."""
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]], [[[-2.0, -2.0], [-1.0, -0.5]]]])  # (2, 1, 2, 2)
    labels = torch.tensor([[[1, 0], [1, 0]], [[0, 0], [0, 1]]])
    for name, batch_global in (("bce_dice_loss", True), ("dice_loss", True), ("binary_crossentropy", False)):
        whole = LOSSES[name](logits, labels)
        halves = (LOSSES[name](logits[:1], labels[:1]) + LOSSES[name](logits[1:], labels[1:])) / 2
        assert (abs(float(whole - halves)) > 1e-3) is batch_global, name
