"""Tiny foundation models for the shapes world: a BPE tokenizer, a Qwen2 LM and a CLIP-style vision tower.

They play the roles that Qwen/Phi and SigLIP play at full scale; real users pass hub ids instead. Import from the
modules (``build``, ``lm``, ``vision``, ...): this package imports nothing, so ``vlmforge --help`` stays fast.
"""
