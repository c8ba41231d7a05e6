"""A real browser on the launched app's Explain section (ui/explain_view.py): a prediction, then Explain shows the
text's words highlighted by their Integrated Gradients attributions (the same numbers engine.serving.explain gives),
with the convergence delta and the cost measured on this model; Explain with no text is an error line in the section's
note that stays until the next Explain; a long explanation runs in its own queue, so a prediction clicked meanwhile is
answered before it. Screenshots: artifacts/explain_*.png."""

import re

import pytest

from _app_fixtures import app_runs_dir, client, launched_app  # noqa: F401,F811 - fixtures (browser: conftest)
from conftest import ROOT
from engine.data import BUNDLED
from engine.serving import explain
from engine.serving.predictor import shared_predictor

ART = ROOT / "artifacts"


def _shot(page, name):
    ART.mkdir(exist_ok=True)
    page.screenshot(path=str(ART / f"explain_{name}.png"), full_page=True)


def _spans(page) -> list[tuple[str, str]]:
    """(text, background colour) of each piece the HighlightedText shows."""
    return page.locator("#explain-words").evaluate(
        """el => [...el.querySelectorAll('.token')].map(s => [s.querySelector('.text').textContent,
                                                             s.style.backgroundColor])""")


def test_explain_highlights_the_words_and_never_blocks_a_prediction(browser, launched_app, app_runs_dir):  # noqa: F811
    model = str(app_runs_dir / "tiny")
    text = BUNDLED["bundled:bbc_news"][0]()["text"][11].split(". ")[0] + "."  # a real article's first sentence
    lm = shared_predictor().load(model)
    predicted = next(iter(shared_predictor().predict_text(model, text)))
    expected = explain.explain(lm, text, None, 20)  # what the page should show (same model, steps, label)
    articles = BUNDLED["bundled:bbc_news"][0]()["text"][12:60]
    # a text the model labels differently, so its answer is told apart from the one shown before
    other, other_label = next((t[:200], p) for t, p in ((t, next(iter(shared_predictor().predict_text(model, t[:200]))))
                                                       for t in articles[1:]) if p != predicted)

    page = browser.new_page()
    page.set_default_timeout(120_000)
    try:
        page.goto(launched_app)
        page.locator("#predict-model input").click()
        page.get_by_role("option").filter(has_text="tiny · accuracy").first.click()
        page.locator("#predict-examples").wait_for()  # the model is loaded: typing is not undone

        # Explain before any text: a visible error naming the fix, gone with the next action
        page.locator("#explain-button").click()
        page.locator("#explain-note").get_by_text("✗ text: empty; type or paste some text to explain").wait_for()

        page.locator("#predict-text textarea").fill(text)
        page.locator("#predict-button").click()
        page.wait_for_function("() => document.querySelector('#predict-label .output-class')?.innerText.trim()")
        assert page.locator("#predict-label .output-class").inner_text().strip() == predicted
        # after the prediction the cost line says how long an explanation takes here, before the click
        page.wait_for_function("() => /(about [0-9.]+|under 0.1) s here/.test((document.querySelector('#explain-cost')?.innerText || ''))")
        assert "forward+backward passes" in page.locator("#explain-cost").inner_text()

        page.locator("#explain-steps input[type=number]").fill("20")
        page.locator("#explain-steps input[type=number]").press("Enter")
        page.locator("#explain-button").click()
        page.locator("#explain-note").get_by_text("convergence delta").wait_for()
        note = page.locator("#explain-note").inner_text()
        assert f"explained: {predicted}" in note and "Integrated Gradients, 20 steps" in note
        delta = float(re.search(r"convergence delta (\S+),", note).group(1))
        assert abs(delta - expected.delta) < 1e-3 + 0.05 * abs(expected.delta)
        shown = _spans(page)
        assert "".join(t for t, _ in shown).split() == text.split()  # the whole text, word for word
        coloured = {t.strip() for t, bg in shown if t.strip() and bg}
        # the words the engine scores strongest are the ones the page paints
        strongest = max(expected.words, key=lambda ws: abs(ws[1]))[0]
        assert strongest in coloured and len(coloured) >= len(text.split()) // 3, (coloured, expected.words)
        top = sorted(expected.words, key=lambda ws: -ws[1])[0]
        if top[1] > 0:
            assert f"{top[0]} ({top[1]:+.3f})" in note  # 'Most toward' names the same word and number
        assert "✗" not in note  # the earlier error went with the next explanation
        _shot(page, "words")

        # 500 steps over a whole article take a while; a prediction clicked meanwhile is answered before the end
        page.locator("#explain-steps input[type=number]").fill("500")
        page.locator("#explain-steps input[type=number]").press("Enter")
        page.locator("#predict-text textarea").fill(articles[0])
        page.locator("#explain-button").click()
        page.locator("#predict-text textarea").fill(other)
        page.locator("#predict-button").click()
        page.wait_for_function("want => document.querySelector('#predict-label .output-class')?.innerText.trim() "
                               "=== want", arg=other_label)
        assert "500 steps" not in page.locator("#explain-note").inner_text()  # still explaining
        page.locator("#explain-note").get_by_text("500 steps").wait_for(timeout=300_000)
        _shot(page, "after_long")
    finally:
        page.close()


def test_the_explain_api_answers_gradio_client(client, app_runs_dir):  # noqa: F811
    """/explain through gradio_client: the HighlightedText value (pieces with scores in -1..1) and the note; a bad
    label is an error the client raises, and the app goes on serving."""
    model = str(app_runs_dir / "tiny")
    text = "Oil prices fell back from their highs as markets calmed."
    words, note = client.predict(text, model, "main", 8, "sports", api_name="/explain")
    pieces = [(p["token"], p["class_or_confidence"]) for p in words]
    assert "".join(t for t, _ in pieces) == text
    scores = [s for _, s in pieces if s is not None]
    assert len(scores) == len(text.split()) and max(abs(s) for s in scores) == 1.0  # scaled by the largest
    assert "explained: sports" in note and "8 steps" in note
    with pytest.raises(Exception, match="explain_label: 'weather' is not a label of this model"):
        client.predict(text, model, "main", 8, "weather", api_name="/explain")
    assert client.predict(text, model, "main", 8, "", api_name="/explain")[1].startswith("explained: ")
