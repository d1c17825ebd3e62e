"""Turn one row's raw per-step text deltas into what a client should see.

The runtime's ``stream`` emits text as tokens arrive; ``generate`` returns the text cut at the first stop
string and stripped. ``StreamText`` holds back what might still change — a partial stop string, trailing
whitespace — so the deltas it releases always concatenate to exactly ``generate``'s text.
"""

from __future__ import annotations

from collections.abc import Sequence

from vlmforge.runtime import apply_stop  # the runtime's own stop rule, so both paths cut identically


def _partial_stop_length(text: str, stop: Sequence[str]) -> int:
    """Length of the longest end of ``text`` that could be the start of a stop string."""
    longest = min(len(text), max((len(s) for s in stop), default=1) - 1)
    for size in range(longest, 0, -1):
        tail = text[-size:]
        if any(s.startswith(tail) for s in stop):
            return size
    return 0


class StreamText:
    def __init__(self, stop: Sequence[str] = ()):
        self.stop = [s for s in stop if s]
        self.raw = ""
        self.sent = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Add raw text; return the part that is now certain (possibly empty)."""
        if self.stopped or not delta:
            return ""
        self.raw += delta
        text, stopped = apply_stop(self.raw, self.stop)
        # Where a stop string may be starting and not yet complete. Before the end it holds text back; before a
        # match it also makes the cut provisional, because the generated text is cut at the stop string that starts
        # first ("x.a" with stops "a" and ".a ": ".a " may still complete and cut at the "." instead).
        pending = len(self.raw) - _partial_stop_length(self.raw, self.stop)
        if pending < len(text):
            text, stopped = text[:pending], False
        self.stopped = stopped
        return self._release(text.strip())

    def finish(self) -> str:
        """The generation ended: release what was held back."""
        return self._release(apply_stop(self.raw, self.stop)[0].strip())

    @property
    def text(self) -> str:
        return self.sent

    def _release(self, visible: str) -> str:
        new = visible[len(self.sent) :]
        self.sent = visible
        return new
