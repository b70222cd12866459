"""The small-spatial GEMM path of FlexUNet's convolutions equals the direct convolution (forward and gradients)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flexunet.models import flexunet as flexunet_model
from flexunet.models.flexunet import FlexUNet, SameConv2d


@pytest.mark.parametrize(("kernel", "dilation", "size"), [
    ((3, 3), (1, 1), 2), ((3, 3), (1, 1), 4), ((5, 5), (2, 2), 4), ((4, 4), (1, 1), 3), ((3, 5), (2, 1), 2),
    ((7, 7), (3, 3), 1), ((3, 3), (1, 1), (2, 8)),
])
def test_gemm_path_equals_direct_convolution(kernel, dilation, size):
    torch.manual_seed(0)
    h, w = (size, size) if isinstance(size, int) else size
    conv = SameConv2d(6, 10, kernel, padding="same", dilation=dilation)
    x = torch.randn(3, 6, h, w, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out = conv(x)
    ref = F.conv2d(x_ref, conv.weight, conv.bias, padding="same", dilation=dilation)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(out)
    gw, gb, gx = torch.autograd.grad(out, (conv.weight, conv.bias, x), grad)
    rw, rb, rx = torch.autograd.grad(ref, (conv.weight, conv.bias, x_ref), grad)
    for a, b in ((gw, rw), (gb, rb), (gx, rx)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_path_is_chosen_by_spatial_size(monkeypatch):
    conv = SameConv2d(2, 2, 3, padding="same")
    calls = []
    unfold = F.unfold
    monkeypatch.setattr(flexunet_model.F, "unfold", lambda *a, **k: calls.append(1) or unfold(*a, **k))
    conv(torch.randn(1, 2, 8, 8))  # 64 pixels: direct convolution
    assert not calls
    conv(torch.randn(1, 2, 4, 4))  # 16 pixels: one GEMM
    assert calls


def test_whole_model_same_with_and_without_gemm_path(monkeypatch):
    torch.manual_seed(0)
    model = FlexUNet(3, 1, base_filters=4, num_layers=5, dropout_rate=0.0).eval()  # 16x16 input -> 1x1 bottleneck
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        fast = model(x)
        monkeypatch.setattr(flexunet_model, "SMALL_SPATIAL_PIXELS", 0)
        direct = model(x)
    torch.testing.assert_close(fast, direct, atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in FlexUNet(3, 1, 16, 7, (3, 3), (1, 1), 0.07).parameters()) == 31_110_001


def test_state_dict_keys_unchanged():
    conv = SameConv2d(2, 3, 3, padding="same")
    assert set(conv.state_dict()) == set(torch.nn.Conv2d(2, 3, 3, padding="same").state_dict())
