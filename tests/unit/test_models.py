"""Contract of every registered model: logits of the right shape, size checks, gradients, and it can learn.

Widths are tiny so the whole file runs in about a minute on two CPU cores; the architecture, not the size, is
what these tests check.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from flexunet.config import config_from_dict
from flexunet.config.aliases import MODEL_ALIASES
from flexunet.errors import CheckpointError, ConfigError
from flexunet.models import MODELS, build_model
from flexunet.models.inspect import inspect_model, write_summary

TINY_SMP: dict[str, object] = {"encoder": "tu-mobilenetv3_small_050", "decoder_channels": 32}
# name -> (small [model] keys, multiple the image size must have, or None when any size works)
# swin_unet is tried at 64 px: at 32 its bottleneck is 1x1, where InstanceNorm cannot train
SMALL: dict[str, tuple[dict[str, object], int | None]] = {
    "flexunet": ({"base_filters": 8, "num_layers": 3, "dropout_rate": 0.0}, 4),
    "attention_unet": ({"base_filters": 8, "num_layers": 3, "dropout_rate": 0.0}, 4),
    "multires_unet": ({"base_filters": 8, "num_layers": 3}, 4),
    "unet3plus": ({"base_filters": 8, "num_layers": 3, "dropout_rate": 0.0}, 4),
    "u2net": ({"base_filters": 8, "num_layers": 3}, None),
    "swin_unet": ({"filter_num_begin": 12, "num_heads": [1, 2, 2, 4], "window_size": 4, "stack_num_down": 1}, 32),
    "trans_unet": (
        {"filter_num": [8, 16, 32], "embed_dim": 32, "num_heads": 4, "num_mlp": 64, "num_transformer": 2,
         "dropout_rate": 0.0}, 4,
    ),
    "sharp_unet": ({"filters": [8, 16, 32], "dropout_rate": 0.0}, 8),
    # smp architectures on a 0.4M-parameter timm encoder with narrow decoders; smp's UNet takes any size itself
    "unet": (TINY_SMP, None),
    "unetplusplus": (TINY_SMP, 32),
    "fpn": (TINY_SMP, 32),
    "deeplabv3plus": (TINY_SMP, 16),
    "segformer": (TINY_SMP, 32),
    "upernet": (TINY_SMP, 32),
    "manet": (TINY_SMP, 32),
    "deeplabv3": (TINY_SMP, 8),
    "efficient_unet": ({"efficientnet": "B0", "decoder_channels": 32}, None),
    "efficientnet_b7_unet": ({"decoder_channels": 32}, None),
}
SMP_MODELS = ("unet", "unetplusplus", "fpn", "deeplabv3plus", "segformer", "upernet", "manet", "deeplabv3",
              "efficient_unet", "efficientnet_b7_unet")


def side_for(name: str) -> int:
    """The square side each model is tried at: 32 px, the smallest all accept; 64 for swin_unet and the smp
    models (at 32 their stride-32 encoders end in one pixel) and u2net (at 32 its RSU blocks end in 1x1 maps whose
    BatchNorm sees 2 values a batch: its one-batch overfit then failed for 1-2 of 6 seeds, judged in eval mode)."""
    return 64 if name in {"swin_unet", "u2net"} or name in SMP_MODELS else 32


def make_model(name: str, size: int = 32, num_classes: int = 1, **extra: object) -> nn.Module:
    keys, _ = SMALL[name]
    cfg = config_from_dict(
        {"model": {"model": name, "image_height": size, "image_width": size, "image_channels": 3,
                   "num_classes": num_classes, **keys, **extra}}
    )
    return build_model(cfg.model)


def disc_batch(size: int, num_classes: int) -> tuple[Tensor, Tensor]:
    """Two images with a bright disc (class 1) and, for 3 classes, a dark square (class 2) on noise."""
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, labels = [], []
    for cy, cx in ((0.35, 0.4), (0.6, 0.55)):
        disc = (yy - cy * size) ** 2 + (xx - cx * size) ** 2 < (0.22 * size) ** 2
        label = disc.long()
        image = 0.2 + 0.1 * torch.rand(3, size, size, generator=gen)
        image[:, disc] += 0.6
        if num_classes == 3:
            square = (yy < size // 5) & (xx > size - size // 4)
            label[square] = 2
            image[:, square] = 0.0
        images.append(image)
        labels.append(label)
    return torch.stack(images), torch.stack(labels)  # (2, 3, H, W) in [0, 1], (2, H, W)


SEED_NAMES = [
    "TensorFlowFlexUNet",
    "TensorFlowFlexAttentionUNet",
    "TensorFlowFlexMultiResUNet",
    "TensorFlowFlexUNet3Plus",
    "TensorFlowFlexU2Net",
    "TensorFlowFlexSwinUNet",
    "TensorFlowFlexTransUNet",
    "TensorFlowFlexDeepLabV3Plus",
    "TensorFlowFlexSharpUNet",
    "TensorFlowFlexEfficientUNet",
    "TensorFlowFlexEfficientNetB7UNet",
    "TensorflowUNet",
    "TensorflowAttentionUNet",
    "TensorflowMultiResUNet",
    "TensorflowUNet3Plus",
    "TensorflowU2Net",
    "TensorflowSwinUNet",
    "TensorflowTransUNet",
    "TensorflowEfficientUNet",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> object:
    """One intra-op thread: on a shared two-core machine, more threads spin against each other and run slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_every_model_is_tested_and_every_seed_name_maps_to_a_model() -> None:
    assert set(SMALL) == set(MODELS)
    assert all(MODEL_ALIASES.get(seed.lower()) in MODELS for seed in SEED_NAMES)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_contract(name: str) -> None:
    multiple, size = SMALL[name][1], side_for(name)
    for num_classes in (1, 3):
        model = make_model(name, size, num_classes).eval()
        with torch.no_grad():
            assert model(torch.rand(2, 3, size, size)).shape == (2, num_classes, size, size)

    if multiple is None:  # any size works: odd sizes too
        model = make_model(name, 33).eval()
        with torch.no_grad():
            assert model(torch.rand(2, 3, 33, 37)).shape == (2, 1, 33, 37)
    else:
        with pytest.raises(ConfigError, match=r"\[model\] image_height = .*divisible by"):
            make_model(name, size + multiple // 2)

    model = make_model(name, size, 3).train()
    images, labels = disc_batch(size, 3)
    nn.functional.cross_entropy(model(images), labels).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.isfinite().all())]
    assert not missing, f"no finite gradient for {missing[:5]}"


