import re

import pytest
from PIL import Image
from transformers import AutoProcessor

from vlmforge.data.chat import IGNORE_INDEX, encode_conversation, image_seq_length
from vlmforge.data.validate import validate_record
from vlmforge.errors import DataError
from vlmforge.models.assemble import DEFAULT_CHAT_TEMPLATE

# Llama-3 style: string content only (a list would print as its Python repr), BOS text, <|eot_id|> ends a turn.
LLAMA3_TEMPLATE = (
    "{% for message in messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Qwen-style: content parts, a default system prompt injected by the template, no newline after <image>.
SYSTEM_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}{{ '[SYS]You are helpful.[/SYS]' }}{% endif %}"
    "{% for message in messages %}{{ '[' + message['role'] + ']' }}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>' }}"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{{ '[/turn]' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '[assistant]' }}{% endif %}"
)
# The default ChatML without its {% generation %} markers: the same text, labels found from prefix renders.
CHATML_UNMARKED = re.sub(r"\{% (end)?generation %\}", "", DEFAULT_CHAT_TEMPLATE)
TEMPLATES = {
    "chatml": (None, "<|im_end|>"),
    "chatml-unmarked": (CHATML_UNMARKED, "<|im_end|>"),
    "llama3": (LLAMA3_TEMPLATE, "<|eot_id|>"),
    "system": (SYSTEM_TEMPLATE, "[/turn]"),
}


@pytest.fixture(scope="module")
def processors(tiny_llava):
    out = {}
    for name, (template, eot) in TEMPLATES.items():
        processor = AutoProcessor.from_pretrained(tiny_llava)
        if template:
            extra = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", eot]
            processor.tokenizer.add_special_tokens({"additional_special_tokens": extra, "bos_token": extra[0]})
            processor.chat_template = processor.tokenizer.chat_template = template
        out[name] = processor
    return out


@pytest.fixture()
def image_folder(tmp_path):
    for name, colour in [("a.png", (255, 0, 0)), ("b.png", (0, 0, 255))]:
        Image.new("RGB", (40, 30), colour).save(tmp_path / name)
    return tmp_path


def _record(*turns, image=None):
    record = {
        "id": "r",
        "conversations": [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(turns)],
    }
    if image:
        record["image"] = image
    return record


