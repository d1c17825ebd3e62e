"""Teach the foundation LM to read the objects in its context, before it sees any image.

Why: a real LM (Qwen, Phi) arrives at LLaVA training able to find the thing a question names in its context and
read what is said about it; the LLaVA stages then only have to make image tokens into something it reads. The tiny
LM pretrained on the world's text cannot, and learning it inside the Bunny stages takes far more questions per
seed than the lab's budget allows. Learned once here, it is shared by every seed and recipe, and images then plug
in quickly.

How: in each training scene, the image's patch tokens are replaced by *object vectors* (``codes``): fixed random
codes for the words of the object in a patch, or a shared "empty" code. Where a patch is, the LM reads from the
token's place in the sequence, which is the same with images. The LM then reads the scene's captions (plain
template) and questions (chat template), with the loss on the answers, laid out exactly as the Bunny stages will
lay them out with images. The codes are scaffolding: only the LM is kept. They are fixed random vectors rather
than the LM's own word embeddings because distinct, well-separated inputs are what the lookup is learned from
fastest.

The phase runs in parts (``ReadingPhase``): a warm-up on the two question types that need the lookup most, which
may be extended at its learning rate until the lookup forms; the main steps with every question type; and a box
phase with its own schedule, where referring expressions (and, if asked, multiple choice) join the questions.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from vlmforge.data.chat import encode_conversation
from vlmforge.data.collate import PaddingCollator
from vlmforge.errors import ConfigError
from vlmforge.models.assemble import IMAGE_TOKEN
from vlmforge.shapes.foundation.codes import ObjectCodes, embed_with_vectors, object_codes
from vlmforge.shapes.foundation.corpus import EXACT_MATCH_TASKS, PHRASED, TEMPLATED, read_jsonl, scene_lookup
from vlmforge.shapes.foundation.loop import Optimiser, TrainLog
from vlmforge.shapes.foundation.options import MC_TASK, OptionSampler, option_questions
from vlmforge.shapes.foundation.vision import Region, VisionSpec

CAPTION = "caption"
BOX_TASK = "rec"  # the referring expressions the box phase teaches
# Of the multiple-choice samples, the share that asks the letter lookup alone (options.py).
MC_LOOKUP_SHARE = 0.5
# A start whose warm-up misses its marks is checked again after every this many extra warm-up steps.
WARM_CHECK_EVERY = 200


@dataclass
class ReaderSpec:
    """The reading phase's settings (0 ``steps`` skips it)."""

    # Whether a start learns colour and existence depends on its random start and rate; restarts catch the misses.
    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0
    tasks: tuple[str, ...] = EXACT_MATCH_TASKS
    # For the first part of the steps only these question types (and the captions) are asked: the lookup is learned
    # on the two that need it most, then the others join; all of them from the start never leave the plateau.
    warm_tasks: tuple[str, ...] = ("color", "shape")
    warm_fraction: float = 0.4
    # A box phase after the main steps, with its own warm-up, cosine and sample order: a share of every batch is a
    # referring expression answered with a box, the rest questions of the tasks above so they are kept. Boxes mixed
    # among the other tasks from the start are not learned.
    box_steps: int = 500
    box_lr: float = 1e-3  # a higher rate learns boxes faster but costs the shape answers
    box_fraction: float = 0.5
    # Multiple choice in the box phase: this share of each of its batches, with options drawn afresh per sample
    # (options.py). Off by default: the option letters are learned only after thousands of steps.
    mc_fraction: float = 0.0
    # Restarts: after the phase, the reader answers its own train scenes' first questions (reading.py); if any task
    # of ``pass_marks`` scores below its mark, the phase runs again from a new start (a fresh LM and codes drawn
    # from another seed), up to ``attempts`` in all, and the closest to passing is kept. A failed start fails on the
    # scenes it trained on too, so the check never needs the test split. ``warm_marks`` are checked when the
    # warm-up steps end; they are lower than the final marks because a good start is still rising then.
    attempts: int = 5
    # Restarts run at this learning rate (None: ``lr``): which starts form the colour lookup depends on the rate as
    # much as on the seed, and the first start keeps ``lr``, at which the lab's default seed passes.
    restart_lr: float | None = 1e-3
    # A start that misses ``warm_marks`` when its warm-up ends keeps to the warm-up tasks, at the learning rate it
    # had reached, for up to ``warm_extension`` more steps (checked every ``WARM_CHECK_EVERY``), because when the
    # lookup by shape forms varies from start to start and the other tasks joining too early stop it forming.
    warm_extension: int = 800
    # Shape has a mark too: some starts learn the lookup by colour instead of by shape.
    pass_marks: dict[str, float] = field(default_factory=lambda: {"color": 0.9, "shape": 0.9, "exist": 0.8})
    warm_marks: dict[str, float] = field(default_factory=lambda: {"color": 0.8, "shape": 0.8})

    def __post_init__(self) -> None:  # lists arrive from JSON manifests
        self.tasks, self.warm_tasks = tuple(self.tasks), tuple(self.warm_tasks)
        if self.box_fraction + self.mc_fraction > 1:
            raise ConfigError(f"reader.box_fraction + reader.mc_fraction is {self.box_fraction + self.mc_fraction}: "
                              "they are shares of one batch, at most 1 together")  # fmt: skip

    def phase_tasks(self) -> tuple[str, ...]:
        """Every question type the phase teaches (the box phase's, when it runs, included)."""
        extra = (BOX_TASK, *([MC_TASK] if self.mc_fraction else [])) if self.box_steps else ()
        return (*self.tasks, *extra)


