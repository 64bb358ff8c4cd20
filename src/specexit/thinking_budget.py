"""A thinking budget that ends at a boundary (pure Python, no torch).

Serving engines cap thinking with a hard token count, which cuts mid-word and mid-step.  This budget
of N thinking tokens ends the span at the last boundary that fits, judged token by token as the
output grows (the engine cannot look ahead):

- at a paragraph break, if the room left (N - t) is smaller than this output's mean paragraph so far:
  the next step would not finish inside the budget, so it is not begun;
- else at a sentence end (a word that follows ``.``, ``!`` or ``?``; the cut goes before the word), if the
  room is smaller than the mean sentence so far;
- else at a word start (the cut goes before the word), if fewer than ``WORD_ROOM`` tokens are left;
- and at t = N in any case (a single word longer than the room; the only cut that can land mid-word).

The estimates are this output's own step lengths (measured, model-independent); before the first
paragraph / sentence there is none, and only the later tiers apply.  Never more than N thinking tokens,
under speculative decoding too: the policy walks a round's accepted tokens one by one and exits at the
first that qualifies, dropping the rest of the round.
"""

from __future__ import annotations

WORD_ROOM = 4  # tokens: longer than most words, so a word begun with less room left would not fit
_SENTENCE_END = (".", "!", "?")


class BoundaryBudget:
    """Feed every thinking token in order; ``push`` says when (and how) to end the span."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._paragraphs: list[int] = []  # lengths of finished paragraphs (tokens)
        self._sentences: list[int] = []
        self._para_start = 0  # thinking position where the current paragraph / sentence began
        self._sent_start = 0
        self._prev_text = ""

    @staticmethod
    def _mean(xs: list[int]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    def push(self, t: int, text: str, paragraph: bool) -> tuple[int, str] | None:
        """Token ``text`` just made the thinking ``t`` tokens long; ``paragraph``: it completes a paragraph
        break.  Returns None (go on) or ``(drop, kind)``: end the span dropping the last ``drop`` tokens
        (0: keep this one, 1: cut before it), ``kind`` naming the boundary."""
        room_before = self.budget - (t - 1)  # room if the span ended before this token
        starts_word = text[:1].isspace() and text.strip() != ""
        after_sentence = self._prev_text.rstrip().endswith(_SENTENCE_END) and self._prev_text.strip() != ""
        self._prev_text = text if text.strip() else self._prev_text + text
        if starts_word and after_sentence:
            self._sentences.append(t - 1 - self._sent_start)
            self._sent_start = t - 1
            mean_para = self._mean(self._paragraphs)
            mean_sent = self._mean(self._sentences)
            short = mean_sent is not None and room_before < mean_sent
            if short and (mean_para is None or room_before < mean_para):
                return 1, "budget-sentence"
        if starts_word and room_before < WORD_ROOM:
            return 1, "budget-word"
        if paragraph:
            self._paragraphs.append(t - self._para_start)
            self._para_start = self._sent_start = t
            self._prev_text = ""
            mean_para = self._mean(self._paragraphs)
            if t >= self.budget or (mean_para is not None and self.budget - t < mean_para):
                return 0, "budget-paragraph"
        if t >= self.budget:
            return 0, "budget"
        return None
