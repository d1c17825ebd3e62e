"""Server settings: limits, access control and batching knobs, shared by `vlmforge serve` and `vlmforge ui`."""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from vlmforge.errors import ConfigError

API_KEY_ENV = "VLMFORGE_API_KEY"
SERVED_NAME_HELP = (
    "model id clients send and /v1/models and the web UI show (default: the run's name: RUN for RUN/STAGE/final "
    "of `vlmforge train`, else the model folder's name)"
)
MAX_LENGTH_RATIO = 4.0


def length_ratio(value: float) -> float:
    """``--max-length-ratio`` as dynamic batching applies it: the longest budget in a batch is at most this many times
    its shortest; 0 and 1 both allow equal budgets only, ``inf`` any budgets. Raises ConfigError when negative."""
    if not value >= 0:  # also refuses NaN, which every comparison would let through
        raise ConfigError(f"--max-length-ratio must be 0 or more (inf: no bound), got {value}")
    return max(1.0, float(value))


@dataclass
class ServeSettings:
    api_key: str | None = None
    served_model_name: str | None = None  # defaults to the model's run name (vlmforge.runtime.run_name)
    batching: str | None = None  # "continuous" or "dynamic"; None: continuous where the model supports it
    max_batch_size: int = 8
    batch_window_ms: float = 10.0
    max_length_ratio: float = MAX_LENGTH_RATIO  # dynamic batching: longest max_tokens in a batch / its shortest
    max_queue: int = 64  # requests waiting for a batch; more are refused with 503
    max_request_bytes: int = 20 * 2**20
    max_image_bytes: int = 10 * 2**20
    max_image_pixels: int = 4096 * 4096  # decompression-bomb guard, checked before decoding pixels
    max_images: int = 8  # per request
    max_generated_images: int = 8  # n of one /v1/images/generations request (2n rows run in one CFG batch)
    max_input_chars: int = 32_000  # text of all messages together; keeps prompts inside the model's context
    max_tokens_cap: int = 2048  # largest max_tokens a request may ask for
    default_max_tokens: int = 512
    allow_remote_images: bool = False  # http(s) image URLs: the server would fetch URLs chosen by clients (SSRF)
    local_image_root: Path | None = None  # file:// image URLs allowed only inside this folder
    profile: bool = False  # time each request's stages, reported at GET /timings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by `serve` and `ui`."""
    d = ServeSettings()
    parser.add_argument("--model", required=True, help="checkpoint folder (a trained vlmforge / llava-hf model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"clients must send 'Authorization: Bearer KEY'; required when --host is not loopback "
        f"(default: ${API_KEY_ENV}; prefer the variable, command lines are visible to other users)",
    )
    parser.add_argument("--served-model-name", help=SERVED_NAME_HELP)
    parser.add_argument("--device", help="torch device, e.g. cuda or cpu (default: cuda if available)")
    parser.add_argument("--dtype", help="torch dtype, e.g. bfloat16 (default: bfloat16 on GPU, float32 on CPU)")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: torch's choice; use 1 on a busy or small machine, "
        "where threads waiting on each other cost more than they add)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="time each request's stages (image decoding, queue, preprocessing, prefill, decode, ...): mean ms "
        "per request at GET /timings, reset with DELETE /timings",
    )
    group = parser.add_argument_group("batching and limits")
    _add_batching(group, d)
    _add_limits(group, d)


