"""The pages meant for people (/docs and the model report), as headless Chromium renders them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from readiness import wait_for_ready

from predictq.redis_server import free_port
from shared.lifecycle import train_version
from shared.storage import LocalStorage
from shared.store import ModelStore
from shared.training import TrainingOptions

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_S = 60
PAGE_TIMEOUT_MS = 30_000


def chromium_path() -> str:
    """Debian's Chromium: skipped on a developer machine without it, required in CI."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "no Chromium browser here (make system-deps installs Debian's chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """`predictq serve` (gunicorn) on a data dir with a trained classifier, and one /predict call."""
    data_dir = tmp_path_factory.mktemp("browser")
    store = ModelStore(LocalStorage(data_dir))
    options = TrainingOptions(target="species", params={"n_estimators": 20})
    version = train_version(store, REPO / "data" / "penguins.csv", options)["version"]
    port = free_port()
    env = {**os.environ, "PREDICTQ_DATA_DIR": str(data_dir), "PREDICTQ_PORT": str(port), "PREDICTQ_API_WORKERS": "1"}
    log = open(data_dir / "api.log", "w")  # noqa: SIM115 - closed in teardown
    server = subprocess.Popen([sys.executable, "-m", "predictq.cli", "serve"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_ready(url, WAIT_S, process=server, log_path=data_dir / "api.log")
    except BaseException:
        server.kill()
        server.wait()
        log.close()
        raise
    row = {"island": "Biscoe", "bill_length_mm": 45.1, "bill_depth_mm": 14.5, "flipper_length_mm": 460,
           "body_mass_g": 4500, "sex": "female", "year": 2008}  # fmt: skip
    assert requests.post(f"{url}/predict", json={"instances": [row] * 4}, timeout=10).status_code == 200
    yield url, version
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(PAGE_TIMEOUT_MS)
    yield opened
    context.close()


def test_swagger_ui_lists_operations_and_the_models_features(served, page, tmp_path) -> None:
    """/docs renders Swagger UI with every operation, and /predict's example shows the model's features."""
    url, _ = served
    page.goto(f"{url}/docs")
    page.wait_for_selector(".opblock")
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    for path in ("/predict", "/jobs", "/jobs/{job_id}", "/retrain", "/models", "/models/{version}/activate"):
        assert any(text.replace("\u200b", "") == path for text in paths), paths
    page.locator(".opblock-post .opblock-summary-path", has_text="/predict").first.click()
    example = page.locator(".opblock.is-open .body-param__example, .opblock.is-open .microlight").first
    example.wait_for()
    text = example.inner_text()
    for feature in ("island", "bill_length_mm", "flipper_length_mm", "sex"):
        assert feature in text, text
    page.screenshot(path=str(tmp_path / "docs.png"), full_page=False)
    assert (tmp_path / "docs.png").stat().st_size > 10_000


def test_model_report_renders_its_plots(served, page, tmp_path) -> None:
    """The report's plots load as real images, with the metrics table and the traffic count."""
    url, version = served
    page.goto(f"{url}/models/{version}/report")
    page.wait_for_selector("#features-plot")
    images = page.evaluate("Array.from(document.images).map(i => [i.id, i.complete, i.naturalWidth])")
    assert [image_id for image_id, _, _ in images] == ["quality-plot", "features-plot"]
    assert all(complete and width > 300 for _, complete, width in images), images
    assert page.locator("#metrics tr").count() >= 3
    assert "4 row(s) so far" in page.inner_text("body")
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000
