"""The OpenAI wire format, as pydantic models: what clients send and what the server answers."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

TORCH_SEED_MIN, TORCH_SEED_MAX = -(2**63), 2**64 - 1  # the range torch.manual_seed accepts


class _Request(BaseModel):
    # Unknown fields are ignored (clients send extras such as `user`), as OpenAI and vLLM do.
    model_config = ConfigDict(extra="ignore")


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ImageURL(_Request):
    url: str = Field(description="data:image/...;base64,... (http(s) and file:// only when the server allows them)")
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Request):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(_Request):
    include_usage: bool = False


class ChatCompletionRequest(_Request):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy; default 1")
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = Field(None, description="up to 4 strings that end the answer")
    seed: int | None = Field(None, ge=TORCH_SEED_MIN, le=TORCH_SEED_MAX)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(1, ge=1, le=1, description="only 1 is supported")


class ImageGenerationRequest(_Request):
    """OpenAI's images request; ``cfg``, ``temperature``, ``top_k``, ``top_p`` and ``seed`` are vlmforge's own
    (a unified model's sampling, see docs/unix.md)."""

    prompt: str = Field(min_length=1)
    model: str | None = Field(None, description="the served model's id; default: the served model")
    n: int = Field(1, ge=1, description="images to draw, in one batch; at most the server's --max-generated-images")
    size: str | None = Field(None, description="'auto' or the model's own 'WIDTHxHEIGHT'; models draw one size")
    response_format: Literal["b64_json", "url"] | None = Field(None, description="b64_json only (no URLs)")
    cfg: float = Field(3.0, ge=0, description="guidance scale: 0 unconditional, 1 conditional only")
    temperature: float = Field(1.0, ge=0, description="0 takes the most likely code at every step")
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=TORCH_SEED_MIN, le=TORCH_SEED_MAX)


class GeneratedImage(BaseModel):
    b64_json: str
    revised_prompt: None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[GeneratedImage]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "vlmforge"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail
