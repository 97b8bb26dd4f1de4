"""Screenshots for the README's walk-through, taken in headless Chromium from a study's real MLflow UI.

    .venv/bin/python docs/make_screenshots.py runs/demo --model demo-tagger --out docs/img

Needs ``chromium`` and ``chromium-driver`` (Debian), the study's output folder and, for the registry page,
a model registered with ``nerlab select``. The same pages are checked by tests/dashboards/test_browser.py.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mlflow.tracking import MlflowClient
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from nerlab.platform.tracking import server as mlflow_server
from nerlab.platform.tracking.stores import resolve_study


def quiet(driver, training_mode: bool = False) -> None:
    for button in driver.find_elements(By.XPATH, "//button[@aria-label='Close']"):  # the assistant panel
        try:
            button.click()
        except Exception:  # noqa: BLE001
            pass
    if training_mode:
        for toggle in driver.find_elements(By.XPATH, "//*[normalize-space(text())='Model training']"):
            toggle.click()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", help="study output folder")
    ap.add_argument("--model", help="registered model name (for the registry page)")
    ap.add_argument("--out", default="docs/img")
    args = ap.parse_args()
    ref = resolve_study(args.study)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    proc, url = mlflow_server.start(ref.uri, None)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1500,900"):
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    wait = WebDriverWait(d, 90)
    try:
        d.get(f"{url}/#/experiments/{ref.experiment_id}/runs")
        expand = "button[data-component-id*='runnamecellrenderer']"
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, expand))
        quiet(d, training_mode=True)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, expand))[0].click()
        names = [r.info.run_name for r in MlflowClient(ref.uri).search_runs(
            [ref.experiment_id], f"tags.`mlflow.parentRunId` = '{ref.parent_run_id}'")]
        wait.until(lambda d: all(n in d.find_element(By.TAG_NAME, "body").text for n in names))
        time.sleep(1)
        d.save_screenshot(str(out / "ui-runs.png"))

        d.set_window_size(1500, 1350)  # the report's leaderboard and its first heatmap
        d.get(f"{url}/#/experiments/{ref.experiment_id}/runs/{ref.parent_run_id}/artifacts/report/report.html")
        frame = wait.until(lambda d: d.find_elements(By.TAG_NAME, "iframe"))[0]
        quiet(d)
        d.switch_to.frame(frame)
        wait.until(lambda d: d.execute_script(
            "return document.images.length > 0 && Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"))
        d.switch_to.default_content()
        time.sleep(1)
        d.save_screenshot(str(out / "ui-report.png"))

        d.set_window_size(1500, 900)
        if args.model:
            d.get(f"{url}/#/models/{args.model}")
            wait.until(lambda d: "champion" in d.find_element(By.TAG_NAME, "body").text)
            quiet(d)
            time.sleep(1)
            d.save_screenshot(str(out / "ui-model.png"))

        d.get((ref.folder / "report" / "report.html").as_uri())
        height = d.execute_script("return document.body.scrollHeight")
        d.set_window_size(1200, min(int(height) + 120, 4200))
        time.sleep(0.5)
        d.save_screenshot(str(out / "report.png"))
    finally:
        d.quit()
        mlflow_server.stop(proc)
    print("wrote", ", ".join(sorted(p.name for p in out.glob("*.png"))))


if __name__ == "__main__":
    main()
