"""`vlmforge serve` (OpenAI-compatible API + web UI) and `vlmforge ui` (the web UI alone)."""

from __future__ import annotations

import argparse

from vlmforge import console
from vlmforge.serve import settings as serve_settings


def register(subparsers) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="serve a checkpoint over an OpenAI-compatible HTTP API (with a web UI at /ui)",
        description=(
            "Serve a trained checkpoint with an OpenAI-compatible API: GET /v1/models, POST /v1/chat/completions "
            "(images as base64 data: URLs, streaming), GET /health, and a chat web UI at /ui. Concurrent requests "
            "are batched together. Binds to 127.0.0.1 unless told otherwise; any other address needs --api-key."
        ),
    )
    serve_settings.add_arguments(serve)
    serve.add_argument("--no-ui", action="store_true", help="do not mount the web UI at /ui")
    serve.set_defaults(handler=run_serve)

    ui = subparsers.add_parser(
        "ui",
        help="chat with a checkpoint in the browser (Gradio web UI)",
        description="Open a web page to upload an image and chat with a trained checkpoint; answers stream in.",
    )
    serve_settings.add_arguments(ui)
    ui.set_defaults(handler=run_ui, port=7860)


def _prepare(args: argparse.Namespace):
    settings = serve_settings.from_args(args)
    serve_settings.check_bind(args.host, settings.api_key)  # before the slow model load
    import torch

    from vlmforge.serve.continuous import make_batcher
    from vlmforge.serve.engine import load_engine

    if args.threads:
        torch.set_num_threads(args.threads)

    engine = load_engine(args.model, device=args.device, dtype=args.dtype)
    batcher = make_batcher(engine, settings)
    return settings, engine, batcher


def run_serve(args: argparse.Namespace) -> int:
    settings, engine, batcher = _prepare(args)
    import uvicorn

    from vlmforge.serve.app import create_app
    from vlmforge.serve.engine import served_name

    app = create_app(engine, settings, ui=not args.no_ui, batcher=batcher)
    name = served_name(engine, settings)
    print(f"serving '{name}' on http://{args.host}:{args.port}/v1" + ("" if args.no_ui else " (UI: /ui)"), flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if console.verbose() else "warning")
    return 0


def run_ui(args: argparse.Namespace) -> int:
    settings, _, batcher = _prepare(args)
    from vlmforge.serve.guards import key_matches
    from vlmforge.serve.ui import build_ui

    auth = (lambda _user, password: key_matches(password, settings.api_key)) if settings.api_key else None
    build_ui(batcher, settings).launch(server_name=args.host, server_port=args.port, auth=auth)
    return 0
