"""The embedded default world, on top of the core: procedural scenes, tiny foundation models and the lab.

Nothing in the core imports this package; it uses the core's public pieces exactly as a user's own data and hub
models would (the import-linter contracts in pyproject.toml hold that).
"""
