"""The reasoning span of chat models that do not think in tags (pure Python, no torch).

Instruction models such as Qwen2.5-Coder or SmolLM2 write a chain of thought and then their final
answer ("... Therefore the total is \\boxed{18}.") without any ``<think>`` / ``</think>`` tokens.  For
them SpecExit works on an *implicit* span:

- the span opens where generation starts (nothing marks it);
- it ends naturally where the model starts its final answer, found in the text by *answer markers*
  (``\\boxed``, ``####``, "final answer"; case-insensitive);
- an exit (or a thinking budget, or a probe) cuts it at a boundary and forces the *answer trigger*, a
  text of several tokens (default ``"The final answer is \\boxed{"``), after which the model writes the
  answer itself.

A thinking model's think-end token is the one-token case of the same idea.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

DEFAULT_ANSWER_TRIGGER = "The final answer is \\boxed{"
DEFAULT_ANSWER_MARKERS: tuple[str, ...] = ("\\boxed", "####", "final answer")


def find_marker(text: str, markers: Sequence[str], start: int = 0) -> int | None:
    """Earliest index >= ``start`` where any marker begins in ``text`` (case-insensitive), else None."""
    low = text.lower()
    hits = [i for m in markers if m and (i := low.find(m.lower(), start)) >= 0]
    return min(hits) if hits else None


class MarkerScanner:
    """Finds the first answer marker in a token stream, fed one token's text at a time.

    ``push`` returns None until a marker is complete; then the number of tokens pushed so far (this one
    included) whose text reaches into the marker or beyond, i.e. the tokens that belong to the answer.
    """

    def __init__(self, markers: Iterable[str]) -> None:
        self.markers = tuple(m for m in markers if m)
        self._keep = max((len(m) for m in self.markers), default=1)
        self._pieces: deque[str] = deque()  # recent token texts, enough to hold the longest marker
        self._chars = 0
        self.found = False

    def push(self, text: str) -> int | None:
        if self.found or not self.markers:
            return None
        self._pieces.append(text)
        self._chars += len(text)
        while len(self._pieces) > 1 and self._chars - len(self._pieces[0]) >= self._keep + len(text):
            self._chars -= len(self._pieces.popleft())
        tail = "".join(self._pieces)
        at = find_marker(tail, self.markers, start=max(0, len(tail) - len(text) - self._keep + 1))
        if at is None:
            return None
        self.found = True
        end, count = len(tail), 0
        for piece in reversed(self._pieces):  # tokens ending after the marker's start are answer tokens
            if end <= at:
                break
            count += 1
            end -= len(piece)
        return count


def reasoning_length(token_texts: Sequence[str], markers: Sequence[str]) -> int | None:
    """How many leading tokens are reasoning: the tokens before the one where the first answer marker
    begins; None if no marker occurs."""
    scan = MarkerScanner(markers)
    for i, text in enumerate(token_texts):
        back = scan.push(text)
        if back is not None:
            return i + 1 - back
    return None


def last_paragraph(text: str) -> str:
    """The final non-empty paragraph: the answer of an output that ends without any answer marker."""
    parts = [p for p in text.strip().split("\n\n") if p.strip()]
    return parts[-1].strip() if parts else ""


def parse_markers(text: str) -> tuple[str, ...]:
    """``--answer-markers`` value: comma-separated marker strings."""
    return tuple(m.strip() for m in text.split(",") if m.strip())


def add_answer_trigger_args(p) -> None:
    """The CLI options of an implicit reasoning span (generate, bench, train)."""
    p.add_argument(
        "--answer-trigger",
        default=None,
        help="for a chat model without think tokens: text forced to end its reasoning "
        f"(e.g. {DEFAULT_ANSWER_TRIGGER!r}); the span then opens where generation starts",
    )
    p.add_argument(
        "--answer-markers",
        default=",".join(DEFAULT_ANSWER_MARKERS),
        help="with --answer-trigger: comma-separated text that shows the model began its answer itself",
    )


def answer_trigger_kwargs(a) -> dict:
    """SpecExitGenerator keyword arguments from parsed ``add_answer_trigger_args`` options."""
    if getattr(a, "answer_trigger", None) is None:
        return {}
    return {"answer_trigger": a.answer_trigger, "answer_markers": parse_markers(a.answer_markers)}
