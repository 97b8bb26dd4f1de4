"""End to end in a real headless Chromium against a real ``mlflow server`` on 127.0.0.1.

The study's runs page lists its trial runs and their logged models, the report attached to the study's run renders in the MLflow
UI with its heatmap image loaded, and the registry shows the champion. Screenshots go to the test's
folder, and also to ``$NERLAB_SCREENSHOTS`` when set. (The README's screenshots of the demo study come
from ``docs/make_screenshots.py``, which visits the same pages.)

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); skipped without them.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs chromium and chromedriver (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1500,950", "--lang=en-US"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)  # no Selenium Manager download
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def mlflow_ui(study, tmp_path_factory):
    from nerlab.platform.tracking import server as mlflow_server

    log = tmp_path_factory.mktemp("ui") / "mlflow-server.log"
    proc, url = mlflow_server.start(study.uri, None, log_file=log)
    assert url.startswith("http://127.0.0.1:")
    yield url
    mlflow_server.stop(proc)


def shot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    if os.environ.get("NERLAB_SCREENSHOTS"):
        dest = Path(os.environ["NERLAB_SCREENSHOTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest / name)
    return path


def quiet_ui(driver, training_mode: bool = False) -> None:
    """Close the MLflow assistant panel; switch the sidebar to 'Model training' if asked."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.XPATH, "//button[@aria-label='Close']"):
        try:
            button.click()
        except Exception:  # noqa: BLE001 (a panel that closed itself meanwhile)
            pass
    for toggle in driver.find_elements(By.XPATH, "//*[normalize-space(text())='Model training']") * training_mode:
        try:
            toggle.click()
        except Exception:  # noqa: BLE001
            pass


def body_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def test_experiment_page_lists_the_trial_runs(study, mlflow_ui, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 90)
    browser.get(f"{mlflow_ui}/#/experiments/{study.experiment_id}/runs")
    expand = "button[data-component-id*='runnamecellrenderer']"  # the +/- beside a parent run's name
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, expand))
    quiet_ui(browser, training_mode=True)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, expand))[0].click()
    names = [r.info.run_name for r in study.trial_runs()]
    assert len(names) == 4
    wait.until(lambda d: all(n in body_text(d) for n in names))
    text = body_text(browser)
    assert "dash" in text and "5 matching runs" in text
    shot(browser, tmp_path, "ui-runs.png")


def test_a_trial_run_shows_its_logged_model(study, mlflow_ui, browser, tmp_path):
    """The trial's MLflow Model (``tagger``, logged by its rank 0) shows in the runs table's Models column
    and on the run's page, whose link leads to the logged model."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from nerlab.models.names import PYFUNC_MODEL

    wait = WebDriverWait(browser, 90)
    run = sorted(study.trial_runs(), key=lambda r: r.info.run_name)[0]
    browser.get(f"{mlflow_ui}/#/experiments/{study.experiment_id}/runs")
    expand = "button[data-component-id*='runnamecellrenderer']"
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, expand))
    quiet_ui(browser, training_mode=True)
    # ag-grid: a row's cells carry the run id (row-id) and the column (col-id)
    cell = f"//*[@row-id='{run.info.run_id}']//*[@col-id='attributes.`Models`']"
    try:  # the parent run may still be expanded from an earlier visit (the UI remembers)
        WebDriverWait(browser, 5).until(lambda d: d.find_elements(By.XPATH, cell))
    except Exception:  # noqa: BLE001
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, expand))[0].click()
    wait.until(lambda d: d.find_elements(By.XPATH, cell) and d.find_element(By.XPATH, cell).text.strip())
    assert browser.find_element(By.XPATH, cell).text.strip() == PYFUNC_MODEL
    shot(browser, tmp_path, "ui-runs-models.png")

    browser.get(f"{mlflow_ui}/#/experiments/{study.experiment_id}/runs/{run.info.run_id}")
    wait.until(lambda d: "Logged models" in body_text(d))
    quiet_ui(browser)
    link = wait.until(lambda d: d.find_elements(By.XPATH, f"//a[normalize-space(.)='{PYFUNC_MODEL}']"))[0]
    (model_id,) = [m.model_id for m in study.client().search_logged_models([study.experiment_id])
                   if m.source_run_id == run.info.run_id and m.name == PYFUNC_MODEL]
    assert model_id in link.get_attribute("href")
    shot(browser, tmp_path, "ui-trial-run.png")


def test_report_renders_in_the_mlflow_ui_with_its_heatmap(study, mlflow_ui, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 90)
    browser.get(f"{mlflow_ui}/#/experiments/{study.experiment_id}/runs/{study.parent_run_id}"
                f"/artifacts/report/report.html")
    frame = wait.until(lambda d: d.find_elements(By.TAG_NAME, "iframe"))[0]
    quiet_ui(browser)
    for name in ("heatmap_lambda-5.png", "per_type_f1.png", "learning_curves.png", "report.html"):
        assert name in body_text(browser)  # the artifact tree of the study's run
    browser.switch_to.frame(frame)
    try:
        img = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "img#heatmap-5"))[0]
        wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img))
        width, height = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img)
        assert width > 200 and height > 100
        assert browser.find_element(By.TAG_NAME, "h1").text == "Study report: dash"
        rows = browser.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")
        assert len(rows) == 2 and "tiny:2x32" in rows[0].text
        loaded = browser.execute_script(
            "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        assert loaded, "an image of the report did not load"
    finally:
        browser.switch_to.default_content()
    time.sleep(0.5)
    shot(browser, tmp_path, "ui-report.png")


def test_registry_shows_the_champion(study, champion, mlflow_ui, browser, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    answer, name = champion
    browser.get(f"{mlflow_ui}/#/models/{name}")
    WebDriverWait(browser, 90).until(lambda d: "champion" in body_text(d))
    quiet_ui(browser)
    text = body_text(browser)
    assert name in text and f"Version {answer['registered']['version']}" in text
    assert answer["choice"]["config"] in text
    shot(browser, tmp_path, "ui-model.png")


def test_report_page_on_its_own(study, browser, tmp_path):
    """The report as a plain page (file://): every figure loads; a full-page screenshot for the docs."""
    from selenium.webdriver.common.by import By

    browser.get((study.out / "report" / "report.html").as_uri())
    assert browser.execute_script("return document.images.length") >= 4
    assert browser.execute_script("return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1200, min(int(height) + 120, 4000))
    assert "Leaderboard" in browser.find_element(By.TAG_NAME, "body").text
    shot(browser, tmp_path, "report.png")
    browser.set_window_size(1500, 950)
