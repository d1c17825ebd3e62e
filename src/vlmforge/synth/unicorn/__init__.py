"""Unicorn (arXiv 2503.22655): text-only VLM data. Seeds -> dense captions -> QA conversations -> caption
embeddings that stand in for image features, moved toward the image side by mean-shift transfer."""