@dataclass
class ReadingSample:
    scene: int  # index into the scenes' object vectors
    input_ids: list[int]
    labels: list[int]
    task: str


def reading_samples(
    world_dir: str | Path,
    image_paths: Sequence[Path],
    tokenizer: PreTrainedTokenizerBase,
    patches: int,
    tasks: Sequence[str],
    split: str = "train",
    captions: bool = True,
    per_task: int | None = None,
    questions: str = TEMPLATED,
) -> list[ReadingSample]:
    """The split's captions (plain template; unless ``captions`` is False) and single questions of ``tasks`` (chat
    template) from the file ``questions``, tokenised with ``patches`` image tokens in the image's place; with
    ``per_task``, only the first that many of each kind. A record's scene is the captioned image it names
    (``image_paths`` are the split's captioned images, in ``corpus.read_world`` order); every record of a kind
    asked for is checked for that, kept or not."""
    root = Path(world_dir)
    scene_of = scene_lookup(root, image_paths, split)
    out: list[ReadingSample] = []
    kept: Counter = Counter()
    files = [("captions.jsonl", "plain"), (questions, "chat")] if captions else [(questions, "chat")]
    for name, template in files:
        for where, record in read_jsonl(root / split / name):
            task = CAPTION if template == "plain" else record.get("task")
            if task != CAPTION and task not in tasks:
                continue
            scene = scene_of(record, where)
            if per_task is not None and kept[task] >= per_task:
                continue  # tokenising is the cost: a reading test asks only the first few of each kind
            kept[task] += 1
            encoded = encode_conversation(record, tokenizer, template=template, image_tokens=patches, where=where)
            out.append(ReadingSample(scene, encoded.input_ids, encoded.labels, task))
    return out


