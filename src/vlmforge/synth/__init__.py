"""Data synthesis: generation backends (local HF, OpenAI-compatible), resumable jobs, and the method pipelines
(``unicorn``: text-only data for an embedding-input VLM)."""
