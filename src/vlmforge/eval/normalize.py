"""VQA answer normalisation, as lmms-eval's ``EvalAIAnswerProcessor`` applies it (VQAv2, and every task scored
by normalised match), and the variant of its punctuation step that VLMEvalKit uses for yes/no answers.

The steps: newlines and tabs become spaces, punctuation is removed or turned into spaces, periods not followed by
a digit are dropped, number words become digits, articles are dropped and contractions get their apostrophe.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

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
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
# Robust scoring also reads the numbers a model spells out beyond ten.
ROBUST_NUMBER_WORDS = NUMBER_WORDS | {
    "eleven": "11", "twelve": "12", "thirteen": "13", "fourteen": "14", "fifteen": "15", "sixteen": "16",
    "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20", "thirty": "30", "forty": "40",
    "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90", "hundred": "100",
}  # fmt: skip
ARTICLES = frozenset({"a", "an", "the"})
PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
# lmms-eval's period rule is written "(?!<=\d)", a typo for a look-behind: it drops every period that is not
# followed by a digit, including one after a digit.
LMMS_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
LMMS_COMMA = re.compile(r"(?<=\d)(\,)+(?=\d)")
VLMEVALKIT_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")
VLMEVALKIT_COMMA = re.compile(r"(\d)(,)(\d)")
# Both references pass re.UNICODE (32) where re.sub takes its count, so only the first 32 periods go.
REFERENCE_PERIOD_COUNT = 32


def process_punctuation(
    text: str, comma: re.Pattern = LMMS_COMMA, period: re.Pattern = LMMS_PERIOD, count: int = REFERENCE_PERIOD_COUNT
) -> str:
    """Each punctuation mark is deleted where it touches a space somewhere in the text (or where the text has a
    digit-comma-digit), else replaced by a space; then periods go (``count`` 0: all of them)."""
    out = text
    has_number_comma = comma.search(text) is not None
    for p in PUNCT:
        if p + " " in text or " " + p in text or has_number_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return period.sub("", out, count=count)


def process_digit_article(text: str, numbers: Mapping[str, str] = NUMBER_WORDS) -> str:
    words = [numbers.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def vqa_normalize(text: str) -> str:
    """The reference normalisation of one answer (prediction or annotation), as lmms-eval's VQAv2 scorer does it."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


def vqa_normalize_robust(text: str) -> str:
    """The same, with every period handled and number words up to twenty (and the tens) read as digits."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text, count=0), ROBUST_NUMBER_WORDS)
