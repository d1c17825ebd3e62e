"""The OpenAI-compatible HTTP API: /v1/models, /v1/chat/completions (+ SSE streaming), /v1/images/generations
(models that draw), /health."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response, StreamingResponse

from vlmforge.errors import ContextLengthError, VlmforgeError
from vlmforge.runtime import Completion, Conversation, SamplingParams
from vlmforge.serve import protocol as p
from vlmforge.serve.batcher import Batcher, Delta, Failed, Job, QueueFull
from vlmforge.serve.continuous import make_batcher
from vlmforge.serve.drawing import add_image_routes
from vlmforge.serve.engine import TextEngine, fit_context, served_name
from vlmforge.serve.errors import APIError, install_error_handlers
from vlmforge.serve.guards import APIKeyGuard, BodySizeLimit
from vlmforge.serve.images import load_image
from vlmforge.serve.settings import ServeSettings
from vlmforge.serve.timings import StageTimings, TimingMiddleware

# Inline images up to this many base64 characters decode faster on the event loop than the hand-off to a thread
# and back; larger ones, and fetched or local files, decode in a thread so the loop stays responsive.
INLINE_DECODE_CHARS = 256 * 1024

ERRORS = {status: {"model": p.ErrorResponse} for status in (400, 401, 404, 413, 503)}


def sampling_params(req: p.ChatCompletionRequest, settings: ServeSettings) -> SamplingParams:
    """The request's sampling settings; ``max_new_tokens`` is the client's max_tokens, else the server's default
    (``vlmforge.serve.engine.fit_context`` then fits either to the model's context)."""
    max_tokens = (
        req.max_completion_tokens or req.max_tokens or min(settings.default_max_tokens, settings.max_tokens_cap)
    )
    if max_tokens > settings.max_tokens_cap:
        raise APIError(
            400,
            f"max_tokens is {max_tokens}; this server allows at most {settings.max_tokens_cap}",
            "max_tokens",
            "max_tokens_too_large",
        )
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > 4 or any(not s for s in stop):
        raise APIError(400, "stop takes at most 4 non-empty strings", "stop")
    temperature = 1.0 if req.temperature is None else req.temperature
    top_p = 1.0 if req.top_p is None else req.top_p
    return SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stop, seed=req.seed)


@contextmanager
def refused_as_400(param: str) -> Iterator[None]:
    """The model's refusal of a request's content (vlmforge's own errors) as an OpenAI-shaped 400."""
    try:
        yield
    except VlmforgeError as err:
        code = "context_length_exceeded" if isinstance(err, ContextLengthError) else "invalid_request"
        raise APIError(400, str(err), param, code) from err


def decode_inline(messages: list[p.ChatMessage]) -> bool:
    """Whether the request's images are small inline data URLs, cheap enough to decode on the event loop."""
    urls = [
        part.image_url.url
        for message in messages
        if isinstance(message.content, list)
        for part in message.content
        if isinstance(part, p.ImagePart)
    ]
    return all(url[:5].lower() == "data:" for url in urls) and sum(map(len, urls)) <= INLINE_DECODE_CHARS


def to_conversation(messages: list[p.ChatMessage], settings: ServeSettings) -> Conversation:
    """OpenAI messages -> the runtime's transformers-format conversation (images decoded, in order)."""
    out, images, chars = [], [], 0
    for i, message in enumerate(messages):
        role = "system" if message.role == "developer" else message.role
        parts = (
            [p.TextPart(type="text", text=message.content or "")]
            if not isinstance(message.content, list)
            else message.content
        )
        content = []
        for j, part in enumerate(parts):
            where = f"messages.{i}.content.{j}"
            if isinstance(part, p.TextPart):
                chars += len(part.text)
                content.append({"type": "text", "text": part.text})
                continue
            if role != "user":
                raise APIError(400, "images are accepted in user messages only", where)
            if len(images) >= settings.max_images:
                raise APIError(400, f"at most {settings.max_images} images per request", where, "too_many_images")
            images.append(load_image(part.image_url.url, settings, f"{where}.image_url.url"))
            content.append({"type": "image"})
        out.append({"role": role, "content": content})
    if chars > settings.max_input_chars:
        raise APIError(
            400,
            f"the messages hold {chars} characters of text; the limit is {settings.max_input_chars}",
            "messages",
            "context_length_exceeded",
        )
    return Conversation(out, images)


def completion_response(c: Completion, model: str) -> Response:
    """The chat.completion body (the schema of ``p.ChatCompletion``), serialised directly: FastAPI's generic
    encoder would walk a pydantic model field by field on every response."""
    body = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": c.text},
                "finish_reason": c.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": _usage(c),
    }
    return Response(json.dumps(body, ensure_ascii=False).encode(), media_type="application/json")


def _usage(c: Completion) -> dict:
    total = c.prompt_tokens + c.completion_tokens
    return {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens, "total_tokens": total}