class ReadingPhase:
    """One start of the reading phase on ``model`` (trained in place): its samples, codes and sample order.

    ``run`` takes the parts in turn: ``warm_up``, ``extend_warm_up`` (only with a check), ``main_steps`` and
    ``box_phase``. ``image_paths[i]`` is the captioned train image whose objects are ``regions[i]`` (see
    ``corpus.read_world``)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world_dir: str | Path,
                 image_paths: Sequence[Path], regions: Sequence[Sequence[Region]], vision: VisionSpec,
                 spec: ReaderSpec, seed: int = 0, progress: bool = True) -> None:  # fmt: skip
        self.model, self.tokenizer, self.spec, self.seed, self.progress = model, tokenizer, spec, seed, progress
        self.world_dir, self.image_paths = world_dir, image_paths
        self.codes: ObjectCodes = object_codes(regions, vision, model.config.hidden_size, seed)
        # One pass over the records for both parts; the box phase's task is read only when that phase runs.
        box_tasks = (BOX_TASK,) if spec.box_steps else ()
        tasks = (*spec.tasks, *box_tasks)
        every = reading_samples(world_dir, image_paths, tokenizer, self.patches, tasks)
        self.warm = [s for s in every if s.task in (*spec.warm_tasks, CAPTION)]
        self.boxes = [s for s in every if s.task in box_tasks]
        self.templated = [s for s in every if s.task in spec.tasks]
        # The warm-up, which decides whether a start forms its lookups, and the box phase, which learns to point,
        # read each question in its template; the main steps read the same questions in the world's other
        # phrasings too, where it has them, so that the lookups answer to the words rather than to one template.
        if (Path(world_dir) / "train" / PHRASED).is_file():
            phrased = reading_samples(world_dir, image_paths, tokenizer, self.patches, spec.tasks, captions=False,
                                      questions=PHRASED)  # fmt: skip
            every = [s for s in every if s.task == CAPTION] + phrased
        self.samples = [s for s in every if s.task == CAPTION or s.task in spec.tasks]
        self.warm_steps = int(spec.steps * spec.warm_fraction) if self.warm else 0
        self.image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.collate = PaddingCollator(tokenizer.pad_token_id)
        self.rng = random.Random(seed)  # the main steps' sample order

    @property
    def patches(self) -> int:
        return self.codes.parts.shape[1]

    def loss(self, batch: list[ReadingSample]) -> torch.Tensor:
        """The LM's loss on ``batch``'s answers, each scene's object vectors in its image tokens' place."""
        padded = self.collate([{"input_ids": s.input_ids, "labels": s.labels} for s in batch])
        vectors = self.codes.vectors([s.scene for s in batch])
        inputs = embed_with_vectors(self.model.get_input_embeddings(), padded["input_ids"], self.image_id, vectors)
        return self.model(inputs_embeds=inputs, attention_mask=padded["attention_mask"], labels=padded["labels"]).loss

    def draw(self, pool: list[ReadingSample]) -> list[ReadingSample]:
        return self.rng.sample(pool, min(self.spec.batch_size, len(pool)))

    def warm_up(self, optimiser: Optimiser) -> None:
        """The scheduled warm-up steps: the warm-up tasks and the captions only."""
        for _ in range(min(self.warm_steps, self.spec.steps)):
            optimiser.take(self.loss(self.draw(self.warm)))

    def extend_warm_up(self, optimiser: Optimiser, check: Callable[[], bool],
                       check_every: int = WARM_CHECK_EVERY) -> tuple[int, bool]:  # fmt: skip
        """Extra warm-up steps at the learning rate reached (the schedule waits) until ``check()`` says the lookups
        formed, asked now, every ``check_every`` extra steps and at the last; at most ``spec.warm_extension``.
        Returns how many extra steps ran and whether the check was met."""
        extra, limit = 0, self.spec.warm_extension
        while True:
            if extra % max(1, check_every) == 0 or extra >= limit:
                self.model.eval()
                met = check()
                self.model.train()
                if met or extra >= limit:
                    return extra, met
            optimiser.take(self.loss(self.draw(self.warm)), advance_schedule=False)
            extra += 1

    def main_steps(self, optimiser: Optimiser) -> None:
        """The rest of the schedule, with every task."""
        for _ in range(optimiser.scheduled, self.spec.steps):
            optimiser.take(self.loss(self.draw(self.samples)))

    def box_phase(self) -> TrainLog:
        """Its own schedule and sample order (so that it does not depend on how many steps ran before it): each
        batch holds boxes, multiple choice if asked, and questions of the other tasks so that they are kept."""
        spec = self.spec
        questions = self.templated  # the captions rest in this phase
        n_boxes = max(1, round(spec.batch_size * spec.box_fraction))
        n_mc = min(round(spec.batch_size * spec.mc_fraction), spec.batch_size - n_boxes)  # at least one box
        options, extra = None, {}
        if n_mc:
            found = option_questions(self.world_dir, "train", scene_lookup(self.world_dir, self.image_paths, "train"))
            options = OptionSampler(found, self.tokenizer, self.patches, MC_LOOKUP_SHARE)
            extra["mc_samples"] = len(found)
        rng = random.Random(self.seed)
        optimiser = Optimiser(self.model.parameters(), spec.box_steps, spec.box_lr, spec.weight_decay,
                              spec.warmup_steps, "teach boxes", self.progress)  # fmt: skip
        for _ in range(spec.box_steps):
            kept = rng.sample(questions, min(spec.batch_size - n_boxes - n_mc, len(questions)))
            chosen = [ReadingSample(*options.draw(rng), MC_TASK) for _ in range(n_mc)]
            optimiser.take(self.loss(rng.sample(self.boxes, min(n_boxes, len(self.boxes))) + chosen + kept))
        log = optimiser.finish()
        log.extra.update(extra)
        return log

    def run(self, after_warm: Callable[[], bool] | None = None, give_up: bool = True,
            check_every: int = WARM_CHECK_EVERY) -> TrainLog:  # fmt: skip
        """The whole phase (see ``teach_reading``)."""
        spec, model = self.spec, self.model
        model.train()
        optimiser = Optimiser(model.parameters(), spec.steps, spec.lr, spec.weight_decay, spec.warmup_steps,
                              "teach reading", self.progress)  # fmt: skip
        self.warm_up(optimiser)
        extra, met = 0, True
        if after_warm is not None and 0 < self.warm_steps < spec.steps:
            extra, met = self.extend_warm_up(optimiser, after_warm, check_every)
        stopped = not met and give_up
        if not stopped:
            self.main_steps(optimiser)
        log = optimiser.finish()
        log.extra["warm_extension"] = extra
        if stopped:  # the start is lost: stopping saves the rest of the phase
            log.extra["stopped_after_warm"] = len(log.losses)
        elif (self.boxes or spec.mc_fraction) and spec.box_steps:
            box_log = self.box_phase()
            log.extra.update(box_log.extra)
            log.extra.update(box_steps=len(box_log.losses), box_final_loss=box_log.final_loss,
                             box_seconds=box_log.seconds)  # fmt: skip
        model.eval()
        log.extra["samples"] = len(self.samples)
        log.extra["box_samples"] = len(self.boxes)
        return log


def teach_reading(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    world_dir: str | Path,
    image_paths: Sequence[Path],
    regions: Sequence[Sequence[Region]],
    vision: VisionSpec,
    spec: ReaderSpec | None = None,
    seed: int = 0,
    progress: bool = True,
    after_warm: Callable[[], bool] | None = None,
    give_up: bool = True,
    check_every: int = WARM_CHECK_EVERY,
) -> TrainLog:
    """Train ``model`` in place to answer the world's captions and questions from object vectors.

    ``after_warm()``, called when the warm-up tasks' steps are done, says whether the warm-up's lookups formed. If
    not, the warm-up goes on (``ReaderSpec.warm_extension``; ``log.extra["warm_extension"]`` counts its steps),
    asking again every ``check_every`` steps; if they never form, the phase stops there when ``give_up``
    (``log.extra["stopped_after_warm"]``), and otherwise goes on with every task."""
    phase = ReadingPhase(
        model, tokenizer, world_dir, image_paths, regions, vision, spec or ReaderSpec(), seed, progress
    )
    return phase.run(after_warm, give_up, check_every)
