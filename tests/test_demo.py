"""``selfvae demo``: the page's operations on a trained tiny selfVAE, and the page itself driven in headless
Chromium (Debian's chromium + chromium-driver, via selenium): upload an image, wait for the pictures, check
them (size, not blank), and see a bad upload answered by a message, not a traceback."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image

from selfvae.demo import DemoModel, find_default_run
from selfvae.errors import SelfVAEError
from selfvae.runs.loading import load_run
from selfvae.training.loop import train

gr = pytest.importorskip("gradio", reason='the demo extra is not installed: pip install -e ".[demo]"')

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
NO_BROWSER = "Chromium not found: apt-get install -y chromium chromium-driver (CI installs them)"


@pytest.fixture(scope="module")
def demo_run(blob_npz, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("demo") / "runs" / "tiny-2lvl"
    train(tiny_config(blob_npz, "downscale,downscale", steps=10), run, progress=False)
    return run


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A 90x60 RGB photo-like image (a bright disc on a gradient): not the model's size, shape or channels."""
    yy, xx = np.mgrid[0:60, 0:90]
    img = np.stack([xx * 2, yy * 3, 255 * (((xx - 45) ** 2 + (yy - 30) ** 2) < 400)], -1)
    path = tmp_path_factory.mktemp("img") / "photo.jpg"
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path)
    return path


def _demo(run: Path) -> DemoModel:
    cfg, model = load_run(run)
    return DemoModel(cfg, model, str(run))


def test_operations_give_the_pictures_the_page_shows(demo_run, photo):
    dm = _demo(demo_run)
    seen, superres, modes = dm.image(str(photo), 0)
    scale = 128 // 16
    # x, y1, y2 side by side at 8x: at least three 128-pixel columns, each image non-constant
    assert seen.shape[1] >= 3 * 16 * scale and seen.shape[0] >= 16 * scale and seen.shape[2] == 3
    assert superres.shape[1] >= 6 * 16 * scale  # given y, four samples, the original
    assert modes.shape[1] >= 6 * 16 * scale  # x, RS1, RS2, RS3, CR, CG
    for pic in (seen, superres, modes):
        assert pic.std() > 10
    again = dm.image(str(photo), 0)
    assert all(np.array_equal(a, b) for a, b in zip((seen, superres, modes), again, strict=True))  # seeded
    samples = dm.samples(3, 0.8, 4)
    assert samples.shape[1] >= 4 * 16 * scale and samples.shape[0] >= 3 * 16 * scale  # y1, y2, x per column
    strip = dm.interpolation(str(photo), str(photo), 5)
    assert strip.shape[1] >= 7 * 16 * scale


