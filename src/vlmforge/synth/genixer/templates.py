"""The generator's instructions: one generic request from a pool, optionally followed by a task sentence.

The pool is vlmforge's own wording (the released templates carry no license). With a task sentence the request is
task-specific; without one it is task-agnostic and the generator chooses the task. Every draw is seeded by the
record it is for, so a rebuild writes the same instructions whatever order the records come in.
"""

from __future__ import annotations

import random

from vlmforge.synth.genixer.tasks import TASKS

GENERIC_INSTRUCTIONS: tuple[str, ...] = (
    "Look at the image and write one question about it together with its answer.",
    "Study this picture, then compose a question and answer it.",
    "Examine the image carefully and produce a clear question with its correct answer.",
    "Write a question that this image can answer, and give the answer.",
    "Based on what you see, create a question and provide its answer.",
    "Observe the picture and formulate a question, followed by the answer.",
    "Come up with a question about the contents of this image and answer it.",
    "Inspect the image and write a question-answer pair about it.",
    "Generate a question grounded in this image, then state the answer.",
    "Please look closely at the photo and write a question along with its answer.",
    "Create a question whose answer can be found in the image, and include that answer.",
    "Describe the image indirectly: ask a question about it and answer it yourself.",
    "Think of something a person might ask about this image; write the question and the answer.",
    "Produce one question and its answer that test understanding of this picture.",
    "Looking at this image, write down a question and respond to it accurately.",
    "Pose a question about the visual content shown here and supply the answer.",
    "From the image, derive a question and give a correct answer to it.",
    "Write an instruction-style question about the image and answer it faithfully.",
    "Carefully view the image, then draft a question and its matching answer.",
    "Ask something specific about this image and answer it precisely.",
    "Generate a question-and-answer pair that is true for this image.",
    "Take a look at the picture and write a question plus the right answer.",
    "Construct a question that refers to the image and provide the answer.",
    "Analyse the image and write a question about it, then answer that question.",
    "Compose a question about a detail in this image and answer it.",
    "Your task: read the image, write a question about it, and answer it.",
    "Write a question someone could answer only by looking at this image, and answer it.",
    "Observe the scene and produce a relevant question with its answer.",
    "Formulate a question about the objects in the image and give the answer.",
    "Based on the visual information, write one question and its answer.",
    "Look over the image and create a question-answer pair about what it shows.",
    "Invent a question about this picture and supply a correct response.",
    "Generate a visual question for this image and answer it.",
    "Scan the image, write a question about it, and answer the question.",
    "Examine the scene and propose a question, then provide the answer.",
    "Write a question that checks what is in this image, and its answer.",
    "Considering the image, produce a question and the answer to it.",
    "Make up a question answerable from this image and write the answer.",
    "Create a question-answer pair that a careful viewer of this image would agree with.",
    "After viewing the image, write a question about it and answer it correctly.",
    "Write one clear question about the image content, then answer it.",
    "Using only the image, write a question and give its answer.",
    "Look at what the image contains and write a question with its answer.",
    "Design a question about this picture and provide an accurate answer.",
    "Draft a question about the visible content and answer it.",
    "Generate a question regarding this image, along with the correct answer.",
    "Please create a question about this image and answer it.",
    "Identify something in the image, ask about it, and answer.",
    "Write a question and its answer that describe part of this image.",
    "Examine the image and write a question followed by a truthful answer.",
    "Form a question about the image's content and supply the answer.",
    "Read the picture and produce one question with the answer it calls for.",
    "Devise a question about the image and write the answer after it.",
    "Write down a question prompted by this image and answer it.",
    "Build a question-answer pair from the visual content of this image.",
    "Carefully check the image, then write a question and answer it.",
    "Produce a question about this image that has a definite answer, and give it.",
    "Given this image, generate a question and provide its answer.",
)

TASK_SENTENCES: dict[str, str] = {
    "common_vqa": "This is a Common VQA task: ask an open question about the image and answer it briefly.",
    "adversarial_vqa": (
        "This is an Adversarial VQA task: ask whether a certain object is in the image, which may be absent, and "
        "answer Yes or No."
    ),
    "mc_vqa": (
        "This is a Multiple-choice VQA task: give the options on separate lines as 'A. ...' and answer with the "
        "letter of the correct option."
    ),
    "dialogue": "This is a Multi-turn Dialogue task: write several question and answer pairs in a row.",
    "rec": (
        "This is a Referring Expression Comprehension task. The question gives an expression of a region; give its "
        "coordinates in the answer."
    ),
    "reg": (
        "This is a Referring Expression Generation task. The question gives the coordinates of a region; describe "
        "that region in the answer."
    ),
    "pointqa": (
        "This is a PointQA task. The question lists candidate regions by their coordinates; answer with the "
        "coordinates of the right one."
    ),
    "qcba": (
        "This is a Q-to-C^Box-A task. Ask a yes or no question; the answer reasons step by step, cites the "
        "coordinates of the regions it uses and ends with Yes or No."
    ),
    "ref_dialogue": (
        "This is a Referential Dialogue task: write several question and answer pairs that refer to regions by "
        "their coordinates."
    ),
}
assert set(TASK_SENTENCES) == set(TASKS)

MODES = ("specific", "agnostic", "mixed")


def draw_instruction(
    task: str | None, key: str, *, seed: int = 0, mode: str = "specific", agnostic_share: float = 0.5
) -> tuple[str, int, bool]:
    """``(instruction, template_index, specific)`` for the record ``key``; ``mixed`` drops the task sentence for
    ``agnostic_share`` of the records, ``task=None`` always."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    rng = random.Random(f"genixer-{seed}-{key}")
    index = rng.randrange(len(GENERIC_INSTRUCTIONS))
    specific = task is not None and (mode == "specific" or (mode == "mixed" and rng.random() >= agnostic_share))
    text = GENERIC_INSTRUCTIONS[index]
    return (f"{text} {TASK_SENTENCES[task]}" if specific else text), index, specific
