"""vlmforge: build small vision-language models from synthetic data."""

__version__ = "0.1.0"
