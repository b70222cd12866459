from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flexunet.config import config_from_text, config_to_ini, load_config, parse_value
from flexunet.config.load import Location
from flexunet.data import decode_mask, mask_decoding
from flexunet.errors import ConfigError
from flexunet.losses import build_loss
from flexunet.models import build_model
from flexunet.runs.device import seed_everything
from tests.conftest import requires_shared


def write(tmp_path: Path, text: str, name: str = "exp.config") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides or [])
    return str(info.value)


def test_parse_value_literals_and_inline_comment() -> None:
    where = Location("x.config", "train", "k")
    assert parse_value("(3,3)", where) == (3, 3)
    assert parse_value("{(0,0,0):0, (255,255,255):1}", where) == {(0, 0, 0): 0, (255, 255, 255): 1}
    assert parse_value("5 ; five epochs", where) == 5
    assert parse_value('"./models"  # where', where) == "./models"
    assert parse_value("None", where) is None


def test_code_is_never_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write(tmp_path, f"[train]\nepochs = __import__('pathlib').Path({str(marker)!r}).touch()\n")
    message = error_of(path)
    assert "exp.config [train] epochs" in message and "not a Python literal" in message
    assert not marker.exists()


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "[train]\nbatch_sise = 4\n"))
    assert message == "exp.config [train] batch_sise: unknown key; did you mean 'batch_size'?"


def test_unknown_section_suggests(tmp_path: Path) -> None:
    assert "did you mean 'train'" in error_of(write(tmp_path, "[trian]\nepochs = 4\n"))


def test_wrong_type_names_section_key_and_value(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "[model]\ndropout_rate = 1.5\n"))
    assert message.startswith("exp.config [model] dropout_rate = 1.5:")
    assert "less than 1" in message


def test_all_problems_reported_together(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "[train]\nepochz = 3\nbatch_size = 'four'\n[model]\nloss = \"bce_iou\"\n"))
    lines = message.splitlines()
    assert len(lines) == 3
    assert any("epochz" in line for line in lines) and any("batch_size" in line for line in lines)
    assert any("unknown loss" in line and "bce_iou_loss" in line for line in lines)


def test_duplicate_key_is_an_error_not_silence(tmp_path: Path) -> None:
    assert "key given twice" in error_of(write(tmp_path, "[train]\nepochs = 3\nepochs = 4\n"))


