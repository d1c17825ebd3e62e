"""Model assembly and vlmforge's own architectures.

``register_models()`` registers vlmforge's model types with the transformers Auto classes, so a saved checkpoint
of any of them loads through ``AutoModelForImageTextToText`` / ``AutoProcessor``. It is not run on import:
importing torch and transformers would make every ``vlmforge --help`` slow.
"""


def register_models() -> None:
    """Register every vlmforge architecture with the Auto classes (idempotent)."""
    import vlmforge.models.embedding_vlm  # noqa: F401  registers on import
    import vlmforge.models.unified  # noqa: F401  registers on import
