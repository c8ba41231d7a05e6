"""A real browser (Playwright driving Debian Chromium) on the launched app: pick the session's model, type text,
see the label; upload a file and download the predictions file."""

import pandas as pd

from _app_fixtures import app_runs_dir, launched_app  # noqa: F401 - fixtures (browser: conftest)
from engine.data import BUNDLED
from engine.predict import shared_predictor


def test_pick_model_type_text_see_label_then_file_round_trip(browser, launched_app, app_runs_dir, tmp_path):
    model = str(app_runs_dir / "tiny")
    texts = BUNDLED["bundled:bbc_news"][0]()["text"][7::300]  # 8 real articles
    expected = [next(iter(p)) for p in shared_predictor().predict(model, texts)]

    page = browser.new_page()
    page.set_default_timeout(90_000)
    try:
        page.goto(launched_app)
        page.locator("#predict-model input").click()
        page.get_by_role("option").filter(has_text="tiny · accuracy").first.click()
        page.locator("#predict-text textarea").fill(texts[0])
        page.locator("#predict-button").click()
        label = page.locator("#predict-label .output-class")
        label.wait_for()
        page.wait_for_function("e => e.innerText.trim().length > 0", arg=label.element_handle())
        assert label.inner_text().strip() == expected[0]
        assert "%" in page.locator("#predict-label").inner_text()  # the probabilities are shown too

        src = tmp_path / "articles.csv"
        pd.DataFrame({"text": texts}).to_csv(src, index=False)
        page.get_by_text("Batch: classify a file").click()
        page.locator("#predict-file-in input[type=file]").set_input_files(str(src))
        page.locator("#predict-file-in").get_by_text("articles.csv").wait_for()  # upload finished
        page.locator("#predict-file-button").click()
        link = page.locator("#predict-file-out a").first
        link.wait_for()
        with page.expect_download() as download:
            link.click()
        assert download.value.suggested_filename == "articles.predictions.csv"
        out = pd.read_csv(download.value.path())
        assert out["predicted_label"].tolist() == expected and list(out.columns) == ["text", "predicted_label", "score"]
        assert page.locator("#predict-file-note").inner_text().startswith("8 rows classified")
    finally:
        page.close()