def test_bad_uploads_are_messages(demo_run, tmp_path):
    dm = _demo(demo_run)
    pdf = tmp_path / "paper.png"
    pdf.write_bytes(b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n")
    with pytest.raises(SelfVAEError, match="paper.png: not an image file"):
        dm.image(str(pdf), 0)
    huge = tmp_path / "huge.png"
    Image.new("L", (8000, 8000)).save(huge)  # 64M pixels, a few hundred kB as PNG
    with pytest.raises(SelfVAEError, match="huge.png: image is 8000x8000 pixels"):
        dm.image(str(huge), 0)
    with pytest.raises(SelfVAEError, match="upload an image"):
        dm.image(None, 0)


def test_default_model_is_the_newest_run_else_the_shipped_one(demo_run, tmp_path, monkeypatch):
    from selfvae.runs import layout

    assert find_default_run(demo_run.parent) == str(demo_run)
    assert find_default_run(tmp_path) == "mnist-srvae"  # nothing trained yet: the shipped selfVAE
    monkeypatch.setattr(layout, "PACKAGED", tmp_path / "none")
    with pytest.raises(SelfVAEError, match="no trained run"):
        find_default_run(tmp_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(demo_run):
    """``selfvae demo RUN`` in its own process on a free loopback port; stopped after the module."""
    yield from _serve(str(demo_run))


@pytest.fixture(scope="module")
def rgb_server():
    """``selfvae demo cifar10-srvae-small``: the shipped natural-image selfVAE."""
    yield from _serve("cifar10-srvae-small")


def _serve(model: str):
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "selfvae.cli", "demo", model, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"selfvae demo exited: {proc.stdout.read().decode()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("selfvae demo did not answer within 90 s")
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(NO_BROWSER)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,1500"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def _wait(driver, predicate, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.3)
    driver.save_screenshot(str(Path(os.environ.get("PYTEST_TMP", "/tmp")) / "selfvae-demo-failure.png"))
    pytest.fail(f"timed out waiting for {what}; page text: {driver.find_element('tag name', 'body').text[:800]}")


def _picture(src: str) -> Image.Image:
    with urllib.request.urlopen(src, timeout=10) as r:
        return Image.open(io.BytesIO(r.read())).convert("RGB")


def _upload(browser, image: Path) -> list[str]:  # noqa: ANN001 - a selenium driver
    """Upload ``image`` on the page open in ``browser``; the sources of the three pictures it answers with."""
    from selenium.webdriver.common.by import By

    upload = _wait(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"),
                   "the upload field")
    upload[0].send_keys(str(image))

    def pictures():
        imgs = [browser.find_elements(By.CSS_SELECTOR, f"#{eid} img") for eid in ("seen", "superres", "modes")]
        return [i[0].get_attribute("src") for i in imgs] if all(imgs) else None

    return _wait(browser, pictures, "the three output pictures")


@pytest.mark.slow
def test_upload_in_a_real_browser(server, browser, photo, tmp_path):
    browser.get(server)
    srcs = _upload(browser, photo)
    for src, min_cols in zip(srcs, (3, 6, 6), strict=True):
        pic = np.asarray(_picture(src))
        assert pic.shape[1] >= min_cols * 128 and pic.shape[0] >= 128
        assert pic.std() > 10  # not blank
    browser.save_screenshot(str(tmp_path / "demo.png"))
    if os.environ.get("SELFVAE_DEMO_SCREENSHOT"):  # docs/figures/demo.png is made this way
        browser.save_screenshot(os.environ["SELFVAE_DEMO_SCREENSHOT"])
    assert Image.open(tmp_path / "demo.png").size[0] > 600


@pytest.mark.slow
def test_a_colour_photo_through_the_natural_image_model_in_a_real_browser(rgb_server, browser, photo):
    """Issue 33: the page offers the shipped CIFAR-10 models; a colour photo uploaded to the srVAE comes back in
    colour: what it sees, its super-resolutions and its reconstructions."""
    from selenium.webdriver.common.by import By

    browser.get(rgb_server)
    body = lambda: browser.find_element(By.TAG_NAME, "body").text  # noqa: E731
    _wait(browser, lambda: "cifar10-srvae-small" in body() and "trained on cifar10-official-part" in body(),
          "the model")
    for src in _upload(browser, photo):
        pic = np.asarray(_picture(src)).astype(int)
        assert pic.std() > 10 and np.abs(pic[..., 0] - pic[..., 2]).mean() > 5  # not blank, not grey


def test_the_page_offers_the_shipped_models_and_switches_between_them(demo_run, photo):
    from selfvae.demo import DemoModels

    models = DemoModels(_demo(demo_run))
    assert models.names[0] == str(demo_run) and {"cifar10-srvae-small", "cifar10-vae-small"} <= set(models.names)
    rgb = models.get("cifar10-vae-small")
    assert "trained on cifar10-official-part" in rgb.describe()
    seen, superres, modes = rgb.image(str(photo), 0)
    assert superres is None and seen.shape[2] == 3 and np.abs(seen[..., 0].astype(int) - seen[..., 2]).mean() > 5
    with pytest.raises(SelfVAEError, match="not one of the models"):
        models.get("no-such-model")


@pytest.mark.slow
def test_bad_upload_in_a_real_browser_shows_a_message(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    fake = tmp_path / "notes.png"
    fake.write_bytes(b"%PDF-1.4 not really a picture")
    browser.get(server)
    upload = _wait(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"),
                   "the upload field")
    upload[0].send_keys(str(fake))
    body = lambda: browser.find_element(By.TAG_NAME, "body").text  # noqa: E731
    _wait(browser, lambda: "notes.png: not an image file" in body(), "the error message")
    assert "Traceback" not in body() and "File \"" not in body()
    # the samples tab works after an error
    tab = [b for b in browser.find_elements(By.XPATH, "//button[@role='tab']") if b.text.strip() == "Samples"]
    tab[0].click()
    _wait(browser, lambda: [b for b in browser.find_elements(By.ID, "sample-button") if b.is_displayed()],
          "the Samples tab").pop().click()
    src = _wait(browser, lambda: [i.get_attribute("src") for i in browser.find_elements(By.CSS_SELECTOR,
                                                                                         "#samples img")],
                "samples")[0]
    assert np.asarray(_picture(src)).std() > 10
