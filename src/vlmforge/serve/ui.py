"""The web UI (Gradio): upload an image, chat about it, answers stream in.

Its requests go through the same batcher as the API, so UI users and API clients share batches.
Defaults follow Bunny's demo: temperature 0.2, top-p 0.7, max tokens 512.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from vlmforge.errors import VlmforgeError
from vlmforge.runtime import Conversation, SamplingParams
from vlmforge.serve.batcher import Batcher, Delta, Failed, QueueFull
from vlmforge.serve.engine import fit_context, served_name
from vlmforge.serve.guards import key_matches
from vlmforge.serve.settings import ServeSettings

# Plain-English questions of the kinds the shapes lab's models are trained on (world/phrasings.py), so that
# clicking one on a shapes-world image gets an answer rather than noise.
EXAMPLE_QUESTIONS = (
    "What color is the circle?",
    "What shape is the red object?",
    "How many shapes are there?",
    "Is there a blue square in the picture?",
    "Where is the green star?",
)


@dataclass
class UIDefaults:
    temperature: float = 0.2
    top_p: float = 0.7
    max_tokens: int = 512


def _conversation(turns: list[dict], image) -> Conversation:
    """The chat so far; the image belongs to the first user turn, as in single-image LLaVA chat."""
    messages = []
    for i, turn in enumerate(turns):
        content = [{"type": "text", "text": turn["content"]}]
        if i == 0 and image is not None:
            content.insert(0, {"type": "image"})
        messages.append({"role": turn["role"], "content": content})
    return Conversation(messages, [image] if image is not None else [])


def build_ui(batcher: Batcher, settings: ServeSettings | None = None, defaults: UIDefaults | None = None) -> gr.Blocks:
    settings = settings or ServeSettings()
    defaults = defaults or UIDefaults()
    name = served_name(batcher.engine, settings)

    async def respond(message: str, turns: list[dict], image, temperature: float, top_p: float, max_tokens: float):
        message = (message or "").strip()
        if not message:
            yield "", turns, turns
            return
        turns = [*turns, {"role": "user", "content": message}]
        params = SamplingParams(max_new_tokens=int(max_tokens), temperature=float(temperature), top_p=float(top_p))
        conversation = _conversation(turns, image)
        try:
            # the slider is an upper bound, cut to the room the conversation leaves in the context
            params = fit_context(batcher.engine, conversation, params, requested=False)
        except VlmforgeError as err:
            raise gr.Error(str(err)) from err
        try:
            job = batcher.submit(conversation, params, stream=True)
        except QueueFull as err:
            raise gr.Error(f"The server is busy ({err}); try again in a moment.") from err
        answer = {"role": "assistant", "content": ""}
        shown = [*turns, answer]
        yield "", shown, turns
        async for event in job.events():
            if isinstance(event, Delta):
                answer["content"] += event.text
                yield "", shown, turns
            elif isinstance(event, Failed):
                raise gr.Error("Generation failed; see the server log.")
        yield "", shown, [*turns, dict(answer)]

    with gr.Blocks(title=f"{name} · vlmforge chat") as ui:
        gr.Markdown(
            f"## Chat with {name}\nUpload an image, then ask about it. Changing the image starts a new chat.",
            elem_id="title",
        )
        turns = gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(
                    type="pil",
                    format="png",
                    label="Image",
                    sources=["upload", "clipboard"],
                    elem_id="image",
                    height=320,
                )
                with gr.Accordion("Generation settings", open=True):
                    temperature = gr.Slider(
                        0.0, 2.0, value=defaults.temperature, step=0.05, label="Temperature (0 = greedy)"
                    )
                    top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="Top-p")
                    max_tokens = gr.Slider(
                        1,
                        settings.max_tokens_cap,
                        value=min(defaults.max_tokens, settings.max_tokens_cap),
                        step=1,
                        label="Max new tokens",
                    )
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="Chat", height=420, elem_id="chat")
                question = gr.Textbox(
                    placeholder="Ask about the image and press Enter", show_label=False, elem_id="question"
                )
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    clear = gr.Button("Clear chat", elem_id="clear")
                gr.Examples([[q] for q in EXAMPLE_QUESTIONS], inputs=[question], label="Example questions")
        inputs = [question, turns, image, temperature, top_p, max_tokens]
        outputs = [question, chatbot, turns]
        send.click(respond, inputs, outputs)
        question.submit(respond, inputs, outputs)
        for event in (clear.click, image.change):
            event(lambda: ([], []), None, [chatbot, turns])
    return ui


def mount_ui(
    app, batcher: Batcher, settings: ServeSettings, path: str = "/ui", defaults: UIDefaults | None = None
) -> None:
    """Serve the UI inside the API's FastAPI app. With an API key set, the UI asks for it as the password."""
    auth = None
    if settings.api_key:

        def auth(_user: str, password: str) -> bool:
            return key_matches(password, settings.api_key)

    gr.mount_gradio_app(app, build_ui(batcher, settings, defaults), path=path, auth=auth)
