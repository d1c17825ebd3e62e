"""Genixer (arXiv 2312.06731): a VLM trained as a data generator. Labeled records -> generator training records ->
generated ``Question: ... Answer: ...`` text on unlabeled images -> parsed records -> judged, box-filtered and
selected records for training."""
