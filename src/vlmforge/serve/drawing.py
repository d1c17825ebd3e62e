"""``POST /v1/images/generations`` in OpenAI's shape, for a served model that draws (a unified, Uni-X model).

A request's ``n`` images are drawn in one batch with classifier-free guidance (its conditional and unconditional
rows together) and come back as base64 PNGs. Drawing takes the model's lock, so it waits for a running chat batch
and chat batches wait for it; requests are not batched with each other.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from vlmforge.errors import ContextLengthError, VlmforgeError
from vlmforge.serve import protocol as p
from vlmforge.serve.errors import APIError
from vlmforge.serve.settings import ServeSettings


def _png_base64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _check(req: p.ImageGenerationRequest, engine, settings: ServeSettings, model_name: str) -> None:
    if req.model is not None and req.model != model_name:
        raise APIError(
            404,
            f"model '{req.model}' is not served here; this server serves '{model_name}'",
            "model",
            "model_not_found",
        )
    if not getattr(engine, "draws_images", False):
        raise APIError(  # 404 as for an unknown model: this server has no model that draws
            404,
            f"model '{model_name}' cannot draw images: only unified (Uni-X) models do (docs/unix.md)",
            "model",
            "model_cannot_draw",
        )
    if req.n > settings.max_generated_images:
        raise APIError(
            400, f"n is {req.n}; this server draws at most {settings.max_generated_images}", "n", "n_too_large"
        )
    if req.response_format == "url":
        raise APIError(400, "response_format 'url' is not supported: use b64_json", "response_format")
    if req.size not in (None, "auto"):
        width, height = engine.image_size
        if req.size != f"{width}x{height}":
            raise APIError(400, f"size must be 'auto' or '{width}x{height}', this model's only size", "size")


def add_image_routes(router: APIRouter, engine, settings: ServeSettings, model_name: str) -> None:
    @router.post("/images/generations", response_model=p.ImagesResponse)
    async def images_generations(req: p.ImageGenerationRequest) -> JSONResponse:
        from vlmforge.models.unified.generation import ImageSampling

        _check(req, engine, settings, model_name)
        sampling = ImageSampling(req.cfg, req.temperature, req.top_k, req.top_p, req.seed)
        try:
            images = await asyncio.to_thread(engine.generate_images, [req.prompt] * req.n, sampling)
        except VlmforgeError as err:  # a prompt too long for the context or holding image tokens (the fields
            # the sampler also checks are checked by the request's schema first)
            code = "context_length_exceeded" if isinstance(err, ContextLengthError) else "invalid_request"
            raise APIError(400, str(err), "prompt", code) from err
        body = {"created": int(time.time()), "data": [{"b64_json": _png_base64(im), "revised_prompt": None}
                                                      for im in images]}  # fmt: skip
        return JSONResponse(body)
