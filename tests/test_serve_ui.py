"""The web UI in headless Chromium: upload an image, ask, and see the model's answer stream in."""

from pathlib import Path

import pytest

from serve_support import chatty_llava, image, vlm  # noqa: F401, F811
from vlmforge.runtime import Conversation, SamplingParams
from vlmforge.serve.app import create_app
from vlmforge.serve.runner import ServerThread
from vlmforge.serve.settings import ServeSettings

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path("/tmp/vlmforge-ui.png")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium); no browser is ever downloaded",
)


def _set_number(page, label: str, value: str) -> None:
    box = page.get_by_label(f"number input for {label}")
    box.fill(value)
    box.press("Enter")


def test_upload_ask_and_see_the_answer(vlm, tmp_path):  # noqa: F811
    sync_api = pytest.importorskip("playwright.sync_api")
    red = image((220, 30, 30), (40, 30))
    path = tmp_path / "red.png"
    red.save(path)
    question = "what colour is the shape?"
    expected = vlm.generate([Conversation.single_turn(question, [red])], SamplingParams(max_new_tokens=12))[0].text
    assert expected

    app = create_app(vlm, ServeSettings(max_tokens_cap=64), ui=True)
    with ServerThread(app) as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(server.url + "/ui/")
            assert f"Chat with {vlm.name}" in page.locator("#title").inner_text(timeout=20_000)
            page.locator("#image input[type=file]").set_input_files(str(path))
            page.locator("#image img").first.wait_for(timeout=20_000)  # uploaded and previewed
            _set_number(page, "Temperature (0 = greedy)", "0")  # greedy, to compare with the runtime
            _set_number(page, "Max new tokens", "12")
            page.locator("#question textarea").fill(question)
            page.locator("#send").click()
            bot = page.locator("#chat .message.bot").last
            sync_api.expect(bot).to_have_text(expected, timeout=30_000)
            assert page.locator("#chat .message.user").last.inner_text().strip() == question
            page.screenshot(path=str(SCREENSHOT))
        finally:
            browser.close()