def _chunk(cid: str, created: int, model: str, delta: dict, finish: str | None = None) -> str:
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    return f"data: {json.dumps(body)}\n\n"


async def _sse(job: Job, model: str, include_usage: bool) -> AsyncIterator[str]:
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    yield _chunk(cid, created, model, {"role": "assistant", "content": ""})
    async for event in job.events():
        if isinstance(event, Delta):
            yield _chunk(cid, created, model, {"content": event.text})
        elif isinstance(event, Failed):  # the status line is sent already: report in-band, as OpenAI does
            yield f"data: {json.dumps({'error': {'message': 'generation failed', 'type': 'server_error', 'param': None, 'code': 'internal_error'}})}\n\n"
        else:
            c = event.completion
            yield _chunk(cid, created, model, {}, c.finish_reason)
            if include_usage:
                body = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": _usage(c),
                }
                yield f"data: {json.dumps(body)}\n\n"
    yield "data: [DONE]\n\n"


def add_timing_routes(app: FastAPI, timings: StageTimings) -> None:
    @app.get("/timings")
    async def get_timings() -> dict:
        """Mean milliseconds per chat completion request in each stage, since the start or the last reset."""
        return timings.report()

    @app.delete("/timings")
    async def reset_timings() -> dict:
        timings.reset()
        return {"reset": True}


def build_api(
    engine: TextEngine, settings: ServeSettings, batcher: Batcher, timings: StageTimings | None = None
) -> FastAPI:
    model_name = served_name(engine, settings)
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        batcher.close()

    app = FastAPI(title="vlmforge", summary="OpenAI-compatible vision-language model server", lifespan=lifespan)
    install_error_handlers(app)
    v1 = APIRouter(prefix="/v1", responses=ERRORS)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_name, "waiting": batcher.waiting, "running": batcher.running}

    @v1.get("/models", response_model=p.ModelList)
    async def models() -> p.ModelList:
        return p.ModelList(data=[p.ModelCard(id=model_name, created=started)])

    @v1.post(
        "/chat/completions",
        response_model=None,
        responses={200: {"model": p.ChatCompletion, "content": {"text/event-stream": {}}}},
    )
    async def chat_completions(req: p.ChatCompletionRequest):
        if req.model != model_name:
            raise APIError(
                404,
                f"model '{req.model}' is not served here; this server serves '{model_name}'",
                "model",
                "model_not_found",
            )
        params = sampling_params(req, settings)
        requested = bool(req.max_completion_tokens or req.max_tokens)
        start = time.perf_counter()
        if decode_inline(req.messages):
            conversation = to_conversation(req.messages, settings)
        else:  # large images or fetches: keep the event loop free for other requests meanwhile
            conversation = await asyncio.to_thread(to_conversation, req.messages, settings)
        if timings:
            timings.add("images", time.perf_counter() - start)
        with refused_as_400("messages"):
            params = fit_context(engine, conversation, params, requested)
        try:
            job = batcher.submit(conversation, params, stream=bool(req.stream))
        except QueueFull as err:
            raise APIError(503, f"server busy: {err}; retry shortly", None, "queue_full", {"Retry-After": "1"}) from err
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                _sse(job, model_name, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        try:
            with refused_as_400("messages"):
                c = await job.result()
        except QueueFull as err:  # the server shut down while the request waited
            raise APIError(503, str(err), None, "shutting_down") from err
        start = time.perf_counter()
        if timings:
            timings.add("wakeup", start - job.done_at)
        response = completion_response(c, model_name)
        if timings:
            timings.add("respond", time.perf_counter() - start)
        return response

    add_image_routes(v1, engine, settings, model_name)
    if timings:
        add_timing_routes(app, timings)
    app.include_router(v1)
    app.openapi = lambda: _openapi(app)
    return app


def _openapi(app: FastAPI) -> dict:
    """The spec without FastAPI's 422 responses: validation errors come out as OpenAI-style 400s."""
    if app.openapi_schema is None:
        spec = get_openapi(title=app.title, version="1", summary=app.summary, routes=app.routes)
        for path in spec.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        app.openapi_schema = spec
    return app.openapi_schema


def create_app(
    engine: TextEngine, settings: ServeSettings | None = None, ui: bool = True, batcher: Batcher | None = None
):
    """The full ASGI app: API (+ the Gradio UI at /ui), behind the size limit and API-key guards."""
    settings = settings or ServeSettings()
    batcher = batcher or make_batcher(engine, settings)
    timings = None
    if settings.profile:
        timings = StageTimings()
        batcher.time_stages(timings)
    app = build_api(engine, settings, batcher, timings)
    if ui:
        from vlmforge.serve.ui import mount_ui

        mount_ui(app, batcher, settings, path="/ui")
    asgi = TimingMiddleware(app, timings) if timings else app
    return BodySizeLimit(APIKeyGuard(asgi, settings.api_key), settings.max_request_bytes)
