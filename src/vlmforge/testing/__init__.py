"""Tiny models built in code, the way transformers' own tests do: no downloads, seconds to build.

Used by the test suite and by benchmarks; never by a training or serving path.
"""