def test_percent_sign_is_fine(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[infer]\noutput_dir = "./out_100%"\n'))
    assert cfg.infer.output_dir.endswith("out_100%")


def test_seed_aliases_are_mapped_with_notes(tmp_path: Path) -> None:
    path = write(tmp_path, (
        '[train]\nimage_datapath = "./a/images"\nmask_datapath = "./a/masks"\n'
        '[eval]\nimage_datapath = "./v/images"\nmask_datapath = "./v/masks"\nbatch_size = 2\n'
        "[augmentor]\nalpah = 900\n[model]\nshow_hitory = True\n"
    ))
    cfg = load_config(path)
    assert cfg.train.images_dir == str(tmp_path / "a" / "images")
    assert cfg.valid.masks_dir == str(tmp_path / "v" / "masks")
    assert cfg.eval.batch_size == 2 and cfg.augmentor.alpha == 900
    assert any("alpah" in n for n in cfg.notes) and any("show_history" in n for n in cfg.notes)


def test_paths_relative_to_config_folder_and_cli_relative_to_cwd(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "sub").mkdir()
    path = write(tmp_path / "sub", '[train]\nmodel_dir = "./models"\n')
    monkeypatch.chdir(tmp_path)
    cfg = load_config(path, ["train.eval_dir=logs", "train.epochs=7"])
    assert cfg.train.model_dir == str(tmp_path / "sub" / "models")
    assert cfg.train.eval_dir == str(tmp_path / "logs")
    assert cfg.train.epochs == 7
    assert cfg.origins["train.epochs"] == "command line" and cfg.origins["train.model_dir"] == "file"


def test_unquoted_path_is_read_as_string_with_note(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[train]\nmodel_dir = ./models\n"))
    assert cfg.train.model_dir == str(tmp_path / "models")
    assert any("not quoted" in n for n in cfg.notes)


def test_unknown_model_suggests(tmp_path: Path) -> None:
    assert "unknown model" in error_of(write(tmp_path, '[model]\nmodel = "TensorFlowFlexUNetX"\n'))


def test_rgb_map_index_beyond_num_classes(tmp_path: Path) -> None:
    message = error_of(write(tmp_path, "[model]\nnum_classes = 2\n[mask]\nrgb_map = {(0,0,0):0, (255,0,0):2}\n"))
    assert "exp.config [mask] rgb_map" in message


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[model]\nnum_classes = 3\nbase_kernels = (5,5)\n[mask]\nrgb_map = {(0,0,0):0,(0,255,0):1,(255,0,0):2}\n"))
    again = config_from_text(config_to_ini(cfg), "resolved")
    for name in ("model", "train", "mask", "valid", "infer", "augmentor"):
        assert getattr(again, name).model_dump() == getattr(cfg, name).model_dump()


@pytest.mark.parametrize("name", ["pap-smear.config", "mammogram-mastery.config"])


def test_seed_configs_load_unmodified(name: str) -> None:
    cfg = load_config(requires_shared("configs", name))
    assert cfg.train.epochs == 100
    if name == "pap-smear.config":
        assert cfg.model.num_layers == 7 and cfg.model.loss == "bce_iou_loss" and cfg.mask.threshold == 60
        assert cfg.valid.images_dir.endswith("valid/images")
    else:
        assert cfg.model.num_classes == 2 and cfg.rgb_map == {(0, 0, 0): 0, (255, 255, 255): 1}
        assert cfg.train.learning_rate_reducer and cfg.train.reducer_patience == 4
        assert any("input_normalize" in n for n in cfg.notes)


def test_every_schema_key_is_read_somewhere() -> None:
    """A key the code never reads would be a silent default: it must be a note-only key instead."""
    import re

    from flexunet.config.schema import SECTIONS

    root = Path(__file__).resolve().parents[2] / "flexunet"
    source = "\n".join(p.read_text() for p in root.rglob("*.py") if p.name != "schema.py")
    unread = [f"[{name}] {key}" for name, cls in SECTIONS.items() for key in cls.model_fields
              if not re.search(rf"\.{key}\b", source) and f'"{key}"' not in source]
    assert unread == []


def test_class_names_one_per_label_background_first(tmp_path: Path) -> None:
    head = "[model]\nnum_classes = 3\n[mask]\nrgb_map = {(0,0,0):0, (0,255,0):1, (255,0,0):2}\n"
    message = error_of(write(tmp_path, head + 'class_names = ["cytoplasm", "nucleus"]\n'))
    assert "exp.config [mask] class_names" in message and "2 names for 3 labels" in message
    assert "exp.config [mask] class_names" in error_of(write(tmp_path, head + 'class_names = ["bg", "a,b", "c"]\n'))
    assert "exp.config [mask] class_names" in error_of(write(tmp_path, head + 'class_names = ["bg", "a", "a"]\n'))
    named = load_config(write(tmp_path, head + 'class_names = ["background", "cytoplasm", "nucleus"]\n'))
    assert named.label_names == ["background", "cytoplasm", "nucleus"]
    assert load_config(write(tmp_path, "[model]\nnum_classes = 1\n")).label_names == ["background", "class_1"]


@pytest.mark.parametrize("order", ["valid first", "eval first"])
def test_seed_eval_data_never_overrides_an_explicit_valid(tmp_path: Path, order: str) -> None:
    valid = '[valid]\nimages_dir = "./v/images"\nmasks_dir = "./v/masks"\n'
    seed_eval = '[eval]\nimage_datapath = "./test/images"\nbatch_size = 2\n'
    message = error_of(write(tmp_path, valid + seed_eval if order == "valid first" else seed_eval + valid))
    assert "exp.config [eval] image_datapath" in message and "exp.config [valid] images_dir" in message
    assert "test/images" in message and "v/images" in message


def test_seed_eval_data_agreeing_with_valid_or_overridden_on_the_command_line_is_fine(tmp_path: Path) -> None:
    text = '[valid]\nimages_dir = "./v/images"\n[eval]\nimages_dir = "./v/images"\n'
    assert load_config(write(tmp_path, text)).valid.images_dir == str(tmp_path / "v" / "images")
    path = write(tmp_path, '[eval]\nimage_datapath = "./old/images"\n')
    cfg = load_config(path, ["valid.images_dir=" + str(tmp_path / "new")])  # the command line overrides the file
    assert cfg.valid.images_dir == str(tmp_path / "new")


@pytest.mark.parametrize(("text", "where"), [
    ("[model]\nnum_layers = 4\ndropout_rate = 0.5\n", "exp.config [model] dropout_rate = 0.5: level i drops"),
    # sharp_unet's depth comes from [model] filters (4 and a bottleneck by default), not num_layers
    ("[model]\nmodel = 'sharp_unet'\nnum_layers = 1\ndropout_rate = 0.3\n",
     "exp.config [model] dropout_rate = 0.3: level i drops dropout_rate * i, so with 5 levels ([model] filters)"),
    ("[train]\nseed = 1180591620717411303424\n", "exp.config [train] seed = 1180591620717411303424: Input should be less"),
    ("[model]\nnum_classes = 3\n[mask]\nrgb_map = {}\n", "exp.config [mask] rgb_map = {}: maps no colour"),
    ("[model]\nactivation = 'relu6x'\n", "exp.config [model] activation = 'relu6x': unknown activation"),
])


def test_values_that_would_crash_later_are_rejected_at_load(tmp_path: Path, text: str, where: str) -> None:
    assert where in error_of(write(tmp_path, text))


def test_level_dropout_that_fits_is_accepted(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[model]\nnum_layers = 4\ndropout_rate = 0.3\n[train]\nseed = 4294967295\n"))
    assert cfg.model.dropout_rate == 0.3 and cfg.train.seed == 2**32 - 1


TINY_MODEL = {  # always given, so no example falls back to a 512x512, 6-level default
    "image_width": st.sampled_from(["8", "12", "16"]),
    "image_height": st.sampled_from(["8", "16", "20"]),
    "base_filters": st.sampled_from(["1", "2"]),
    "num_layers": st.sampled_from(["1", "2", "3", "4", "5"]),
}
MODEL_VALUES = {
    "model": st.sampled_from(["'flexunet'", "'sharp_unet'", "'unet3plus'", "'attention_unet'", "'multires_unet'"]),
    "image_channels": st.sampled_from(["1", "3", "4"]),
    "num_classes": st.sampled_from(["1", "2", "3"]),
    "base_kernels": st.sampled_from(["(1, 1)", "(3, 3)", "(5, 2)", "(7, 7)"]),
    "dilation": st.sampled_from(["(1, 1)", "(2, 2)", "(3, 1)"]),
    "dropout_rate": st.sampled_from(["0.0", "0.05", "0.3", "0.5", "0.99"]),
    "normalization": st.sampled_from(["True", "False"]),
    "activation": st.sampled_from(["'relu'", "'elu'", "'tf.nn.gelu'", "'mish'", "'relux'"]),
    "loss": st.sampled_from([f"'{name}'" for name in ("bce_iou_loss", "bce_dice_loss", "dice_loss", "iou_loss",
                             "categorical_crossentropy", "ssim_loss", "basnet_hybrid_loss", "dice_ce_loss", "jacard_loss")]),
}
OTHER_VALUES = {
    ("train", "seed"): st.sampled_from(["0", "137", "-1", "4294967295", "4294967296", "1180591620717411303424"]),
    ("mask", "rgb_map"): st.sampled_from(["{}", "{(0,0,0):0}", "{(0,0,0):0, (255,255,255):1}", "{(0,0,0):0, (9,9,9):7}"]),
    ("mask", "ignore_index"): st.sampled_from(["0", "1", "3", "255", "256"]),
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries(TINY_MODEL, optional=MODEL_VALUES), st.fixed_dictionaries({}, optional=OTHER_VALUES))


def test_a_loaded_config_trains_one_step(model: dict[str, str], other: dict[tuple[str, str], str]) -> None:
    """Every value the loader accepts works: the model builds (or refuses with a ConfigError naming the key, as the
    model-specific shape rules do), seeds the RNGs, decodes a mask and runs one forward/backward step."""
    sections: dict[str, dict[str, str]] = {"model": dict(model)}
    for (section, key), value in other.items():
        sections.setdefault(section, {})[key] = value
    text = "".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) for s, entries in sections.items())
    try:
        cfg = config_from_text(text, "fuzz.config")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.config [")
        event("rejected at load")
        return
    try:
        net = build_model(cfg.model)
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.config [model] ")
        event("refused by the model builder")
        return
    seed_everything(cfg.train.seed)
    m = cfg.model
    mask = np.random.default_rng(0).integers(0, 256, (m.image_height, m.image_width, 3), dtype=np.uint8)
    labels, _ = decode_mask(mask, mask_decoding(cfg))
    assert labels.shape == (m.image_height, m.image_width)
    logits = net(torch.rand(2, m.image_channels, m.image_height, m.image_width))
    assert logits.shape == (2, m.num_classes, m.image_height, m.image_width)
    y = torch.from_numpy(np.stack([labels, labels])).long() % max(m.num_classes, 2)
    loss = build_loss(m)(logits, y)
    loss.backward()
    assert torch.isfinite(loss)
    event("trained one step")


def test_postprocess_keys_per_class_and_their_errors() -> None:
    from flexunet.config.load import config_from_dict

    base = {"model": {"num_classes": 3}, "mask": {"class_names": ["background", "nucleus", "cytoplasm"]}}
    cfg = config_from_dict({**base, "postprocess": {"min_object_px": {"nucleus": 30}, "keep_largest": True}})
    assert cfg.postprocess.for_class("min_object_px", "nucleus") == 30
    assert cfg.postprocess.for_class("min_object_px", "cytoplasm") == 0  # left out of the dict: off
    assert cfg.postprocess.for_class("keep_largest", "cytoplasm") is True
    assert config_from_dict({}).postprocess.auto is False
    cases = {
        "min_object_px": ({"nucleos": 3}, "[postprocess] min_object_px: no class named 'nucleos'; "
                                          "did you mean 'nucleus'? the classes are nucleus, cytoplasm"),
        "min_distance": (0, "[postprocess] min_distance = 0: must be >= 1"),
        "compactness": (-0.5, "[postprocess] compactness = -0.5: must be >= 0"),
        "min_object_fraction": ({"nucleus": 1.5}, "must be < 1"),
    }
    for key, (value, expected) in cases.items():
        with pytest.raises(ConfigError) as err:
            config_from_dict({**base, "postprocess": {key: value}})
        assert expected in str(err.value)
        assert len(str(err.value).splitlines()) == 1
    with pytest.raises(ConfigError, match=r"min_object_px = -2: must be >= 0$"):
        config_from_dict({**base, "postprocess": {"min_object_px": -2}})


def test_sizes_that_would_exhaust_memory_are_config_errors_with_the_reason() -> None:
    """Issue 27: huge base_filters, image sizes and watershed distances were a MemoryError (or a machine brought to
    its knees); each is now one line naming file, section and key, with the bound and why."""
    from flexunet.config.load import config_from_dict

    cases = {
        "[model] base_filters = 100000: the deepest of 6 levels": {"model": {"base_filters": 100000}},
        "[model] filters = [16, 100000]: the widest level would have 100,000 filters": {
            "model": {"model": "sharp_unet", "filters": [16, 100000]}},
        "[model] image_width x image_height = 1000000 x 1000000: 1,000,000,000,000 pixels is over [image] max_pixels": {
            "model": {"image_width": 10**6, "image_height": 10**6}},
        "[postprocess] min_distance = 1000000000: must be <= 20,000": {"postprocess": {"min_distance": 1e9}},
        "[postprocess] min_distance = {'cell': 5000}: must be <= 4,000": {
            "image": {"max_pixels": 4000**2}, "postprocess": {"min_distance": {"cell": 5000}},
            "mask": {"class_names": ["background", "cell"]}},
        "[postprocess] min_object_px = 10000000000: must be <= 400,000,000": {"postprocess": {"min_object_px": 10**10}},
        "[tiledinfer] split_size = 1000000: must be <= 20,000": {"tiledinfer": {"split_size": 10**6}},
    }
    for expected, sections in cases.items():
        with pytest.raises(ConfigError) as err:
            config_from_dict(sections)
        assert expected in str(err.value) and len(str(err.value).splitlines()) == 1
    # the largest settings below the bounds still load: 16 filters over 10 levels, a tiled-size watershed distance
    config_from_dict({"model": {"base_filters": 16, "num_layers": 10}, "postprocess": {"min_distance": 20000}})


def test_a_nul_byte_in_a_value_is_one_line_naming_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 27: a NUL byte in a path ("a\\x00b" in the file, or `--images` / `--set` on the command line) was a
    ValueError traceback from the first os call that met it."""
    from tests.conftest import run_cli

    config = tmp_path / "nul.config"
    config.write_text('[model]\nimage_width = 32\nimage_height = 32\n[train]\nmodel_dir = "./m\\x00x"\n'
                      '[mask]\nclass_names = ["background", "ce\\x00ll"]\n')
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert str(err.value).splitlines() == [
        "nul.config [train] model_dir = './m\\x00x': contains a NUL byte (\\x00), which no file name or setting may "
        "hold",
        "nul.config [mask] class_names = ['background', 'ce\\x00ll']: contains a NUL byte (\\x00), which no file name "
        "or setting may hold",
    ]
    plain = tmp_path / "ok.config"
    plain.write_text("[model]\nimage_width = 32\nimage_height = 32\n")
    for args in (["infer", str(plain), "--images", "x\0y"], ["train", str(plain), "--set", "train.model_dir=a\0b"]):
        assert run_cli(monkeypatch, *args) == 2
        err_lines = capsys.readouterr().err.strip().splitlines()
        assert len(err_lines) == 1 and "contains a NUL byte" in err_lines[0], err_lines
