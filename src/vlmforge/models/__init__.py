"""Model assembly and vlmforge's own architectures.

Importing this package registers vlmforge's model types with the transformers Auto classes, so a saved
checkpoint of any of them loads through ``AutoModelForImageTextToText`` / ``AutoProcessor``.
"""