def _add_batching(group: argparse._ArgumentGroup, d: ServeSettings) -> None:
    group.add_argument(
        "--batching",
        choices=("continuous", "dynamic"),
        default=d.batching,
        help="continuous: requests join the running batch at every decode step and leave when done; dynamic: "
        "requests that arrive together run as one generate call (default: continuous where the model supports it, "
        "LLaVA-style models; else dynamic)",
    )
    group.add_argument(
        "--max-batch-size",
        type=int,
        default=d.max_batch_size,
        help="most requests generated together (default: %(default)s; 1 disables batching)",
    )
    group.add_argument(
        "--batch-window-ms",
        type=float,
        default=d.batch_window_ms,
        help="requests that arrive together start together: a batch (dynamic) or a group joining the running batch "
        "(continuous) waits until no request came for this long, at most 5 such windows (default: %(default)s)",
    )
    group.add_argument(
        "--max-length-ratio",
        type=float,
        default=d.max_length_ratio,
        metavar="R",
        help="dynamic batching: a non-streamed request joins a batch only while the batch's largest max_tokens stays "
        "within R times its smallest, since the batch answers it only when its longest row ends. A small R bounds how "
        "long short requests wait for long ones; a large R keeps batches fuller (throughput). 0 or 1: equal max_tokens "
        "only; inf: no bound. Streamed requests are answered at their own length and batch whatever their max_tokens "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--max-queue",
        type=int,
        default=d.max_queue,
        help="requests allowed to wait; more get HTTP 503 (default: %(default)s)",
    )


def _add_limits(group: argparse._ArgumentGroup, d: ServeSettings) -> None:
    group.add_argument(
        "--max-request-bytes",
        type=int,
        default=d.max_request_bytes,
        help="largest request body; larger gets HTTP 413 (default: %(default)s)",
    )
    group.add_argument(
        "--max-image-bytes", type=int, default=d.max_image_bytes, help="largest encoded image (default: %(default)s)"
    )
    group.add_argument(
        "--max-image-pixels",
        type=int,
        default=d.max_image_pixels,
        help="largest image width*height, checked before decoding (default: %(default)s)",
    )
    group.add_argument("--max-images", type=int, default=d.max_images, help="images per request (default: %(default)s)")
    group.add_argument(
        "--max-generated-images",
        type=int,
        default=d.max_generated_images,
        help="largest n of an image generation request, drawn as one batch (default: %(default)s)",
    )
    group.add_argument(
        "--max-tokens-cap",
        type=int,
        default=d.max_tokens_cap,
        help="largest max_tokens a request may ask for (default: %(default)s)",
    )
    group.add_argument(
        "--default-max-tokens",
        type=int,
        default=d.default_max_tokens,
        help="max_tokens when a request sets none (default: %(default)s)",
    )
    group.add_argument(
        "--allow-remote-images",
        action="store_true",
        help="fetch http(s) image URLs (off: the server would fetch any URL a client names)",
    )
    group.add_argument(
        "--allow-local-images",
        metavar="DIR",
        type=Path,
        help="accept file:// image URLs for files inside DIR (off by default)",
    )


def from_args(args: argparse.Namespace) -> ServeSettings:
    settings = ServeSettings(
        api_key=args.api_key or None,
        served_model_name=args.served_model_name,
        batching=args.batching,
        max_batch_size=args.max_batch_size,
        batch_window_ms=args.batch_window_ms,
        max_length_ratio=length_ratio(args.max_length_ratio),
        max_queue=args.max_queue,
        max_request_bytes=args.max_request_bytes,
        max_image_bytes=args.max_image_bytes,
        max_image_pixels=args.max_image_pixels,
        max_images=args.max_images,
        max_generated_images=args.max_generated_images,
        max_tokens_cap=args.max_tokens_cap,
        default_max_tokens=min(args.default_max_tokens, args.max_tokens_cap),
        allow_remote_images=args.allow_remote_images,
        local_image_root=args.allow_local_images,
        profile=args.profile,
    )
    for name in (
        "max_batch_size",
        "max_queue",
        "max_request_bytes",
        "max_image_bytes",
        "max_image_pixels",
        "max_generated_images",
        "max_tokens_cap",
        "default_max_tokens",
    ):
        if getattr(settings, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if settings.local_image_root is not None and not settings.local_image_root.is_dir():
        raise ConfigError(f"--allow-local-images: '{settings.local_image_root}' is not a folder")
    return settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere: treat it as public
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to expose an unauthenticated model beyond this machine."""
    if not is_loopback(host) and not api_key:
        raise ConfigError(
            f"refusing to listen on '{host}' without an API key: anyone who can reach it could use the model. "
            f"Set --api-key (or ${API_KEY_ENV}), or bind to 127.0.0.1"
        )
