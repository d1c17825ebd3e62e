import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from vlmforge.errors import ConfigError
from vlmforge.models.assemble import AssemblySpec, assemble_llava


def _ask(model, processor, image):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what colour?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=text, images=image, return_tensors="pt")
    return model.generate(**inputs, max_new_tokens=4, do_sample=False)


@pytest.mark.parametrize("projector", ["mlp2x_gelu", "linear"])
def test_assembled_llava_round_trips_through_plain_transformers(tiny_parts, tmp_path, projector):
    vision, lm = tiny_parts
    model, processor = assemble_llava(AssemblySpec(str(vision), str(lm), projector=projector))
    assert model.config.vision_feature_select_strategy == "full"  # SigLIP has no CLS token
    image = Image.new("RGB", (40, 30), (255, 0, 0))
    before = _ask(model, processor, image)
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "m")
    after = _ask(loaded, AutoProcessor.from_pretrained(tmp_path / "m"), image)
    assert type(loaded).__name__ == "LlavaForConditionalGeneration"
    assert torch.equal(before, after)


def test_assembly_copies_pretrained_lm_weights(tiny_parts):
    from transformers import AutoModelForCausalLM

    vision, lm = tiny_parts
    model, _ = assemble_llava(AssemblySpec(str(vision), str(lm)))
    source = AutoModelForCausalLM.from_pretrained(lm)
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.allclose(model(input_ids=ids).logits, source(input_ids=ids).logits, atol=1e-5)


def test_projector_starts_from_pytorchs_linear_init_as_bunny_builds_it(tiny_parts):
    """Bunny builds its projector after loading the LM, so its layers keep nn.Linear's default (kaiming-uniform)
    init, not transformers' normal(0, 0.02); the far smaller start stalls stage 1 for some seeds."""
    vision, lm = tiny_parts
    model, _ = assemble_llava(AssemblySpec(str(vision), str(lm)))
    projector = model.model.multi_modal_projector
    for layer in (projector.linear_1, projector.linear_2):
        bound = layer.in_features**-0.5  # kaiming_uniform(a=sqrt(5)) draws from U(-bound, bound)
        assert layer.weight.abs().max() <= bound
        assert layer.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.15)
        assert layer.bias.abs().max() <= bound
        assert layer.bias.abs().max() > 0  # transformers' init sets biases to zero


def test_missing_model_path_is_a_clear_error(tiny_parts, tmp_path):
    vision, _ = tiny_parts
    with pytest.raises(ConfigError, match="does not exist"):
        assemble_llava(AssemblySpec(str(vision), str(tmp_path / "no-such-lm")))


@pytest.mark.parametrize("layer", [-4, 3, [-2, -4], [], [-2.0]])
def test_a_vision_layer_the_tower_lacks_is_a_clear_error(tiny_parts, layer):
    vision, lm = tiny_parts  # two layers: hidden states -3 (patch embeddings) to 2
    with pytest.raises(ConfigError, match=r"vision_feature_layer .*3 hidden states.* from -3 to 2"):
        assemble_llava(AssemblySpec(str(vision), str(lm), vision_feature_layer=layer))


def test_every_vision_layer_the_tower_has_is_accepted(tiny_parts):
    vision, lm = tiny_parts
    model, _ = assemble_llava(AssemblySpec(str(vision), str(lm), vision_feature_layer=[-3, 2]))
    assert model.config.vision_feature_layer == [-3, 2]
