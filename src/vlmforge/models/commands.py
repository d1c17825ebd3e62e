"""`vlmforge generate-image`: draw images from captions with a unified (Uni-X) model and its image tokenizer."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate-image",
        help="draw images from captions with a unified (Uni-X) model, with classifier-free guidance",
        description=(
            "Sample exactly one image's worth of codes per prompt with classifier-free guidance (conditional and "
            "unconditional prompts in one batch), decode them with the image tokenizer and write PNGs plus "
            "images.jsonl (prompt, file, codes) into --out. See docs/unix.md."
        ),
    )
    p.add_argument("--model", required=True, help="unified model folder (saved with its tokenizer)")
    p.add_argument(
        "--image-tokenizer",
        default=None,
        help="saved image tokenizer folder (has image_tokenizer.json; default: MODEL/image_tokenizer/, the one the "
        "model was trained with)",
    )
    p.add_argument("--prompt", action="append", default=[], help="a caption to draw (repeatable)")
    p.add_argument("--prompts", help="a text file with one caption per line")
    p.add_argument("--out", required=True, help="folder for the PNGs and images.jsonl")
    p.add_argument("--cfg", type=float, default=3.0, help="guidance scale: 0 unconditional, 1 conditional only")
    p.add_argument("--temperature", type=float, default=1.0, help="0 takes the most likely code at every step")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16, help="prompts per batch (default %(default)s)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.set_defaults(handler=run)


def _prompts(args: argparse.Namespace) -> list[str]:
    from pathlib import Path

    from vlmforge.errors import ConfigError

    prompts = list(args.prompt)
    if args.prompts:
        prompts += [line.strip() for line in Path(args.prompts).read_text().splitlines() if line.strip()]
    if not prompts:
        raise ConfigError("give at least one --prompt or a --prompts file")
    return prompts


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from vlmforge.models import register_models
    from vlmforge.models.assemble import resolve_model_path
    from vlmforge.models.image_tokenizer import load_image_tokenizer
    from vlmforge.models.unified.chat_processor import load_for_chat
    from vlmforge.models.unified.generation import ImageSampling, generate_image_codes

    prompts = _prompts(args)
    sampling = ImageSampling(args.cfg, args.temperature, args.top_k, args.top_p, args.seed)
    register_models()
    path = resolve_model_path(args.model, "unified model")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    image_tokenizer = load_image_tokenizer(args.image_tokenizer) if args.image_tokenizer else None
    model, processor = load_for_chat(path, image_tokenizer=image_tokenizer)  # refuses a tokenizer that misfits
    model = model.to(device).eval()
    tokenizer, image_tokenizer = processor.tokenizer, processor.image_tokenizer
    processor.check_drawing(prompts, sampling)  # cfg < 0, a prompt too long for the context: before any work
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "images.jsonl").open("w") as log:
        for start in range(0, len(prompts), args.batch_size):
            batch = prompts[start : start + args.batch_size]
            sampling.seed = args.seed + start  # each batch its own noise, the same on every rerun
            codes = generate_image_codes(model, tokenizer, batch, sampling)
            for offset, (prompt, row, image) in enumerate(
                zip(batch, codes, image_tokenizer.decode(codes), strict=True)
            ):
                name = f"{start + offset:05d}.png"
                image.save(out / name)
                log.write(json.dumps({"prompt": prompt, "file": name, "codes": row.tolist()}) + "\n")
    print(f"{len(prompts)} image(s) written to {out}")
    return 0
