"""A byte-level BPE tokenizer trained on the world's text: the tiny stand-in for Qwen's tokenizer.

Byte-level BPE (as GPT-2/Qwen) never meets an unknown character, so any user text still tokenizes. The special
tokens and the ChatML template match what ``vlmforge.models.assemble`` expects from a chat LM, so the saved
tokenizer needs no patching when a LLaVA is assembled on top of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from vlmforge.errors import ConfigError
from vlmforge.models.assemble import DEFAULT_CHAT_TEMPLATE, IMAGE_TOKEN

PAD_TOKEN = "<|endoftext|>"  # also the document separator when packing pretraining text (as in Qwen)
EOS_TOKEN = "<|im_end|>"  # ends every chat turn, so generation stops after one assistant answer
SPECIAL_TOKENS = [PAD_TOKEN, "<|im_start|>", EOS_TOKEN, IMAGE_TOKEN]
# The words the chat template writes around every turn. The world's text never contains them, so without this
# "assistant" was 8 single-character tokens before every answer: noise a tiny LM must learn to look past. They are
# counted once per training text, about as often as rendered chats would contain them, so BPE merges them early.
TEMPLATE_WORDS = ["system", "user", "assistant"]


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 1024, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with ChatML special tokens, ``<image>`` and a chat template; the template's
    role words (``TEMPLATE_WORDS``) are learned as whole tokens, as in a hub chat LM's tokenizer."""
    if vocab_size <= 256 + len(SPECIAL_TOKENS):
        raise ConfigError(f"tokenizer vocab_size {vocab_size} must exceed the 256 byte symbols + special tokens")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        # The full byte alphabet keeps every string encodable, not only the characters seen in training.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = list(texts)
    bpe.train_from_iterator(chain(texts, TEMPLATE_WORDS * len(texts)), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=SPECIAL_TOKENS[1:],
        chat_template=DEFAULT_CHAT_TEMPLATE,
        model_max_length=model_max_length,
        padding_side="right",
    )
