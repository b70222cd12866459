"""report.html in a real headless Chromium: it loads without console errors or broken images, and its per-class
table shows the values of a tiny evaluation whose Dice is known exactly."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from flexunet.config import load_config
from flexunet.evaluate import evaluate_run
from tests.conftest import make_config


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no chromium on PATH: install it (apt-get install -y chromium) to run the report browser test")


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3/4): no port, no websocket package."""

    def __init__(self, executable: str, profile: Path) -> None:
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()

        def wire() -> None:  # in the child: the protocol wants its input on fd 3 and its output on fd 4
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        high_in, high_out = os.dup(to_child), os.dup(from_child)  # >= 5 here, so dup2 onto 3/4 cannot clobber them
        os.close(to_child), os.close(from_child)
        to_child, from_child = high_in, high_out
        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child), os.close(from_child)
        self._next_id, self._buffer, self.events = 0, b"", []

    def _receive(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: str | None = None, **params: object) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params} | ({"sessionId": session} if session else {})
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(self._receive())
        raise TimeoutError(method)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._write), os.close(self._read)


def open_page(browser: Browser, url: str, width: int = 1200) -> str:
    """A new tab showing `url`, fully loaded, with console and log events recorded; returns its session id."""
    target = browser.send("Target.createTarget", url="about:blank")["targetId"]
    session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Runtime", "Log", "Page"):
        browser.send(f"{domain}.enable", session)
    browser.send("Emulation.setDeviceMetricsOverride", session, width=width, height=900, deviceScaleFactor=1, mobile=False)
    browser.send("Page.navigate", session, url=url)
    browser.wait_for("Page.loadEventFired")
    return session


