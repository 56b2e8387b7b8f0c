"""The app in a real headless Chromium (Debian's, driven by Playwright): upload, caption, generate, see results.

Screenshots land in artifacts/browser/ (kept by CI as test artifacts; README's screenshot comes from here).
"""

from __future__ import annotations

import io
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image

from triptych.apps.benchmarks.load import judge_generated
from triptych.world import caption, render, sample_scene

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "browser"
FLAGS = [  # no GPU, no sandbox as root, and no background calls to the (closed) network
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if CHROMIUM is None:  # an environment problem, not a skip: .ci/run installs Debian's chromium
    raise RuntimeError("chromium is not installed: apt-get install chromium (the .ci/run script does)")


@pytest.fixture(scope="module")
def page(app_url: str):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(app_url)
        page.get_by_text("one encoder, three jobs").wait_for()
        yield page
        browser.close()


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).filter(visible=True).first.click()


def test_page_names_the_world_and_the_weights(page) -> None:
    assert page.get_by_text("know only the shapes world").first.is_visible()
    _tab(page, "About")
    about = page.locator("#about")
    about.wait_for()
    assert "shapes" in about.inner_text() and "cpu" in about.inner_text()
    page.screenshot(path=str(SHOTS / "about.png"))


def test_classify_in_the_browser(page, tmp_path) -> None:
    scene = sample_scene(random.Random(7), num_objects=1)
    path = tmp_path / "classify.png"
    render(scene).save(path)
    _tab(page, "Classify")
    page.locator("#classify-image input[type=file]").set_input_files(str(path))
    page.get_by_role("button", name="Classify", exact=True).click()
    obj = scene.objects[0]
    top = page.locator("#classify-result .output-class")  # the Label's heading: its top label, not any of ten
    top.wait_for()
    page.wait_for_function(
        "([el, text]) => el.textContent.trim() === text", arg=[top.element_handle(), f"a {obj.color} {obj.shape}"]
    )
    page.screenshot(path=str(SHOTS / "classify.png"))


def test_upload_and_caption(page, tmp_path) -> None:
    scene = sample_scene(random.Random(11))
    path = tmp_path / "caption.png"
    render(scene).save(path)
    _tab(page, "Caption & Ask")
    page.locator("#caption-image input[type=file]").set_input_files(str(path))
    page.locator("#caption-image img").first.wait_for()  # the upload is shown
    page.locator("#caption-button").click()
    box = page.locator("#caption-text textarea")
    page.wait_for_function(
        "([el, text]) => el.value === text", arg=[box.element_handle(), caption(scene)], timeout=120_000
    )
    page.locator("#ask-button").click()
    expected = ("one", "two", "three")[len(scene.objects) - 1]
    answer = page.locator("#answer-text textarea")
    page.wait_for_function("([el, text]) => el.value === text", arg=[answer.element_handle(), expected])
    page.screenshot(path=str(SHOTS / "caption.png"))


def test_generate_shows_a_gallery(page) -> None:
    _tab(page, "Generate")
    prompt = page.locator("#prompt textarea")
    prompt.fill("a large red circle in the center")
    page.locator("#generate-button").click()
    images = page.locator("#generate-gallery img")
    page.wait_for_function("(n) => document.querySelectorAll('#generate-gallery img').length >= n", arg=4)
    page.screenshot(path=str(SHOTS / "generate.png"))
    shown = []
    for i in range(4):
        src = images.nth(i).get_attribute("src")
        assert src and src.startswith("http")  # served by the app, not a data URL or a local path
        shown.append(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"))
    assert all(image.size == (64, 64) for image in shown)
    assert judge_generated(shown, "red", "circle") is None  # read back: objects, mostly the one asked for


def test_variations_and_interpolation_tab(page, tmp_path) -> None:
    path = tmp_path / "variations.png"
    render(sample_scene(random.Random(13), num_objects=1)).save(path)
    _tab(page, "Variations & Interpolate")
    page.locator("#variations-image input[type=file]").set_input_files(str(path))
    page.locator("#variations-image img").first.wait_for()
    page.get_by_role("button", name="Variations of the image").click()
    page.wait_for_function("(n) => document.querySelectorAll('#variations-gallery img').length >= n", arg=4)
    first = page.locator("#variations-gallery img").first.get_attribute("src")
    page.get_by_role("button", name="Interpolate").click()
    page.wait_for_function(  # the gallery is replaced by the blend's images
        "(old) => { const im = document.querySelector('#variations-gallery img'); return im && im.src !== old; }",
        arg=first,
    )
    page.screenshot(path=str(SHOTS / "variations.png"))
