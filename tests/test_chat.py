"""`vlmforge chat`: one question, the REPL, and the same answers through a running server."""

import io

import pytest

from serve_support import chatty_llava, image, vlm  # noqa: F401, F811
from vlmforge.chat import LocalChat, Settings, repl
from vlmforge.cli import main
from vlmforge.runtime import Conversation, SamplingParams
from vlmforge.serve.app import create_app
from vlmforge.serve.runner import ServerThread
from vlmforge.serve.settings import ServeSettings

QUESTION = "what colour is the shape?"


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat") / "shape.png"
    image((30, 160, 220), (36, 28)).save(path)
    return path


def _expected(vlm, picture):  # noqa: F811
    from PIL import Image

    with Image.open(picture) as img:
        conversation = Conversation.single_turn(QUESTION, [img.convert("RGB")])
    return vlm.generate([conversation], SamplingParams(max_new_tokens=10))[0].text


def test_one_question_locally_and_via_server_print_the_runtime_answer(vlm, chatty_llava, picture, capsys):  # noqa: F811
    expected = _expected(vlm, picture)
    assert expected
    assert main(["chat", "--model", str(chatty_llava), "--image", str(picture), "--max-tokens", "10", QUESTION]) == 0
    local = capsys.readouterr().out
    with ServerThread(create_app(vlm, ServeSettings(api_key="secret"), ui=False)) as server:
        assert (
            main(
                [
                    "chat",
                    "--server",
                    server.url,
                    "--api-key",
                    "secret",
                    "--image",
                    str(picture),
                    "--max-tokens",
                    "10",
                    QUESTION,
                ]
            )
            == 0
        )
        remote = capsys.readouterr().out
        assert main(["chat", "--server", server.url, "--api-key", "wrong", QUESTION]) == 1
        assert "API key" in capsys.readouterr().err
    assert local == remote == expected + "\n"


def test_repl_keeps_history_attaches_images_and_resets(vlm, chatty_llava, picture, monkeypatch):  # noqa: F811
    backend = LocalChat(str(chatty_llava))
    seen = []
    stream = backend.stream
    monkeypatch.setattr(
        backend,
        "stream",
        lambda turns, s: (seen.append([(t.role, t.text, len(t.images)) for t in turns]), stream(turns, s))[1],
    )
    lines = io.StringIO(f"{QUESTION}\n\n/image {picture}\nand now?\n/image /no/such.png\n/reset\nhello\n")
    out = io.StringIO()
    repl(backend, Settings(max_tokens=10), [], lines=lines, out=out)
    first, second, third = seen
    assert first == [("user", QUESTION, 0)]
    assert [t[:1] + t[2:] for t in second] == [("user", 0), ("assistant", 0), ("user", 1)]
    assert second[2][1] == "and now?"
    assert third == [("user", "hello", 0)]  # /reset dropped the history
    printed = out.getvalue().splitlines()
    assert len(printed) == 3
    alone = vlm.generate([Conversation.single_turn(QUESTION)], SamplingParams(max_new_tokens=10))[0].text
    assert printed[0] == alone


def test_unreadable_image_is_a_one_line_error(chatty_llava, tmp_path, capsys):  # noqa: F811
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["chat", "--model", str(chatty_llava), "--image", str(bad), "hi"]) == 1
    assert str(bad) in capsys.readouterr().err