def page_errors(browser: Browser) -> list[str]:
    """Console errors, uncaught exceptions and browser log errors (failed loads, blocked requests) seen so far."""
    out = []
    for event in browser.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            out.append(str(params.get("exceptionDetails", {}).get("text")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(str(params.get("args")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            out.append(str(params["entry"].get("text")))
    return out


def evaluate_js(browser: Browser, session: str, expression: str) -> object:
    return browser.send("Runtime.evaluate", session, expression=expression, returnByValue=True)["result"].get("value")


def screenshot(browser: Browser, session: str, path: Path, max_height: int | None = None, scale: float = 1.0) -> Path:
    """PNG of the whole page (or its top `max_height` CSS pixels), scaled by `scale`."""
    size = browser.send("Page.getLayoutMetrics", session)["cssContentSize"]
    height = min(size["height"], max_height) if max_height else size["height"]
    shot = browser.send("Page.captureScreenshot", session, format="png", captureBeyondViewport=True,
                        clip={"x": 0, "y": 0, "width": size["width"], "height": height, "scale": scale})
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


class Brightness(nn.Module):
    """A stand-in model: foreground wherever the red channel is above mid-grey, so its predictions are exact."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # evaluation asks the model for its device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :1] - 0.5) * 40 + self.anchor


@pytest.fixture
def known_evaluation(tmp_path: Path) -> Path:
    """Three 32x32 test images: a bright 8x8 square each. Truth: the square (perfect); the square plus 64 pixels
    beside it (half missed); nothing, with a dark image (empty both: left out). Pooled: tp 128, fp 0, fn 64, so
    Dice 0.8, IoU 2/3, precision 1, recall 2/3; per image Dice 1.0 and 2/3."""
    data = tmp_path / "data"
    for split in ("train", "valid", "test"):
        (data / split / "images").mkdir(parents=True)
        (data / split / "masks").mkdir(parents=True)
    for name, bright, truth_cols in (("a_perfect", True, (8, 16)), ("b_half", True, (8, 24)), ("c_empty", False, None)):
        image = np.full((32, 32, 3), 40, np.uint8)
        if bright:
            image[8:16, 8:16] = 200
        mask = np.zeros((32, 32), np.uint8)
        if truth_cols:
            mask[8:16, truth_cols[0]:truth_cols[1]] = 255
        for split in ("train", "valid", "test"):
            cv2.imwrite(str(data / split / "images" / f"{split}_{name}.png"), image)
            cv2.imwrite(str(data / split / "masks" / f"{split}_{name}.png"), mask)
    config = make_config(tmp_path, data)
    cfg = load_config(config)
    result = evaluate_run(Brightness(), cfg, tmp_path / "eval", "brightness-threshold")
    values = result.per_class["class_1"]
    assert values["dice"] == pytest.approx(0.8) and values["iou"] == pytest.approx(2 / 3)
    assert values["dice_ci_low"] <= 0.8 <= values["dice_ci_high"] and values["images_with_class"] == 2
    assert values["hd95"] > 0 and values["hd95_one_sided"] == 0
    return tmp_path / "eval" / "report.html"


def test_report_files_and_metrics_json(known_evaluation: Path) -> None:
    eval_dir = known_evaluation.parent
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["per_class"]["class_1"]["recall"] == pytest.approx(2 / 3)
    assert metrics["leakage"]["status"] == "leak"  # train, valid and test hold the same three images
    header = (eval_dir / "per_class.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["class", "dice", "iou", "precision", "recall"] and "hd95" in header and "dice_ci_low" in header
    assert "hd95_class_1" in (eval_dir / "per_image.csv").read_text().splitlines()[0]
    page = known_evaluation.read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page  # self-contained, no network


def test_report_renders_in_headless_chromium(known_evaluation: Path, tmp_path: Path) -> None:
    browser = Browser(find_chromium(), tmp_path / "profile")
    try:
        session = open_page(browser, known_evaluation.as_uri())
        cells = evaluate_js(browser, session, """Object.fromEntries(Array.from(
            document.querySelectorAll('#per-class tr[data-class="class_1"] td[data-metric]'))
            .map(td => [td.dataset.metric, td.textContent.trim()]))""")
        images = evaluate_js(browser, session, "Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])")
        worst = evaluate_js(browser, session, "document.querySelector('#worst td').textContent")
        leak = evaluate_js(browser, session, "document.getElementById('leakage').dataset.status")
        summary = evaluate_js(browser, session, "document.getElementById('summary').textContent")
        swatches = evaluate_js(browser, session, """Array.from(document.querySelectorAll('#error-legend .swatch'))
            .map(s => getComputedStyle(s).backgroundColor)""")
        strip = evaluate_js(browser, session, "[document.querySelector('#worst img').naturalWidth, document.querySelector('#worst img').naturalHeight]")
        shot = screenshot(browser, session, tmp_path / "report.png")
        errors = page_errors(browser)
    finally:
        browser.close()
    assert errors == []
    assert cells["dice"].startswith("0.8000 [") and cells["iou"].startswith("0.6667")
    assert cells["precision"].startswith("1.0000") and cells["recall"].startswith("0.6667")
    assert images and all(ok for _, ok in images), images  # histogram, curves (none here), overlays all decode
    assert worst.startswith("test_b_half.png") and "0.6667" in worst
    assert leak == "leak"
    assert summary == ("On 3 test images the model outlines class_1 with a Dice of 0.80 (95% CI "
                       f"{summary.split('CI ')[1].split(')')[0]}); its weakest image is test_b_half.png (Dice 0.67).")
    assert swatches == ["rgb(0, 114, 178)", "rgb(240, 228, 66)", "rgb(213, 94, 0)"]  # TP, FP, FN legend as painted
    assert strip == [4 * 32 + 3 * 4, 32]  # image | truth | prediction | errors
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class ColourChannels(nn.Module):
    """A 3-class stand-in: class 1 where green is bright, class 2 where blue is bright, background elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        background = 0.5 - x.max(1, keepdim=True).values
        return torch.cat([background, x[:, 1:2] - 0.5, x[:, 2:3] - 0.5], 1) * 40 + self.anchor


def test_multiclass_report_has_a_row_normalised_confusion_matrix(tmp_path: Path) -> None:
    """Class 1 exact; class 2 predicted 12 px wide where the truth is 10, 9, 8 px wide: pooled Dice 648/756 = 6/7."""
    data = tmp_path / "data"
    for split in ("train", "valid", "test"):
        (data / split / "images").mkdir(parents=True)
        (data / split / "masks").mkdir(parents=True)
        for i in range(3):
            image, mask = np.full((32, 32, 3), 20, np.uint8), np.zeros((32, 32, 3), np.uint8)  # RGB
            image[4:12, 4:12, 1], mask[4:12, 4:12] = 200, (0, 255, 0)
            image[16:28, 16:28, 2], mask[16:28, 18 + i:28] = 200, (255, 0, 0)
            cv2.imwrite(str(data / split / "images" / f"{split}{i}.png"), image[..., ::-1])
            cv2.imwrite(str(data / split / "masks" / f"{split}{i}.png"), mask[..., ::-1])
    cfg = load_config(make_config(tmp_path, data, {"model": {"num_classes": 3, "loss": "categorical_crossentropy",
                                                             "metrics": ["dice_coef_multiclass"]},
                                                   "train": {"metrics": []}}))
    result = evaluate_run(ColourChannels(), cfg, tmp_path / "eval", "colour-channels", examples=2)
    assert result.per_class["class_1"]["dice"] == pytest.approx(1.0)
    assert result.per_class["class_2"]["dice"] == pytest.approx(6 / 7)
    page = (tmp_path / "eval" / "report.html").read_text()
    assert 'id="confusion"' in page and "1.000<br>" in page  # class 1 row: all of its pixels predicted as 1
    assert page.count('id="worst"') == 1 and page.count('id="best"') == 1 and "dice_coef_multiclass" in page
