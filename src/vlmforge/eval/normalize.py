"""Answer normalisation and parsing, as the reference evaluation scripts do it.

* VQA normalisation: the official VQA evaluation script (``vqaEval.py``: processPunctuation +
  processDigitArticle), as LLaVA's and lmms-eval's EvalAIAnswerProcessor apply it to predictions.
* Yes/no: MME (first word) and POPE (first sentence; "no"/"not" means no) as in LLaVA's eval scripts.
* Option letters: ScienceQA as LLaVA's ``eval_science_qa.py``; MMBench-style as VLMEvalKit's ``can_infer``.
* Boxes: the first ``[x1, y1, x2, y2]`` in free text, and IoU.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence

# Official VQA tables. Keys are the apostrophe-less forms a model (or annotator) may type.
_CONTRACTION_PAIRS = (
    "aint ain't|arent aren't|cant can't|couldve could've|couldnt couldn't|couldn'tve couldn't've|"
    "couldnt've couldn't've|didnt didn't|doesnt doesn't|dont don't|hadnt hadn't|hadnt've hadn't've|"
    "hadn'tve hadn't've|hasnt hasn't|havent haven't|hed he'd|hed've he'd've|he'dve he'd've|hes he's|howd how'd|"
    "howll how'll|hows how's|Id've I'd've|I'dve I'd've|Im I'm|Ive I've|isnt isn't|itd it'd|itd've it'd've|"
    "it'dve it'd've|itll it'll|let's let's|maam ma'am|mightnt mightn't|mightnt've mightn't've|"
    "mightn'tve mightn't've|mightve might've|mustnt mustn't|mustve must've|neednt needn't|notve not've|"
    "oclock o'clock|oughtnt oughtn't|ow's'at 'ow's'at|'ows'at 'ow's'at|'ow'sat 'ow's'at|shant shan't|"
    "shed've she'd've|she'dve she'd've|she's she's|shouldve should've|shouldnt shouldn't|"
    "shouldnt've shouldn't've|shouldn'tve shouldn't've|somebody'd somebodyd|somebodyd've somebody'd've|"
    "somebody'dve somebody'd've|somebodyll somebody'll|somebodys somebody's|someoned someone'd|"
    "someoned've someone'd've|someone'dve someone'd've|someonell someone'll|someones someone's|"
    "somethingd something'd|somethingd've something'd've|something'dve something'd've|somethingll something'll|"
    "thats that's|thered there'd|thered've there'd've|there'dve there'd've|therere there're|theres there's|"
    "theyd they'd|theyd've they'd've|they'dve they'd've|theyll they'll|theyre they're|theyve they've|"
    "twas 'twas|wasnt wasn't|wed've we'd've|we'dve we'd've|weve we've|werent weren't|whatll what'll|"
    "whatre what're|whats what's|whatve what've|whens when's|whered where'd|wheres where's|whereve where've|"
    "whod who'd|whod've who'd've|who'dve who'd've|wholl who'll|whos who's|whove who've|whyll why'll|"
    "whyre why're|whys why's|wont won't|wouldve would've|wouldnt wouldn't|wouldnt've wouldn't've|"
    "wouldn'tve wouldn't've|yall y'all|yall'll y'all'll|y'allll y'all'll|yall'd've y'all'd've|"
    "y'alld've y'all'd've|y'all'dve y'all'd've|youd you'd|youd've you'd've|you'dve you'd've|youll you'll|"
    "youre you're|youve you've"
)
CONTRACTIONS: dict[str, str] = dict(pair.split(" ") for pair in _CONTRACTION_PAIRS.split("|"))
MANUAL_MAP = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = frozenset({"a", "an", "the"})
PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
# The official regex is "(?!<=\d)(\.)(?!\d)" (a typo for a look-behind): it strips every period not followed by
# a digit. We keep its behaviour.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def vqa_process_punctuation(text: str) -> str:
    out = text
    for p in PUNCT:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def vqa_process_digit_article(text: str) -> str:
    words = [MANUAL_MAP.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def vqa_normalize(text: str) -> str:
    """The VQA answer normalisation: whitespace, punctuation, number words -> digits, articles, contractions."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return vqa_process_digit_article(vqa_process_punctuation(text))


def simple_normalize(text: str) -> str:
    """Lower-case, trimmed, without a trailing period: LLaVA's GQA convention (``answer.rstrip('.').lower()``)."""
    return text.strip().rstrip(".").strip().lower()


def _words(text: str) -> list[str]:
    return [w.strip(string.punctuation).lower() for w in text.split()]


def parse_yes_no_first_word(text: str) -> str:
    """MME: the first word, case-insensitive, punctuation stripped -> "yes" | "no" | "other" (counts as wrong)."""
    words = [w for w in _words(text) if w]
    return words[0] if words and words[0] in ("yes", "no") else "other"


def parse_yes_no_pope(text: str) -> str:
    """POPE: keep the first sentence; if it contains the word "no" or "not" the answer is no, else yes."""
    first = text.split(".")[0].replace(",", "")
    return "no" if {"no", "not"} & set(_words(first)) else "yes"


_ANSWER_IS = re.compile(r"The answer is ([A-Z])\.")


def parse_letter_scienceqa(text: str, options: Sequence[str]) -> str | None:
    """LLaVA's ScienceQA rule: a bare letter, "X. ..." prefix, or exactly one "The answer is X."; else None."""
    text = text.strip()
    if text in options:
        return text
    if len(text) >= 3 and text[0] in options and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 and found[0] in options else None


_OPTION_SPLIT = ".()[],:;!*#{}"


def infer_option(text: str, choices: Mapping[str, str]) -> str | None:
    """VLMEvalKit's ``can_infer``: the one option letter that appears as a token, else the one option whose
    text appears in the answer; None when ambiguous or absent."""
    mod = text
    for ch in _OPTION_SPLIT:
        mod = mod.replace(ch, " ")
    tokens = mod.split()
    hits = [letter for letter in choices if letter in tokens]
    if len(hits) == 1:
        return hits[0]
    if hits:  # several letters named: ambiguous, and text matching would not resolve it reliably
        return None
    lowered = text.lower()
    by_text = [letter for letter, option in choices.items() if str(option).lower() in lowered]
    return by_text[0] if len(by_text) == 1 else None
