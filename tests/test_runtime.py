import threading

from PIL import Image

from serve_support import chatty_llava  # noqa: F401  (fixture: tiny LLaVA whose greedy answers are non-empty words)
from vlmforge.eval.generator import load_generator
from vlmforge.runtime import Conversation, SamplingParams, VisionLanguageModel


def _conversations():
    red, blue = Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (48, 20), (0, 0, 255))
    return [
        Conversation.single_turn("what colour is it?", [red]),
        Conversation.single_turn("how many objects are there in this picture?", [blue]),
        Conversation.single_turn("say something"),  # text-only rows mix with image rows
    ]


def test_batched_generation_equals_one_at_a_time(chatty_llava):  # noqa: F811
    vlm = VisionLanguageModel.from_pretrained(chatty_llava)
    params = SamplingParams(max_new_tokens=6)
    batched = vlm.generate(_conversations(), params)
    single = [vlm.generate([conv], params)[0] for conv in _conversations()]
    # Non-empty and input-dependent, so the equality below compares real answers, not empty strings.
    assert all(c.text for c in single) and len({c.text for c in single}) > 1
    assert [c.text for c in batched] == [c.text for c in single]
    assert [c.prompt_tokens for c in batched] == [c.prompt_tokens for c in single]
    assert all(c.completion_tokens <= 6 for c in batched)


def test_stream_concatenates_to_the_generated_text(chatty_llava):  # noqa: F811
    vlm = VisionLanguageModel.from_pretrained(chatty_llava)
    params = SamplingParams(max_new_tokens=6)
    pieces = ["", "", ""]
    for deltas in vlm.stream(_conversations(), params):
        pieces = [p + d for p, d in zip(pieces, deltas, strict=True)]
    expected = [c.text for c in vlm.generate(_conversations(), params)]
    assert all(expected) and [p.strip() for p in pieces] == expected


def test_streams_share_one_generation_thread_that_python_joins_at_exit(chatty_llava):  # noqa: F811
    # The streamer ends before generate() returns; a process that exits then (`vlmforge chat`) used to kill a
    # per-call daemon thread mid-return ("terminate called without an active exception"). Each stream now waits for
    # its generate to return, in one long-lived non-daemon thread that Python joins, idle, at exit.
    vlm = VisionLanguageModel.from_pretrained(chatty_llava)
    before = set(threading.enumerate())
    seen = set()
    for _ in range(3):
        for _ in vlm.stream(_conversations(), SamplingParams(max_new_tokens=6)):
            pass
        new = set(threading.enumerate()) - before
        assert len(new) == 1 and not any(thread.daemon for thread in new)
        seen |= new
    assert len(seen) == 1


def test_stop_strings_cut_the_answer(chatty_llava):  # noqa: F811
    vlm = VisionLanguageModel.from_pretrained(chatty_llava)
    full = vlm.generate(_conversations()[:1], SamplingParams(max_new_tokens=8))[0].text
    assert len(full) >= 3, full
    stop = full[1:3]
    cut = vlm.generate(_conversations()[:1], SamplingParams(max_new_tokens=8, stop=[stop]))[0]
    assert stop not in cut.text and cut.finish_reason == "stop"


def test_load_generator_answers_eval_requests(tiny_llava):
    class Request:
        def __init__(self, prompt, images):
            self.prompt, self.images, self.max_new_tokens = prompt, images, 4

    generate = load_generator(tiny_llava, batch_size=2)
    requests = [Request("a?", [Image.new("RGB", (32, 32))]), Request("b?", []), Request("c?", [])]
    answers = generate(requests)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
