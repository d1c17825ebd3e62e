"""Training the generator is an ordinary recipe; Genixer's synthetic stage trains the projector alone on chat data
(``tune: projector``)."""

from __future__ import annotations

import pytest

from vlmforge.errors import ConfigError


def test_projector_only_finetune_stage(tiny_llava):
    from transformers import LlavaForConditionalGeneration

    from vlmforge.train.recipe import StageConfig
    from vlmforge.train.trainable import configure_trainable

    model = configure_trainable(
        LlavaForConditionalGeneration.from_pretrained(tiny_llava), StageConfig(tune="projector")
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("multi_modal_projector" in n for n in trainable)
    with pytest.raises(ConfigError, match="projector alone"):
        configure_trainable(model, StageConfig(tune="projector", unfreeze_vision=True))
