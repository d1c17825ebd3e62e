"""How each reference harness reads a model's answer, one module per harness.

``lmms`` (lmms-eval: MME, VQAv2, GQA), ``llava`` (the LLaVA / Bunny scripts: POPE, ScienceQA), ``vlmevalkit``
(VLMEvalKit: multiple choice and yes/no on its TSV benchmarks) reproduce the references' parsing, quirks included;
``robust`` holds the fixed rules of ``--scoring robust``. docs/evaluation.md names each reference's file and commit.
"""
