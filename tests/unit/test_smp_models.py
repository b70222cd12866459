"""smp architectures: encoder names, encoder weights (local files, the hub offline), the input normalisation inside
the model on every path, and encoder freezing during training. (The shared model contract is in test_models.py.)"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from flexunet.config import config_from_dict, load_config
from flexunet.errors import CheckpointError, ConfigError
from flexunet.models import build_model
from flexunet.models.smp_models import IMAGENET_MEAN, IMAGENET_STD
from tests.conftest import make_config, run_cli


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def smp_model(size: int = 64, **keys: object) -> nn.Module:
    model = {"model": "unet", "encoder": "resnet18", "image_height": size, "image_width": size, **keys}
    return build_model(config_from_dict({"model": model}).model)


def test_unknown_encoder_suggests_close_names() -> None:
    with pytest.raises(ConfigError, match=r"\[model\] encoder = 'resnet343': unknown encoder; did you mean resnet34"):
        smp_model(encoder="resnet343")
    with pytest.raises(ConfigError, match=r"unknown encoder; did you mean tu-convnext_tiny"):
        smp_model(encoder="tu-convnext_tinyy")


def test_an_encoder_decoder_pair_smp_rejects_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"\[model\] encoder = 'mit_b0': unetplusplus cannot use it"):
        smp_model(model="unetplusplus", encoder="mit_b0")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_local_encoder_file_loads_bit_for_bit(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(1)
    source = smp_model().encoder
    path = tmp_path / f"resnet18{suffix}"
    state = {k: v.clone() for k, v in source.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # an ImageNet classifier
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    torch.manual_seed(2)
    with pytest.warns(UserWarning, match="classifier tensors left out: fc.bias, fc.weight"):
        loaded = smp_model(encoder_weights=str(path)).encoder
    assert source.state_dict().keys() == loaded.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))


def test_weights_of_another_encoder_are_listed_not_skipped(tmp_path: Path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(smp_model(encoder="resnet34").encoder.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"encoder_weights = .*resnet34.pth.*not weights of this encoder "
                                              r"\(missing: |not in the encoder: layer1.2"):
        smp_model(encoder_weights=str(path))
    path = tmp_path / "other.pth"
    state = smp_model().encoder.state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"shape differs: conv1.weight \(64, 3, 3, 3\) vs \(64, 3, 7, 7\)"):
        smp_model(encoder_weights=str(path))


def test_without_a_network_the_hub_tag_is_one_clean_line(tmp_path: Path, tiny_dataset: Path,
                                                         monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as this machine: no hub reachable
    with pytest.raises(ConfigError) as info:
        smp_model(encoder_weights="imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert "encoder_weights = 'imagenet'" in message and "'resnet18'" in message
    assert 'give a local file instead: encoder_weights = "path/to/resnet18.pth"' in message
    config = make_config(tmp_path, tiny_dataset, {"model": {"model": "unet", "encoder": "resnet18",
                                                            "encoder_weights": "imagenet"}})
    assert run_cli(monkeypatch, "train", str(config), "-q") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "could not download the 'imagenet' weights of encoder 'resnet18'" in err


def test_an_unreachable_hub_is_found_once_without_retries(monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    """Offline, huggingface_hub retried five times over ~30 s, printing each retry, and the message was cut."""
    import time

    import huggingface_hub.constants

    from flexunet.models import smp_models

    calls = []

    def unreachable(address, timeout=None):
        calls.append(address)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setattr(smp_models.socket, "create_connection", unreachable)
    began = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        smp_model(encoder="resnet34", encoder_weights="imagenet")
    assert time.perf_counter() - began < 10 and len(calls) == 1
    assert "not in the local cache and huggingface.co cannot be reached (Network is unreachable)" in str(info.value)
    assert str(info.value).endswith('encoder_weights = "path/to/resnet34.pth" (or .safetensors)')
    assert "Retry" not in capfd.readouterr().err
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # put back for whatever runs next


def test_an_unknown_weights_tag_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"encoder_weights = 'imagenet22k': .*Wrong pretrained weights"):
        smp_model(encoder_weights="imagenet22k")


def test_a_size_the_encoder_cannot_take_names_the_divisor() -> None:
    with pytest.raises(ConfigError, match=r"\[model\] image_width = 72: must be divisible by 32 .*'resnet18'.*try 64"):
        build_model(config_from_dict({"model": {"model": "fpn", "encoder": "resnet18", "image_height": 64,
                                                "image_width": 72}}).model)


def test_the_encoder_statistics_sit_in_the_state_dict() -> None:
    state = smp_model().state_dict()
    assert torch.allclose(state["normalize.mean"].flatten(), torch.tensor(IMAGENET_MEAN))
    assert torch.allclose(state["normalize.std"].flatten(), torch.tensor(IMAGENET_STD))
    grey = smp_model(image_channels=1).state_dict()
    assert torch.allclose(grey["normalize.mean"].flatten(), torch.tensor([sum(IMAGENET_MEAN) / 3]))
    timm_stats = smp_model(encoder="tu-inception_v3", model="fpn").state_dict()["normalize.mean"].flatten()
    assert torch.allclose(timm_stats, torch.tensor([0.5, 0.5, 0.5]))  # timm's own config for that encoder


def manual_probs(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """What every path must compute: ImageNet normalisation by hand, then the smp network, then the sigmoid."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return torch.sigmoid(model.net((x - mean) / std)).numpy()


