"""Teach the foundation LM to read the objects in its context, before it sees any image.

Why: a real LM (Qwen, Phi) arrives at LLaVA training able to find the thing a question names in its context and
read what is said about it; the LLaVA stages then only have to make image tokens into something it reads. The tiny
LM pretrained on the world's text cannot (docs/bunny.md, items 3-16), and learning it inside the Bunny stages takes
on the order of 100,000 questions per seed, far beyond the lab's budget. Learned once here, it is shared by every
seed and recipe, and images then plug in within seconds (item 17).

How: in each training scene, the image's patch tokens are replaced by *object vectors*. A patch that holds an
object's box centre gets the sum of a fixed code per word of the object's phrase ("small", "red", "circle") and per
pair of its words ("red circle", ...); an empty patch gets one shared "empty" code. Where a patch is, the LM reads
from the token's place in the sequence, which is the same with images (a code per patch is an option; the
projector could not reproduce it, item 20). The LM then reads the scene's captions (plain template) and questions
(chat template), with the loss on the answers, laid out exactly as the Bunny stages will lay them out with images.
The codes are scaffolding: only the LM is kept. They are fixed random vectors rather than the LM's own word
embeddings because distinct, well-separated inputs are what the lookup is learned from fastest (item 17: sums of
the LM's trainable word embeddings stayed at chance).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from vlmforge.data.chat import encode_conversation
from vlmforge.data.collate import PaddingCollator
from vlmforge.errors import ConfigError, DataError
from vlmforge.models.assemble import IMAGE_TOKEN
from vlmforge.shapes.foundation.corpus import EXACT_MATCH_TASKS, read_jsonl, scene_lookup
from vlmforge.shapes.foundation.loop import TrainLog, run_steps
from vlmforge.shapes.foundation.options import MC_TASK, OptionSampler, option_questions
from vlmforge.shapes.foundation.vision import Region, VisionSpec, patch_targets

CAPTION = "caption"
DETAIL = "detail"  # a scene's detailed caption, written from its object vectors (ReaderSpec.detailed_captions)
FILLER_WORDS = frozenset({"a", "an", "the"})


@dataclass
class ReaderSpec:
    # 0 skips the phase. Whether it learns colour and existence depends on its random start: at 2000 steps and 1e-3,
    # held-out existence 0.91 / 0.90 / 0.49 / 0.84 for seeds 0-3. 3000 steps at 2e-3 (~205 s on 2 CPU cores)
    # learned both from a start that had failed (existence 0.96), not from seed 2's (docs/bunny.md item 25).
    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0
    tasks: tuple[str, ...] = EXACT_MATCH_TASKS
    # For the first part of the steps only these question types (and the captions) are asked: the lookup is learned
    # on the two that need it most, then the others join. All five from the start stayed on the plateau (item 17).
    # 0.4 rather than 0.7 leaves count and existence 1200 mixed steps instead of 600: the reader's held-out count
    # rose from 0.58 (a constant) to 0.86 and existence from 0.53 to 0.79, colour and shape staying >= 0.99 (item 20).
    warm_tasks: tuple[str, ...] = ("color", "shape")
    warm_fraction: float = 0.4
    # After the warm-up the reader may also write each scene's detailed caption ("There are 4 objects. A large
    # yellow triangle at the top left. ..."): where every object is, where position questions give one. Never in the
    # warm-up, which decides whether a start forms the colour lookup (docs/bunny.md items 26-27). Off: measured from
    # seed 0 (item 28) the reader's held-out position rose 0.19 -> 0.24 and existence 0.90 -> 0.96, but the lab's
    # position fell 0.30 -> 0.26 and boxes 0.095 -> 0.064, and the build took 36 s longer (demo 9 min 54 s).
    detailed_captions: bool = False
    word_pairs: bool = True  # object vectors also carry a code per pair of words of the phrase (object_codes)
    patch_codes: bool = False  # a fixed code per patch; without, the reader learns where from the token's place
    # Each part of an object vector (word, pair or empty code) is left out of a training sample with this
    # probability, so the reader must read every part and tolerate missing ones, as with a projector's output.
    # Off: at 0.25 the reader had not learned existence after the default steps (docs/bunny.md item 21).
    code_dropout: float = 0.0
    # A box phase after the main steps, with its own warm-up, cosine and sample order: half of every batch is a
    # referring expression (its answer a box), the rest questions of the tasks above so they are kept. Mixed among
    # the tasks above, boxes were not learned (Acc@0.5 0.05 on clean test vectors after 2300 steps; item 24).
    box_steps: int = 500
    box_lr: float = 1e-3  # at 2e-3 the lab's boxes were 0.13 rather than 0.09, but its shape fell to 0.89 (item 25)
    box_fraction: float = 0.5
    box_task: str = "rec"
    # Multiple choice in the box phase: this share of each of its batches, the options drawn afresh per sample and
    # ``mc_lookup_share`` of them the letter lookup alone (options.py). Off: see docs/bunny.md item 32.
    mc_fraction: float = 0.0
    mc_lookup_share: float = 0.5
    # Restarts: after the phase, the reader answers its own train scenes' first questions (reading.py); if any task
    # of ``pass_marks`` scores below its mark, the phase runs again from a new start (a fresh LM and codes drawn
    # from another seed), up to ``attempts`` in all, and the closest to passing is kept. A failed start fails on the
    # scenes it trained on too, so the check never needs the test split. ``warm_marks`` are checked when the
    # warm-up steps end, and a start that still misses them after ``warm_extension`` more warm-up steps stops
    # there: most starts fail (docs/bunny.md items 26, 31). Lower than the final mark: a good start is still rising.
    attempts: int = 5
    # Restarts run at this learning rate (None: ``lr``). Which starts form the colour lookup depends on the rate as
    # much as on the seed: at the warm-up's end, of seeds 0, 1, 2, 10, 11, 12 and 1002, two passed at 2e-3 (0 and
    # 1) and four at 1e-3 (1, 2, 12, 1002), seed 1002's full phase at 1e-3 then reading held-out colour 1.00 and
    # existence 0.97 (docs/bunny.md item 29). The first start keeps ``lr``, at which the lab's seed 0 passes.
    restart_lr: float | None = 1e-3
    # A start that misses ``warm_marks`` when its warm-up ends keeps to the warm-up tasks, at the learning rate it
    # had reached, for up to ``warm_extension`` more steps, checked every ``warm_check_every``; the other tasks
    # join (and the rest of the schedule runs) once the marks are met. Why: when the lookup by shape forms varies
    # from start to start, and the other tasks joining at step 1200 stopped it forming (item 26); with the warm-up
    # going on, seeds 21 and 23 at 1e-3 went from colour 0.70 / 0.67 at step 1200 to 0.99 / 0.97 at 2000 (item 31).
    warm_extension: int = 800
    warm_check_every: int = 200
    # Shape too since session 12: from seed 2 on the world that says "an orange star" the lookup by colour failed
    # instead (train shape 0.733, held-out 0.683) while colour passed, and the build kept it (docs/bunny.md item 29).
    pass_marks: dict[str, float] = field(default_factory=lambda: {"color": 0.9, "shape": 0.9, "exist": 0.8})
    warm_marks: dict[str, float] = field(default_factory=lambda: {"color": 0.8, "shape": 0.8})

    def __post_init__(self) -> None:  # lists arrive from JSON manifests
        self.tasks, self.warm_tasks = tuple(self.tasks), tuple(self.warm_tasks)
        if self.box_fraction + self.mc_fraction > 1:
            raise ConfigError(f"reader.box_fraction + reader.mc_fraction is {self.box_fraction + self.mc_fraction}: "
                              "they are shares of one batch, at most 1 together")  # fmt: skip

    def phase_tasks(self) -> tuple[str, ...]:
        """Every question type the phase teaches (the box phase's, when it runs, included)."""
        extra = (self.box_task, *([MC_TASK] if self.mc_fraction else [])) if self.box_steps else ()
        return (*self.tasks, *extra)


@dataclass
class ReadingSample:
    scene: int  # index into the scenes' object vectors
    input_ids: list[int]
    labels: list[int]
    task: str


@dataclass
class ObjectCodes:
    """Object vectors kept as their parts: ``codebook[parts[scene, patch]].sum()`` is one patch's vector.

    Kept apart so that reading can drop parts at random (``ReaderSpec.code_dropout``)."""

    codebook: torch.Tensor  # [codes + 1, hidden]; the last row is zeros and pads ``parts``
    parts: torch.Tensor  # [scenes, patches, most parts of one patch], indices into ``codebook``

    @property
    def pad(self) -> int:
        """The index of the codebook's zero row: an absent (or dropped) part."""
        return len(self.codebook) - 1

    def vectors(
        self, scenes: Sequence[int] | None = None, drop: float = 0.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """[len(scenes), patches, hidden] (all scenes by default), each part left out with probability ``drop``."""
        parts = self.parts if scenes is None else self.parts[list(scenes)]
        if drop > 0:
            dropped = torch.rand(parts.shape, generator=generator) < drop
            parts = parts.masked_fill(dropped, self.pad)
        return self.codebook[parts].sum(-2)


def _content_words(phrase: str) -> list[str]:
    """The words of an object's phrase that get a code: "a small red circle" -> small, red, circle."""
    return [w for w in phrase.split() if w not in FILLER_WORDS]


def object_codes(
    regions: Sequence[Sequence[Region]],
    vision: VisionSpec,
    hidden_size: int,
    seed: int,
    word_pairs: bool = True,
    patch_codes: bool = False,
    vocabulary: Sequence[Sequence[Region]] | None = None,
) -> ObjectCodes:
    """Per scene, the parts of one vector per patch token of the vision tower (see module doc).

    With ``word_pairs`` an object's vector also carries a code per pair of its phrase's words ("red circle"), so
    that "is there a red circle?" is one match rather than a conjunction of two. Without ``patch_codes`` no patch
    code is added and an empty patch holds one shared "empty" code: where a patch is must then be read from its
    token's place in the sequence, as it will be with images (item 20).

    The codes are drawn for the words (and pairs) of ``vocabulary``'s phrases (default: ``regions``), so held-out
    scenes encoded with ``vocabulary=`` the training scenes get the codes the LM was trained on; a word that
    ``vocabulary`` lacks has no code and is left out."""
    phrases, targets = patch_targets(regions, vision)  # phrase 0 is the background
    phrase_words = [_content_words(p) for p in phrases[1:]]
    if vocabulary is None:
        known = phrase_words
    else:  # only which words and pairs occur matters here: they are sorted below
        known = [_content_words(p) for p in {phrase for scene in vocabulary for _, phrase in scene}]
    words = sorted({w for ws in known for w in ws})
    pairs = sorted({pair for ws in known for pair in combinations(ws, 2)}) if word_pairs else []
    generator = torch.Generator().manual_seed(seed)
    word_codes = torch.randn(len(words), hidden_size, generator=generator)
    # Drawn even without patch codes, so that the pair and empty codes after it do not depend on that option.
    patch_rows = torch.randn(targets.shape[1], hidden_size, generator=generator)
    pair_codes = torch.randn(len(pairs), hidden_size, generator=generator)
    empty = torch.randn(hidden_size, generator=generator)
    codebook = torch.cat([word_codes, pair_codes, empty[None], patch_rows, torch.zeros(1, hidden_size)])
    row = {**{w: i for i, w in enumerate(words)}, **{p: len(words) + i for i, p in enumerate(pairs)}}
    empty_row, first_patch_row, pad = len(words) + len(pairs), len(words) + len(pairs) + 1, len(codebook) - 1

    def phrase_parts(ws: list[str]) -> list[int]:
        return [row[w] for w in ws if w in row] + [row[p] for p in combinations(ws, 2) if p in row]

    per_phrase = [[] if patch_codes else [empty_row]] + [phrase_parts(ws) for ws in phrase_words]
    width = max(map(len, per_phrase)) + patch_codes
    table = torch.tensor([ps + [pad] * (width - len(ps)) for ps in per_phrase])  # [phrases, width]
    parts = table[targets]  # [scenes, patches, width]
    if patch_codes:
        where = first_patch_row + torch.arange(targets.shape[1])
        parts[..., -1] = where.expand(targets.shape)
    return ObjectCodes(codebook, parts)


def embed_with_vectors(
    embed: torch.nn.Module, input_ids: torch.Tensor, image_id: int, vectors: torch.Tensor
) -> torch.Tensor:
    """Token embeddings of ``input_ids`` with each ``image_id`` position holding the next patch's vector
    (``vectors``: [batch, patches, hidden], one row per image token in order)."""
    inputs = embed(input_ids)
    return inputs.masked_scatter((input_ids == image_id).unsqueeze(-1), vectors.to(inputs.dtype))


def reading_samples(
    world_dir: str | Path,
    image_paths: Sequence[Path],
    tokenizer: PreTrainedTokenizerBase,
    patches: int,
    tasks: Sequence[str],
    split: str = "train",
    captions: bool = True,
    per_task: int | None = None,
    detailed: bool = False,
) -> list[ReadingSample]:
    """The split's captions (plain template; unless ``captions`` is False) and single questions of ``tasks`` (chat
    template), tokenised with ``patches`` image tokens in the image's place; with ``per_task``, only the first that
    many of each kind. A record's scene is the captioned image it names (``image_paths`` are the split's captioned
    images, in ``corpus.read_world`` order); every record of a kind asked for is checked for that, kept or not.
    With ``detailed``, each caption record's ``detailed_caption`` too (task ``DETAIL``, plain template, last)."""
    root = Path(world_dir)
    scene_of = scene_lookup(root, image_paths, split)
    out: list[ReadingSample] = []
    details: list[ReadingSample] = []
    kept: Counter = Counter()
    files = [("captions.jsonl", "plain"), ("instruct.jsonl", "chat")] if captions else [("instruct.jsonl", "chat")]
    for name, template in files:
        for where, record in read_jsonl(root / split / name):
            task = CAPTION if template == "plain" else record.get("task")
            if task != CAPTION and task not in tasks:
                continue
            scene = scene_of(record, where)
            if per_task is not None and kept[task] >= per_task:
                continue  # tokenising is the cost: a reading test asks a few hundred of the split's ~24,000
            kept[task] += 1
            encoded = encode_conversation(record, tokenizer, template=template, image_tokens=patches, where=where)
            out.append(ReadingSample(scene, encoded.input_ids, encoded.labels, task))
            if detailed and task == CAPTION:
                details.append(_detail_sample(record, scene, tokenizer, patches, where))
    return out + details


def _detail_sample(
    record: dict, scene: int, tokenizer: PreTrainedTokenizerBase, patches: int, where: str
) -> ReadingSample:
    text = record.get("detailed_caption")
    if not isinstance(text, str) or not text.strip():
        raise DataError(where, "missing or empty 'detailed_caption' (ReaderSpec.detailed_captions)", "detailed_caption")
    turns = [{"from": "human", "value": IMAGE_TOKEN}, {"from": "gpt", "value": text}]
    detail = {"image": record.get("image"), "conversations": turns}  # with its image, or <image> is read as text
    encoded = encode_conversation(detail, tokenizer, template="plain", image_tokens=patches, where=where)
    return ReadingSample(scene, encoded.input_ids, encoded.labels, DETAIL)


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
) -> TrainLog:
    """Train ``model`` in place to answer the world's captions and questions from object vectors.

    ``image_paths[i]`` is the captioned train image whose objects are ``regions[i]`` (see ``corpus.read_world``).
    ``after_warm()``, called when the warm-up tasks' steps are done, says whether the warm-up's lookups formed. If
    not, the warm-up goes on (``ReaderSpec.warm_extension``; ``log.extra["warm_extension"]`` counts its steps),
    asking again every ``warm_check_every`` steps; if they never form, the phase stops there when ``give_up``
    (``log.extra["stopped_after_warm"]``: the start is lost, and stopping saves the rest of the phase), and
    otherwise goes on with every task.
    """
    spec = spec or ReaderSpec()
    codes = object_codes(regions, vision, model.config.hidden_size, seed, spec.word_pairs, spec.patch_codes)
    # One pass over the records for both phases; the box phase's task is read only when the phase runs.
    box_tasks = (spec.box_task,) if spec.box_steps else ()
    every = reading_samples(world_dir, image_paths, tokenizer, codes.parts.shape[1], (*spec.tasks, *box_tasks),
                            detailed=spec.detailed_captions)  # fmt: skip
    samples = [s for s in every if s.task in (CAPTION, DETAIL) or s.task in spec.tasks]
    boxes = [s for s in every if s.task in box_tasks]
    warm = [s for s in samples if s.task in (*spec.warm_tasks, CAPTION)]
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    collate = PaddingCollator(tokenizer.pad_token_id)
    embed = model.get_input_embeddings()
    rng = random.Random(seed)
    drop_generator = torch.Generator().manual_seed(seed)
    warm_steps = int(spec.steps * spec.warm_fraction) if warm else 0

    def batch_loss(batch: list[ReadingSample]) -> torch.Tensor:
        padded = collate([{"input_ids": s.input_ids, "labels": s.labels} for s in batch])
        ids = padded["input_ids"]
        vectors = codes.vectors([s.scene for s in batch], spec.code_dropout, drop_generator)
        inputs = embed_with_vectors(embed, ids, image_id, vectors)
        return model(inputs_embeds=inputs, attention_mask=padded["attention_mask"], labels=padded["labels"]).loss

    # The warm-up ends at ``warm_steps`` once after_warm() says its lookups formed; until then, extra warm-up steps.
    warm_end = {"extra": 0, "done": after_warm is None or warm_steps == 0, "missed": False}

    def loss_fn(step: int) -> torch.Tensor:
        pool = warm if step < warm_steps or not warm_end["done"] else samples
        return batch_loss(rng.sample(pool, min(spec.batch_size, len(pool))))

    def warming_past_end(step: int) -> bool:
        return step == warm_steps and not warm_end["done"]

    def stop(step: int) -> bool:
        extra = warm_end["extra"]
        if not warming_past_end(step):
            return False
        if extra % max(1, spec.warm_check_every) and extra < spec.warm_extension:  # between checks
            return False
        model.eval()
        met = after_warm()
        model.train()
        if met or extra >= spec.warm_extension:
            warm_end.update(done=True, missed=not met)
        return warm_end["missed"] and give_up

    def hold(step: int) -> bool:
        holding = warming_past_end(step)
        warm_end["extra"] += holding
        return holding

    model.train()
    log = run_steps(
        model.parameters(),
        loss_fn,
        spec.steps,
        spec.lr,
        spec.weight_decay,
        spec.warmup_steps,
        "teach reading",
        progress,
        stop,
        hold,
    )
    log.extra["warm_extension"] = warm_end["extra"]
    stopped = warm_end["missed"] and give_up
    if stopped:
        log.extra["stopped_after_warm"] = len(log.losses)
    if (boxes or spec.mc_fraction) and spec.box_steps and not stopped:
        questions = [s for s in samples if s.task != CAPTION]  # as measured: the captions rest in this phase
        n_boxes = max(1, round(spec.batch_size * spec.box_fraction))
        n_mc = min(round(spec.batch_size * spec.mc_fraction), spec.batch_size - n_boxes)  # at least one box
        if n_mc:
            found = option_questions(world_dir, "train", scene_lookup(world_dir, image_paths, "train"))
            options = OptionSampler(found, tokenizer, codes.parts.shape[1], spec.mc_lookup_share)
            log.extra["mc_samples"] = len(found)

        # Its own sample order, so that the phase does not change with how many main steps ran before it.
        box_rng = random.Random(seed)

        def box_loss_fn(step: int) -> torch.Tensor:
            kept = box_rng.sample(questions, min(spec.batch_size - n_boxes - n_mc, len(questions)))
            chosen = [ReadingSample(*options.draw(box_rng), MC_TASK) for _ in range(n_mc)]
            return batch_loss(box_rng.sample(boxes, min(n_boxes, len(boxes))) + chosen + kept)

        box_log = run_steps(
            model.parameters(),
            box_loss_fn,
            spec.box_steps,
            spec.box_lr,
            spec.weight_decay,
            spec.warmup_steps,
            "teach boxes",
            progress,
        )
        log.extra.update(box_steps=len(box_log.losses), box_final_loss=box_log.final_loss, box_seconds=box_log.seconds)
    model.eval()
    log.extra["samples"] = len(samples)
    log.extra["box_samples"] = len(boxes)
    return log
