"""A byte-level BPE chat tokenizer trained on a corpus: the tiny stand-in for a hub LM's tokenizer (Qwen's).

Byte-level BPE (as GPT-2/Qwen) never meets an unknown character, so any user text still tokenizes. The special
tokens and the ChatML template match what ``vlmforge.models.assemble`` expects from a chat LM, so the saved
tokenizer needs no patching when a LLaVA is assembled on top of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from vlmforge.errors import ConfigError
from vlmforge.models.assemble import DEFAULT_CHAT_TEMPLATE, IMAGE_TOKEN

PAD_TOKEN = "<|endoftext|>"  # also the document separator when packing pretraining text (as in Qwen)
EOS_TOKEN = "<|im_end|>"  # ends every chat turn, so generation stops after one assistant answer
SPECIAL_TOKENS = [PAD_TOKEN, "<|im_start|>", EOS_TOKEN, IMAGE_TOKEN]
# The words the chat template writes around every turn. A small corpus may never contain them, and then
# "assistant" becomes single-character tokens before every answer: noise a tiny LM must learn to look past. They are
# counted once per training text, about as often as rendered chats would contain them, so BPE merges them early.
TEMPLATE_WORDS = ["system", "user", "assistant"]
# Qwen2's pre-tokenization (transformers' Qwen2Tokenizer): words with one leading non-letter, every digit on its own.
# The foundation LM is a Qwen2 model, so AutoTokenizer loads the saved folder as Qwen2Tokenizer, which rebuilds this
# pipeline (NFC, this split, byte-level) around the saved vocabulary and merges and ignores the one in
# tokenizer.json. Training with any other pipeline makes the saved tokenizer split text (boxes' digits above all)
# differently from the one the LM was trained with.
QWEN2_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 1024, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with ChatML special tokens, ``<image>`` and a chat template; the template's
    role words (``TEMPLATE_WORDS``) are learned as whole tokens, as in a hub chat LM's tokenizer."""
    if vocab_size <= 256 + len(SPECIAL_TOKENS):
        raise ConfigError(f"tokenizer vocab_size {vocab_size} must exceed the 256 byte symbols + special tokens")
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
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