@pytest.fixture
def trained_smp(tmp_path: Path, tiny_dataset: Path) -> tuple[Path, nn.Module]:
    """A config and its best.pt holding a (random) smp UNet at the data's 32 px."""
    from flexunet.config.load import config_to_ini
    from flexunet.runs.checkpoint import save_checkpoint
    from flexunet.runs.rundir import run_dir_for

    config = make_config(tmp_path, tiny_dataset, {"model": {"model": "unet", "encoder": "resnet18"},
                                                  "tiledinfer": {"overlapping": 0}})
    cfg = load_config(config)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    run_dir_for(cfg).model_dir.mkdir(parents=True)
    save_checkpoint(run_dir_for(cfg).best, {"model": model.state_dict(), "config": config_to_ini(cfg), "epoch": 0})
    return config, model


def test_normalisation_is_the_same_on_every_path(trained_smp: tuple[Path, nn.Module]) -> None:
    """Direct call (train and evaluate), the checkpoint reload (evaluate, infer), the whole-image Predictor (infer),
    the tiled one, and the ONNX export all apply the encoder's mean/std: each matches the by-hand computation."""
    from flexunet.predict import predictor_from_config
    from flexunet.runs.checkpoint import load_trained_model
    from flexunet.runs.rundir import run_dir_for

    config, model = trained_smp
    cfg = load_config(config)
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    expected = manual_probs(model, x)
    cpu = torch.device("cpu")
    with torch.no_grad():
        assert np.abs(torch.sigmoid(model(x)).numpy() - expected).max() < 1e-5  # training and evaluation
    reloaded, _ = load_trained_model(run_dir_for(cfg).best, cpu)
    with torch.no_grad():
        assert np.abs(torch.sigmoid(reloaded(x)).numpy() - expected).max() < 1e-5  # evaluate / infer load
    whole = predictor_from_config(cfg, reloaded, cpu).probs([image])[0]
    assert np.abs(whole - expected[0]).max() < 1e-5  # infer
    tiled = predictor_from_config(cfg, reloaded, cpu, tiled=True).probs([image])[0]  # one 32 px tile, no overlap
    assert np.abs(tiled - expected[0]).max() < 1e-5
    pytest.importorskip("onnxruntime")
    from flexunet.infer import OnnxModel
    from flexunet.infer.export import export_onnx

    result = export_onnx(reloaded, cfg, config.parent / "model.onnx")
    assert result.dynamic_spatial and result.max_abs_diff < 1e-4
    with torch.no_grad():
        onnx_probs = torch.sigmoid(OnnxModel(result.path)(x)).numpy()
    assert np.abs(onnx_probs - expected).max() < 1e-4


