"""The prompts of Unicorn's two generation stages. Stages record these texts in their manifests, so a dataset
always says which prompt made it; change them here, not inline."""

from __future__ import annotations

from typing import Any

# Stage 1: one objective, detailed paragraph about the main subject (paper: mean ~129 words, no literary tone).
DENSIFY_SYSTEM = "You write precise, factual visual descriptions."
DENSIFY_PROMPT = (
    "Below is a short caption of an image. Expand it into ONE objective, detailed paragraph of about 100-150 "
    "words that describes the observable details of the main subject: its category, appearance, colours, "
    "shapes, materials, textures, parts, number, size, position, pose and action, and the immediately visible "
    "surroundings. Describe only what a viewer could actually see in such an image. Do not invent names, "
    "written text or backstory, do not speculate about feelings or intentions, and do not use a literary, "
    "poetic or promotional tone. Output only the paragraph.\n\nCaption: {caption}"
)

# Stage 2: 6-8 QA pairs as JSON, one of three task kinds per caption. Questions are asked as if the image were
# visible, because at training time the caption's embedding stands in for the image.
TASK_KINDS = ("multiple_choice", "open_qa", "complex_reasoning")
# Caption counts per kind in the paper (171K / 199K / 100K), used as default sampling ratios.
PAPER_KIND_RATIOS = {"multiple_choice": 171.0, "open_qa": 199.0, "complex_reasoning": 100.0}

INSTRUCT_SYSTEM = "You create visual question-answer data. You always answer with valid JSON only."
_INSTRUCT_COMMON = (
    "Here is a detailed description of an image:\n\n{caption}\n\n"
    "Write between {min_pairs} and {max_pairs} different question-answer pairs about this image. Phrase every "
    "question as if you were looking at the image itself (never mention 'the description' or 'the text'). "
    "Every answer must follow from the visible content described above. "
)
INSTRUCT_PROMPTS = {
    "multiple_choice": _INSTRUCT_COMMON
    + "Each question is multiple choice with exactly four options A, B, C and D, exactly one of them correct, "
    "and the correct letter varies between questions. Reply with JSON only, in this form:\n"
    '{{"qa": [{{"question": "...", "options": {{"A": "...", "B": "...", "C": "...", "D": "..."}}, '
    '"answer": "B"}}]}}',
    "open_qa": _INSTRUCT_COMMON
    + "Ask about objects, attributes, counts, positions and actions; answers are short, complete sentences. "
    "Reply with JSON only, in this form:\n"
    '{{"qa": [{{"question": "...", "answer": "..."}}]}}',
    "complex_reasoning": _INSTRUCT_COMMON
    + "Ask questions that need reasoning beyond listing what is visible (purpose, cause, likely next event, "
    "comparison, implication); answers explain their reasoning step by step from the visible details. "
    "Reply with JSON only, in this form:\n"
    '{{"qa": [{{"question": "...", "answer": "..."}}]}}',
}
MC_SUFFIX = "Answer with the option's letter from the given choices directly."


def densify_messages(caption: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": DENSIFY_SYSTEM},
        {"role": "user", "content": DENSIFY_PROMPT.format(caption=caption)},
    ]


def instruct_messages(caption: str, kind: str, min_pairs: int = 6, max_pairs: int = 8) -> list[dict[str, Any]]:
    prompt = INSTRUCT_PROMPTS[kind].format(caption=caption, min_pairs=min_pairs, max_pairs=max_pairs)
    return [{"role": "system", "content": INSTRUCT_SYSTEM}, {"role": "user", "content": prompt}]


def prompt_record() -> dict[str, Any]:
    """All prompt texts, for manifests."""
    return {
        "densify": {"system": DENSIFY_SYSTEM, "user": DENSIFY_PROMPT},
        "instruct": {"system": INSTRUCT_SYSTEM, **INSTRUCT_PROMPTS, "mc_suffix": MC_SUFFIX},
    }