# efficientnet_b7_unet is left out: 63M parameters take ~25-60 s here, and it is efficient_unet's code with B7
@pytest.mark.parametrize("name", sorted(set(MODELS) - {"efficientnet_b7_unet"}))
def test_model_overfits_one_batch(name: str) -> None:
    """A few dozen Adam steps on one batch of discs reach IoU > 0.9: the model can learn at all."""
    torch.manual_seed(0)
    size = side_for(name)
    model = make_model(name, size, 1).train()
    images, labels = disc_batch(size, 1)
    target = labels[:, None].float()
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        optim.zero_grad()
        logits = model(images)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, target)
        loss.backward()
        optim.step()
    # judged in eval mode, as inference runs: BatchNorm's running statistics must have followed the training ones
    with torch.no_grad():
        pred, truth = model.eval()(images) > 0, target > 0.5
    iou = (pred & truth).sum() / (pred | truth).sum()
    assert iou > 0.9, f"IoU {iou:.3f} after 60 steps (last loss {loss.item():.3f})"


def test_pretrained_weights_load_from_a_local_file(tmp_path: Path) -> None:
    source = make_model("flexunet", num_classes=3)
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete load says nothing
        loaded = make_model("flexunet", num_classes=3, pretrained_weights=str(path))
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))


def test_pretrained_weights_for_another_head_load_the_rest_and_say_what_was_skipped(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"model": make_model("flexunet", num_classes=3).state_dict(), "config": "..."}, path)
    with pytest.warns(UserWarning, match=r"\[model\] pretrained_weights: .*shape differs: head.weight, head.bias"):
        make_model("flexunet", num_classes=1, pretrained_weights=str(path))


@pytest.mark.parametrize("content", [None, b"not a torch file", {"x": 1}, {"other.weight": torch.zeros(1)}])
def test_bad_pretrained_weights_raise_checkpoint_error(tmp_path: Path, content: object) -> None:
    path = tmp_path / "weights.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match="weights.pt"):
        make_model("flexunet", pretrained_weights=str(path))


def test_flexunet_has_the_seed_parameter_count() -> None:
    """The Pap-Smear config: the seed's Keras summary.txt says 31,110,001."""
    cfg = config_from_dict({"model": {"image_height": 128, "image_width": 128, "num_layers": 7, "base_filters": 16}})
    assert sum(p.numel() for p in build_model(cfg.model).parameters()) == 31_110_001


def test_inspect_counts_flops_and_receptive_field_by_hand(tmp_path: Path) -> None:
    """One level: conv3x3 3->8, conv3x3 8->8, head 1x1 8->1 on 16x16; two 3x3 convs see 5x5 pixels."""
    cfg = config_from_dict({"model": {"model": "flexunet", "image_height": 16, "image_width": 16, "num_layers": 1,
                                      "base_filters": 8}})
    summary = inspect_model(cfg)
    assert summary.params == (9 * 3 * 8 + 8) + (9 * 8 * 8 + 8) + (8 + 1)
    assert summary.flops == 2 * 16 * 16 * (9 * 3 * 8 + 9 * 8 * 8 + 8)  # a multiply-add is 2 FLOPs; biases free
    assert summary.receptive_field == (5, 5) and not summary.sees_whole_image
    assert summary.output_shape == (1, 1, 16, 16)
    text = write_summary(summary, tmp_path / "summary.txt").read_text()
    assert "receptive field  5 x 5 px" in text and "Conv2d" in text


def test_inspect_sees_that_attention_covers_the_whole_image() -> None:
    cfg = config_from_dict({"model": {"model": "swin_unet", "image_height": 64, "image_width": 64, **SMALL["swin_unet"][0]}})
    assert inspect_model(cfg).sees_whole_image


