"""LabelSpace: the one rule from logits to labels and mask colours, shared by validation, evaluation and infer."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from flexunet.config import config_from_dict
from flexunet.evaluate import at_original_size
from flexunet.predict import Predictor, WholeImage, forward_probs
from flexunet.labels import BINARY_OVERLAY_COLOUR, LabelSpace
from flexunet.train.step import StepSettings, validate


def space_of(num_classes: int, **sections: dict) -> LabelSpace:
    return LabelSpace.from_config(config_from_dict({"model": {"num_classes": num_classes}, **sections}))


class FixedLogits(nn.Module):
    """A 'model' that answers every batch with the same logits."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.logits.expand(len(x), -1, -1, -1)


# Binary: a logit exactly at the 0.5 threshold (0), one that sigmoid rounds to 0.5 in float32 (1e-8), one exactly
# at logit(0.8), and plain ones. Multi-class: ties between classes (the first wins), clear winners.
BINARY_LOGITS = [[[[-3.0, 0.0, 1e-8, math.log(4.0), 1.0, 3.0]]]]
MULTI_LOGITS = [[[[1.0, 0.0, 0.0, 3.0, 0.0, 2.0]], [[1.0, 2.0, 0.0, 0.0, 0.0, 2.0]], [[0.0, 2.0, 5.0, 0.0, 0.0, 2.0]]]]


@pytest.mark.parametrize("num_classes, logits, infer", [(1, BINARY_LOGITS, {}), (1, BINARY_LOGITS, {"threshold": 0.8}),
                                                        (1, BINARY_LOGITS, {"threshold": 0.2}),
                                                        (3, MULTI_LOGITS, {})])
def test_validation_and_evaluation_give_the_same_labels(num_classes: int, logits: list, infer: dict) -> None:
    space = space_of(num_classes, infer=infer)
    model = FixedLogits(torch.tensor(logits)).eval()
    x = torch.zeros(1, 3, 1, 6)
    probs = forward_probs(model, x, space)  # what evaluation runs
    predictor = Predictor(model, space, WholeImage(6, 1), torch.device("cpu"))
    [(evaluated, _)] = at_original_size([np.zeros((1, 6), np.uint8)], probs, predictor)
    assert set(evaluated.unique().tolist()) == set(range(space.num_labels))  # every class present: Dice defined
    # validation scores its own labels against these: Dice 1 for every class only when the labels agree everywhere
    loader = [(torch.zeros(1, 3, 1, 6, dtype=torch.uint8), evaluated)]
    out = validate(model, lambda lg, y: lg.sum() * 0, loader, space, StepSettings(torch.device("cpu"), None, None, False), [])
    assert [out[f"dice_{k}"] for k in range(1, space.num_labels)] == [1.0] * (space.num_labels - 1)


def test_from_config_reads_the_config_once() -> None:
    space = space_of(3, mask={"class_names": ["bg", "a", "b"], "ignore_index": 255,
                              "rgb_map": {(0, 0, 0): 0, (0, 0, 255): 2, (255, 0, 0): 1}},
                     infer={"threshold": 0.7}, segmentation={"colorize": True})
    assert space == LabelSpace(3, ("bg", "a", "b"), ((0, 0, 0), (255, 0, 0), (0, 0, 255)), 0.7, 255, True)
    binary = space_of(1, segmentation={"black": "blue", "white": "yellow"})
    assert binary.colours == ((0, 0, 255), (255, 255, 0)) and binary.names == ("background", "class_1")
    assert binary.threshold == 0.5 and binary.ignore_index is None and not binary.colorize


def test_binary_and_num_labels() -> None:
    assert space_of(1).binary and space_of(1).num_labels == 2
    assert not space_of(2).binary and space_of(2).num_labels == 2
    assert not space_of(4).binary and space_of(4).num_labels == 4


def test_probabilities_sigmoid_or_softmax() -> None:
    logits = torch.tensor([[[[0.0, 2.0]]]])
    assert torch.allclose(space_of(1).probabilities(logits), torch.sigmoid(logits))
    multi = torch.tensor([[[[0.0]], [[math.log(3.0)]]]])
    assert torch.allclose(space_of(2).probabilities(multi), torch.tensor([[[[0.25]], [[0.75]]]]))


def test_labels_threshold_strictly_above_and_first_of_equals() -> None:
    binary = space_of(1, infer={"threshold": 0.25})
    probs = np.array([[[0.2, 0.25, 0.26]]], np.float32)
    assert binary.labels(probs).tolist() == [[0, 0, 1]] and binary.labels(probs).dtype == np.uint8
    batch = torch.from_numpy(probs)[None]
    assert binary.labels(batch).tolist() == [[[0, 0, 1]]] and binary.labels(batch).dtype == torch.int64
    multi = space_of(3).labels(np.array([[[0.4, 0.2]], [[0.4, 0.3]], [[0.2, 0.5]]]))
    assert multi.tolist() == [[0, 2]]


def test_mask_pixels_grey_or_colours() -> None:
    labels = np.array([[0, 1]], np.uint8)
    assert space_of(1).mask_pixels(labels).tolist() == [[0, 255]]
    assert space_of(1, segmentation={"colorize": True, "white": "red"}).mask_pixels(labels).tolist() == [
        [[0, 0, 0], [255, 0, 0]]]
    multi = space_of(3, mask={"rgb_map": {(0, 0, 0): 0, (0, 255, 0): 1, (0, 0, 255): 2}, "ignore_index": 255})
    assert multi.mask_pixels(np.array([[2, 255]], np.uint8)).tolist() == [[[0, 0, 255], [255, 255, 255]]]


def test_overlay_colours() -> None:
    assert space_of(1).overlay_colours().tolist() == [[0, 0, 0], list(BINARY_OVERLAY_COLOUR)]
    assert space_of(1, segmentation={"white": "red"}).overlay_colours().tolist() == [[0, 0, 0], [255, 0, 0]]
    multi = space_of(2, mask={"rgb_map": {(0, 0, 0): 0, (200, 200, 200): 1}})
    assert multi.overlay_colours().tolist() == [[0, 0, 0], [200, 200, 200]]  # multi-class: grey stays grey
