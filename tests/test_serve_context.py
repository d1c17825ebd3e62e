"""A request's prompt and answer must fit the model's context: refused with OpenAI's 400, or its default answer
length cut to the room left, with either batcher, streamed or not, and in `vlmforge chat`."""

import httpx
import pytest
from PIL import Image

from serve_support import chatty_llava, image, user_message, vlm, words_for  # noqa: F401, F811
from vlmforge.chat import DEFAULT_MAX_TOKENS, LocalChat, Settings, Turn
from vlmforge.context import answer_budget
from vlmforge.errors import ContextLengthError
from vlmforge.runtime import Conversation
from vlmforge.serve.app import create_app
from vlmforge.serve.runner import ServerThread
from vlmforge.serve.settings import ServeSettings


def test_the_budget_is_the_request_the_default_cut_to_fit_or_a_refusal_naming_the_numbers():
    assert answer_budget(100, 40, 60, 512) == 60
    assert answer_budget(100, 40, None, 512) == 60
    assert answer_budget(100, 40, None, 16) == 16
    assert answer_budget(None, 4000, 60, 512) == 60
    with pytest.raises(ContextLengthError, match="maximum context length is 100 tokens; the prompt has 40 .* 61 more"):
        answer_budget(100, 40, 61, 512)
    for prompt in (100, 130):
        with pytest.raises(ContextLengthError, match=f"maximum context length is 100 tokens; the prompt has {prompt}"):
            answer_budget(100, prompt, None, 512)


def test_the_counted_prompt_length_is_the_processors(vlm):  # noqa: F811
    two_turns = Conversation(
        [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "a red square"}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and this?"}]},
        ],
        [image((200, 0, 0)), image((0, 0, 200), (90, 20))],
    )
    for conversation in (
        Conversation.single_turn("red " * 50),
        Conversation.single_turn("hi", [image((1, 2, 3))]),
        two_turns,
    ):
        assert vlm.prompt_length(conversation) == vlm.prompt_tokens([conversation])[0]


def test_a_processor_whose_image_count_depends_on_the_image_is_counted_from_its_pixels(vlm):  # noqa: F811
    """The tiny LLaVA's images all become one size, so only their number is read; given an image processor that
    keeps each image's aspect ratio, the count processes the images and still matches the processor's."""
    import copy

    from transformers import CLIPImageProcessor

    from vlmforge.runtime import VisionLanguageModel

    assert not vlm.counts_pixels and vlm.image_tokens == 16
    processor = copy.deepcopy(vlm.processor)
    processor.image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, do_center_crop=False)
    varied = VisionLanguageModel(vlm.model, processor)
    assert varied.counts_pixels and varied.image_tokens is None
    wide, tall = (Conversation.single_turn("hi", [image((1, 2, 3), size)]) for size in ((90, 30), (30, 40)))
    assert varied.prompt_length(wide) == varied.prompt_tokens([wide])[0] > varied.prompt_length(tall)
    assert varied.prompt_length(tall) == varied.prompt_tokens([tall])[0]


def test_counting_a_prompt_leaves_the_workers_tokenizer_alone(vlm):  # noqa: F811
    """The server counts on its event loop while the worker tokenizes padded batches: a count that switched the
    shared tokenizer's padding off mid-batch would break the worker's batch."""
    vlm.prepare([Conversation.single_turn("a"), Conversation.single_turn("a longer one")])
    padding = vlm.tokenizer.backend_tokenizer.padding
    assert padding is not None
    vlm.prompt_length(Conversation.single_turn("hi", [image((1, 2, 3))]))
    assert vlm.tokenizer.backend_tokenizer.padding == padding


@pytest.fixture(scope="module", params=["continuous", "dynamic"])
def server(vlm, request):  # noqa: F811
    settings = ServeSettings(batching=request.param, default_max_tokens=512, max_tokens_cap=2048)
    with ServerThread(create_app(vlm, settings, ui=False)) as running:
        yield running


def _post(server, vlm, text: str, img: Image.Image, **extra) -> httpx.Response:  # noqa: F811
    body = {"model": vlm.name, "messages": [user_message(text, img)], "temperature": 0, **extra}
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_that_fills_the_context_is_refused_with_both_numbers(server, vlm, stream):  # noqa: F811
    red = image((220, 30, 30))
    text = words_for(vlm, 0, red)
    for extra in ({}, {"max_tokens": 4}):
        reply = _post(server, vlm, text, red, stream=stream, **extra)
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
        assert (
            f"maximum context length is {vlm.context} tokens; the prompt has {vlm.context} tokens" in error["message"]
        )


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_and_max_tokens_past_the_context_are_refused(server, vlm, stream):  # noqa: F811
    red = image((220, 30, 30))
    text = words_for(vlm, 5, red)
    reply = _post(server, vlm, text, red, stream=stream, max_tokens=6)
    assert reply.status_code == 400, reply.text
    message = reply.json()["error"]["message"]
    assert f"the prompt has {vlm.context - 5} tokens and max_tokens asks for 6 more" in message
    fits = _post(server, vlm, text, red, max_tokens=5)
    assert fits.status_code == 200, fits.text
    assert fits.json()["usage"]["completion_tokens"] <= 5


def test_without_max_tokens_the_answer_stops_where_the_context_ends(server, vlm):  # noqa: F811
    red = image((220, 30, 30))
    reply = _post(server, vlm, words_for(vlm, 3, red), red)
    assert reply.status_code == 200, reply.text
    usage, choice = reply.json()["usage"], reply.json()["choices"][0]
    assert usage["prompt_tokens"] == vlm.context - 3
    assert usage["completion_tokens"] <= 3
    assert choice["finish_reason"] == "length" or usage["completion_tokens"] < 3


def test_local_chat_cuts_its_default_and_refuses_a_max_tokens_past_the_context(vlm, chatty_llava):  # noqa: F811
    red = image((220, 30, 30))
    text = words_for(vlm, 3, red)
    chat = LocalChat(str(chatty_llava))
    seen = []
    stream = chat.vlm.stream
    chat.vlm.stream = lambda conversations, params: (seen.append(params.max_new_tokens), stream(conversations, params))[
        1
    ]
    "".join(chat.stream([Turn("user", text, [red])], Settings()))
    assert seen == [3] and DEFAULT_MAX_TOKENS > 3
    with pytest.raises(ContextLengthError, match="max_tokens asks for 4 more"):
        "".join(chat.stream([Turn("user", text, [red])], Settings(max_tokens=4)))


def test_the_repl_reports_a_refused_question_and_goes_on():
    import io

    from vlmforge.chat import repl

    class Backend:
        asked: list = []

        def stream(self, turns, settings):
            self.asked.append([t.text for t in turns])
            if turns[-1].text == "long":
                raise ContextLengthError("This model's maximum context length is 8 tokens; the prompt has 9 tokens")
            yield "ok"

    out = io.StringIO()
    repl(Backend(), Settings(), [], lines=io.StringIO("long\nshort\n"), out=out)
    assert Backend.asked == [["long"], ["short"]]  # the refused question left the history
    assert out.getvalue() == "ok\n"