def encoder_tensors(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    return {k: v for k, v in state.items() if k.startswith("net.encoder.") and v.is_floating_point()
            and "running" not in k}


def decoder_tensors(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    return {k: v for k, v in state.items() if k.startswith("net.decoder.") and v.is_floating_point()}


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> int:
    return sum(not torch.equal(before[k], after[k]) for k in before)


def test_a_frozen_encoder_stays_fixed_until_it_is_unfrozen(tmp_path: Path, tiny_dataset: Path) -> None:
    from flexunet.runs.rundir import run_dir_for
    from flexunet.train import train_from_config

    config = make_config(tmp_path, tiny_dataset, {
        "model": {"model": "unet", "encoder": "tu-mobilenetv3_small_050", "decoder_channels": 32,
                  "freeze_encoder": True, "unfreeze_encoder_after": 2,
                  "encoder_lr_scale": 0.5},
        "train": {"epochs": 3, "epoch_change_infer": False}})
    cfg = load_config(config)
    snapshots: list[tuple[dict, dict]] = []
    last = run_dir_for(cfg).last

    def snapshot(row: dict) -> bool:
        snapshots.append((encoder_tensors(last), decoder_tensors(last)))
        return False

    train_from_config(cfg, device="cpu", quiet=True, on_epoch_end=snapshot)
    first, second, third = snapshots
    assert changed(first[0], second[0]) == 0  # epoch 2: still frozen
    assert changed(first[1], second[1]) > len(first[1]) // 2  # the decoder trains meanwhile
    assert changed(second[0], third[0]) > len(second[0]) // 2  # epoch 3: the encoder trains


def test_optimizer_groups_scale_the_encoder_rate() -> None:
    from flexunet.train.param_groups import parameter_groups

    cfg = config_from_dict({"model": {"model": "unet", "encoder": "resnet18", "image_height": 64, "image_width": 64,
                                      "learning_rate": 1e-3, "encoder_lr_scale": 0.1}})
    model = build_model(cfg.model)
    rest, encoder = parameter_groups(model, cfg.model)
    assert rest["lr"] == 1e-3 and encoder["lr"] == pytest.approx(1e-4)
    assert {id(p) for p in encoder["params"]} == {id(p) for p in model.encoder.parameters()}
    assert len(rest["params"]) + len(encoder["params"]) == len(list(model.parameters()))


def test_freeze_batch_norm_keeps_encoder_statistics_in_train_mode() -> None:
    from flexunet.train.param_groups import apply_encoder_schedule

    cfg = config_from_dict({"model": {"model": "unet", "encoder": "resnet18", "image_height": 64, "image_width": 64,
                                      "freeze_batch_norm": True}})
    model = build_model(cfg.model)
    assert apply_encoder_schedule(model, cfg.model, 0) is not None
    before = model.encoder.bn1.running_mean.clone()
    model.train()(torch.rand(2, 3, 64, 64))
    assert torch.equal(model.encoder.bn1.running_mean, before) and not model.encoder.bn1.weight.requires_grad
    assert model.encoder.conv1.weight.requires_grad


def test_encoder_keys_on_a_model_without_an_encoder_are_a_config_error() -> None:
    from flexunet.train.param_groups import parameter_groups

    cfg = config_from_dict({"model": {"model": "flexunet", "image_height": 32, "image_width": 32, "num_layers": 3,
                                      "freeze_encoder": True}})
    with pytest.raises(ConfigError, match=r"\[model\] freeze_encoder: model 'flexunet' has no encoder"):
        parameter_groups(build_model(cfg.model), cfg.model)


def test_seed_class_names_build_the_smp_models_with_the_seed_encoders() -> None:
    def encoder_of(name: str, **keys: object) -> str:
        cfg = config_from_dict({"model": {"model": name, "image_height": 64, "image_width": 64, **keys}})
        return type(build_model(cfg.model).encoder).__name__

    assert encoder_of("TensorFlowFlexDeepLabV3Plus") == "ResNetEncoder"
    assert encoder_of("TensorFlowFlexEfficientUNet", efficientnet="B1") == "EfficientNetEncoder"


SMP_ARCHITECTURES = ["unet", "unetplusplus", "fpn", "deeplabv3plus", "segformer", "upernet", "manet", "deeplabv3",
                     "efficient_unet"]
# pyramid pooling into 1, 2, 3 and 6 bins: ONNX expresses it only at a fixed size whose deepest feature map the bins
# divide (UPerNet: stride 32, so 192 px)
FIXED_ONNX_SIZE = {"upernet": 192}


def tiny_smp_config(name: str, size: int) -> object:
    keys = {"decoder_channels": 32} | ({} if name == "efficient_unet" else {"encoder": "tu-mobilenetv3_small_050"})
    return config_from_dict({"model": {"model": name, "image_height": size, "image_width": size, "num_classes": 3,
                                       **keys}, "tiledinfer": {"overlapping": 16}})


@pytest.mark.parametrize("name", SMP_ARCHITECTURES)
def test_every_smp_model_exports_to_onnx_and_runs_tiled(name: str, tmp_path: Path) -> None:
    """ONNX parity < 1e-4 (dynamic sizes, or fixed ones for pyramid pooling: FIXED_ONNX_SIZE), and tiled inference
    over an image larger than the model input."""
    pytest.importorskip("onnxruntime")
    from flexunet.infer.export import export_onnx
    from flexunet.predict import predictor_from_config

    size = FIXED_ONNX_SIZE.get(name, 64)
    cfg = tiny_smp_config(name, size)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    result = export_onnx(model, cfg, tmp_path / "model.onnx")
    assert result.max_abs_diff < 1e-4 and result.dynamic_spatial == (name not in FIXED_ONNX_SIZE)
    image = np.random.default_rng(0).integers(0, 256, (size + 36, size + 26, 3), dtype=np.uint8)
    probs = predictor_from_config(cfg, model, torch.device("cpu"), tiled=True).probs([image])[0]
    assert probs.shape == (3, size + 36, size + 26) and np.isfinite(probs).all()
    assert np.allclose(probs.sum(0), 1, atol=1e-4)  # softmax over 3 classes, blended


def test_a_size_onnx_cannot_express_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from flexunet.errors import FlexunetError
    from flexunet.infer.export import export_onnx

    cfg = tiny_smp_config("upernet", 64)
    with pytest.raises(FlexunetError, match=r"^this model cannot be exported to ONNX at 64x64 \(Unsupported: .*"
                                            r"adaptive_avg_pool2d[^\n]*$"):
        export_onnx(build_model(cfg.model).eval(), cfg, tmp_path / "model.onnx")


def test_the_readme_example_config_loads_and_builds_offline_from_a_local_file(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Choosing a model"):]
    block = section[section.index("```ini\n") + 7:section.index("```\n", section.index("```ini\n") + 7)]
    config = tmp_path / "choose.config"
    config.write_text(block)
    cfg = load_config(config)
    m = cfg.model
    assert (m.model, m.encoder, m.encoder_weights, m.unfreeze_encoder_after) == ("unet", "resnet34", "imagenet", 5)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="could not download the 'imagenet' weights of encoder 'resnet34'"):
        build_model(m)
    weights = tmp_path / "weights" / "resnet34.pth"
    weights.parent.mkdir()
    torch.save(smp_model(encoder="resnet34").encoder.state_dict(), weights)
    config.write_text(block.replace('"imagenet"', '"weights/resnet34.pth"'))
    cfg = load_config(config)
    assert cfg.model.encoder_weights == str(weights)  # resolved against the config's folder
    assert torch.equal(build_model(cfg.model).encoder.conv1.weight, torch.load(weights)["conv1.weight"])


def test_freezing_under_torchrun_is_refused_in_one_line() -> None:
    from flexunet.train.param_groups import check_freezing_supported

    section = config_from_dict({"model": {"model": "unet", "freeze_encoder": True}}).model
    check_freezing_supported(section, distributed=False)
    with pytest.raises(ConfigError, match=r"\[model\] freeze_encoder = True: not supported with several processes"):
        check_freezing_supported(section, distributed=True)


def test_a_missing_encoder_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"\[model\] encoder_weights = '.*nothing.pth': file not found"):
        smp_model(encoder_weights=str(tmp_path / "nothing.pth"))