def labelled_runs(tokenizer, sample):
    """Decode each contiguous run of labelled tokens."""
    runs, current = [], []
    for token, label in zip(sample.input_ids, sample.labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    runs += [current] if current else []
    return [tokenizer.decode(run, skip_special_tokens=False) for run in runs]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_labels_cover_exactly_assistant_content_and_end_of_turn(processors, image_folder, name):
    processor, eot = processors[name], TEMPLATES[name][1]
    record = validate_record(
        _record(
            "What colour is the circle? <image>",
            "red",
            "How many objects are there?",
            "3 objects",
            image="a.png",
        ),
        "t:1",
        image_folder,
    )
    sample = encode_conversation(record, processor)
    assert labelled_runs(processor.tokenizer, sample) == [f"red{eot}", f"3 objects{eot}"]
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert sample.input_ids.count(image_id) == image_seq_length(processor) == 16  # 32 px / patch 8, squared
    assert all(
        label == IGNORE_INDEX for token, label in zip(sample.input_ids, sample.labels, strict=True) if token == image_id
    )


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_text_only_record_is_encoded_without_images(processors, name):
    processor, eot = processors[name], TEMPLATES[name][1]
    sample = encode_conversation(_record("Say the colour.", "red"), processor)
    assert sample.n_images == 0 and labelled_runs(processor.tokenizer, sample) == [f"red{eot}"]


@pytest.mark.parametrize("name", ["chatml", "llama3"])
def test_image_expansion_matches_llava_processor(processors, image_folder, name):
    processor = processors[name]
    record = validate_record(
        _record("<image> <image> Which is red, first or second?", "first", image=["a.png", "b.png"]),
        "t:1",
        image_folder,
    )
    images = [Image.open(image_folder / "a.png"), Image.open(image_folder / "b.png")]
    # Render independently of vlmforge: the processor's own parts path, or inline markers for string templates.
    if name == "chatml":
        content = [
            {"type": "image"},
            {"type": "image"},
            {"type": "text", "text": "Which is red, first or second?"},
        ]
        messages = [
            {"role": "user", "content": content},
            {"role": "assistant", "content": [{"type": "text", "text": "first"}]},
        ]
        text = processor.apply_chat_template(messages)
    else:
        messages = [
            {"role": "user", "content": "<image>\n<image>\nWhich is red, first or second?"},
            {"role": "assistant", "content": "first"},
        ]
        text = processor.tokenizer.apply_chat_template(messages, tokenize=False)
    expected = processor(text=text, images=images, return_tensors="pt")
    pixel_values = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    sample = encode_conversation(record, processor, pixel_values=pixel_values)
    assert sample.input_ids == expected["input_ids"][0].tolist()
    assert sample.n_images == 2


def test_plain_template_labels_caption_and_eos_only(processors, image_folder):
    processor = processors["chatml"]
    caption = "a red circle at the top left"
    record = validate_record(_record("<image>\nDescribe.", caption, image="a.png"), "t:1", image_folder)
    sample = encode_conversation(record, processor, template="plain")
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert sample.input_ids[:16] == [image_id] * 16 and sample.input_ids[16] != image_id
    assert labelled_runs(processor.tokenizer, sample) == [caption + processor.tokenizer.eos_token]
    with pytest.raises(DataError, match="one human turn and one gpt turn"):
        encode_conversation(_record("a", "b", "c", "d"), processor, template="plain")


def test_bunny_normalisation_moves_image_to_turn_start(image_folder):
    record = _record("  What is this? <image> ", "a circle", image="a.png")
    out = validate_record(record, "t:1", image_folder)
    assert out["conversations"][0]["value"] == "<image>\nWhat is this?"
    assert record["conversations"][0]["value"] == "  What is this? <image> "  # input left untouched


def test_template_that_rewrites_earlier_turns_is_refused(tiny_llava):
    processor = AutoProcessor.from_pretrained(tiny_llava)
    # Marks only the last message: earlier turns render differently once a later one follows.
    processor.chat_template = "{% for m in messages %}{{ m['content'] }}{% if loop.last %}[END]{% endif %}{% endfor %}"
    with pytest.raises(DataError) as err:
        encode_conversation(_record("hi", "red"), processor, where="f.jsonl:3")
    assert err.value.code == "template_mismatch" and err.value.where == "f.jsonl:3"


def test_generation_markers_and_prefix_renders_label_the_same_tokens(processors, image_folder):
    record = validate_record(
        _record("<image>\nWhat colour is it?", "red", "And its shape?", "a circle", image="a.png"), "t:1", image_folder
    )
    marked, unmarked = processors["chatml"], processors["chatml-unmarked"]
    assert "{% generation %}" in marked.chat_template and "{% generation %}" not in unmarked.chat_template
    one, other = encode_conversation(record, marked), encode_conversation(record, unmarked)
    assert one.input_ids == other.input_ids and one.labels == other.labels
    assert labelled_runs(marked.tokenizer, one) == ["red<|im_end|>", "a circle<|im_end|>"]


def test_template_that_marks_only_some_assistant_turns_is_refused(tiny_llava):
    processor = AutoProcessor.from_pretrained(tiny_llava)
    processor.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' and loop.index0 == 1 %}"
        "{% generation %}{{ m['content'] }}{% endgeneration %}{% else %}{{ m['content'] }}{% endif %}{% endfor %}"
    )
    with pytest.raises(DataError) as err:
        encode_conversation(_record("hi", "red", "and?", "blue"), processor, where="f.jsonl:4")
    assert err.value.code == "template_mismatch" and "1 non-empty" in str(err.value) and err.value.where == "f.jsonl:4"


def test_a_fixed_image_token_count_is_read_from_the_processor_and_none_where_the_image_decides():
    from types import SimpleNamespace as Processor

    from transformers import CLIPImageProcessor, LlavaNextImageProcessor, SiglipImageProcessor

    from vlmforge.data.chat import fixed_image_tokens

    grid = {"patch_size": 8, "num_additional_image_tokens": 0, "vision_feature_select_strategy": "full"}
    side = {"height": 32, "width": 32}
    assert fixed_image_tokens(Processor(image_seq_length=12)) == 12  # a stated count (the embedding VLM's)
    assert fixed_image_tokens(Processor(image_processor=SiglipImageProcessor(size=side), **grid)) == 16
    cropped = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=side)
    assert fixed_image_tokens(Processor(image_processor=cropped, **grid)) == 16
    # the output size follows the image's: only processing the image tells its count
    uncropped = CLIPImageProcessor(size={"shortest_edge": 32}, do_center_crop=False)
    assert fixed_image_tokens(Processor(image_processor=uncropped, **grid)) is None
    assert fixed_image_tokens(Processor(image_processor=LlavaNextImageProcessor(), **grid)) is None  # any-resolution
    assert fixed_image_tokens(Processor()) is None