def test_training_path_does_not_load_monai_until_a_monai_model_is_built() -> None:
    """MONAI (and the matplotlib/scipy it pulls in) costs ~130 MB of RSS and seconds of start-up: `flexunet train`
    with the seed's FlexUNet must not pay for it. Checked in a fresh interpreter."""
    import subprocess
    import sys

    code = ("import sys, flexunet.models, flexunet.train.loop, flexunet.infer.predict, flexunet.cli; "
            "print(sorted(m for m in ('monai', 'matplotlib', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_cpu_dropout_drops_p_scales_and_routes_the_gradient(p: float) -> None:
    from flexunet.models.layers import Dropout

    torch.manual_seed(0)
    drop = Dropout(p)
    x = torch.ones(5, 33, 63, 65, requires_grad=True)  # 675,675 elements: not a multiple of 4
    y = drop(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - p) < 0.004  # 5 sigma is < 0.003
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(sum)/dx = keep * scale, the same mask as the forward
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # the global seed decides, as for nn.Dropout
    drop.eval()
    assert torch.equal(drop(x), x)


@pytest.mark.parametrize(("kernel", "dilation", "padding", "size", "bias"), [
    (3, 1, "same", (2, 2), True), (3, 1, "same", (4, 4), False), ((3, 5), (1, 2), "same", (3, 4), True),
    (3, 1, 1, (1, 1), True), (3, 1, 0, (4, 3), True), (1, 1, "same", (2, 2), True), (3, 1, "valid", (4, 4), True),
])
def test_small_map_conv_matches_nn_conv2d_forward_and_gradients(kernel, dilation, padding, size, bias) -> None:
    from flexunet.models.layers import Conv2d

    torch.manual_seed(0)
    fast = Conv2d(24, 20, kernel, padding=padding, dilation=dilation, bias=bias).train()
    plain = torch.nn.Conv2d(24, 20, kernel, padding=padding, dilation=dilation, bias=bias)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(3, 24, *size)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = fast(xa), plain(xb)
    assert ya.shape == yb.shape
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-5, atol=1e-4)
    if bias:
        torch.testing.assert_close(fast.bias.grad, plain.bias.grad, rtol=1e-5, atol=1e-4)


def test_small_map_conv_takes_the_matmul_path_only_where_it_should(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training on the CPU on maps of <= 16 pixels: no oneDNN convolution; larger maps and eval mode: nn.Conv2d."""
    from flexunet.models import layers

    calls: list[tuple[int, ...]] = []
    conv2d = torch.nn.functional.conv2d

    def counting(x, *args, **kwargs):
        calls.append(tuple(x.shape[-2:]))
        return conv2d(x, *args, **kwargs)

    monkeypatch.setattr(torch.nn.modules.conv.F, "conv2d", counting)
    conv = layers.Conv2d(8, 8, 3, padding="same").train()
    conv(torch.randn(2, 8, 4, 4))
    conv(torch.randn(2, 8, 2, 2))
    assert calls == []
    conv(torch.randn(2, 8, 8, 8))
    conv.eval()
    conv(torch.randn(2, 8, 2, 2))
    assert calls == [(8, 8), (2, 2)]
    conv.train()
    layers.Conv2d(8, 8, 2, padding="same").train()(torch.randn(2, 8, 2, 2))  # even kernel, asymmetric 'same'
    layers.Conv2d(8, 8, 3, stride=2, padding=1).train()(torch.randn(2, 8, 4, 4))
    assert calls[2:] == [(2, 2), (4, 4)]
    monkeypatch.setattr(layers, "SMALL_MAP_PIXELS", 0)  # the benchmark switch
    conv(torch.randn(2, 8, 2, 2))
    assert calls[4:] == [(2, 2)]


def test_flexunet_deep_levels_use_the_small_map_conv() -> None:
    from flexunet.models.layers import Conv2d

    cfg = config_from_dict({"model": {"model": "flexunet", "image_height": 64, "image_width": 64,
                                      "num_classes": 1, "base_filters": 4}})
    model = build_model(cfg.model)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(isinstance(m, Conv2d) for m in convs) == len(convs) - 1  # all but the 1x1 head


def test_cpu_dropout_lanes_are_independent() -> None:
    """Four decisions come from each 64-bit draw: neighbouring elements must not be correlated."""
    from flexunet.models.layers import Dropout

    torch.manual_seed(1)
    keep = (Dropout(0.5)(torch.ones((1 << 20) + 3)) != 0).float()
    for lag in (1, 2, 3, 4):
        both = (keep[:-lag] * keep[lag:]).mean().item()
        assert abs(both - 0.25) < 0.003


def test_a_model_too_large_for_memory_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Widths under the config's bound can still exceed a small machine: torch's allocation failure is one line."""
    def huge(section: object) -> nn.Module:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 4831838208 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setitem(MODELS, "flexunet", huge)
    with pytest.raises(ConfigError, match=r"\[model\] model = 'TensorFlowFlexUNet': its weights do not fit in "
                                          r"this machine's memory \(4.8 GB for one tensor\)"):
        build_model(config_from_dict({}).model)
