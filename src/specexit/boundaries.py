"""Semantic-boundary detection on a token stream (pure Python, no torch).

A *paragraph* boundary is the token that completes a blank line: the decoded text so far ends with
``"\\n" + optional spaces/tabs + "\\n"``.  This covers the six single tokens the reference code lists
(``"\\n\\n"``, ``".\\n\\n"``, ``" \\n\\n"`` and their triple-newline forms) and also tokenizers that emit
newlines one token at a time.  A *connector* boundary is a connector word ("Wait", "But", "So", ...)
that starts a paragraph; the cut for it goes *before* the connector, so the re-check is never begun.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_BLANK_LINE_END = re.compile(r"\n[ \t\r]*\n[ \t\r]*$")  # \r: CRLF text
_TAIL_CHARS = 16  # enough context to see a blank line or a paragraph start

DEFAULT_CONNECTORS: tuple[str, ...] = ("Wait", "But", "So", "Alternatively", "Hmm", "However")


@dataclass(frozen=True)
class Boundary:
    """A boundary found at token ``index`` of the scanned batch.

    ``keep`` is how many tokens of the batch stay when exiting here: ``index + 1`` for a paragraph
    break (the break is kept), ``index`` for a connector (the connector is dropped).
    """

    index: int
    keep: int
    kind: str  # "paragraph" | "connector"
    text: str


class BoundaryDetector:
    """Stateful scanner: feed it every generated token in order, it reports boundaries.

    ``token_text`` maps a token id to its decoded text; results are memoised because the same ids
    recur constantly and decoding through a tokenizer is slow.
    """

    def __init__(
        self,
        token_text: Callable[[int], str],
        paragraph: bool = True,
        connectors: Iterable[str] = (),
    ) -> None:
        self._token_text = token_text
        self._cache: dict[int, str] = {}
        self.paragraph = paragraph
        self.connectors = frozenset(c.strip() for c in connectors if c.strip())
        self._tail = ""

    def text(self, token_id: int) -> str:
        t = self._cache.get(token_id)
        if t is None:
            t = self._token_text(token_id)
            self._cache[token_id] = t
        return t

    def reset(self, context: str = "") -> None:
        """Start a new sequence; ``context`` is the text preceding the first scanned token."""
        self._tail = context[-_TAIL_CHARS:]

    def _at_paragraph_start(self) -> bool:
        return bool(_BLANK_LINE_END.search(self._tail)) or self._tail.endswith("\n\n")

    def push(self, token_id: int) -> tuple[str, str] | None:
        """Advance over one token; return ``(kind, text)`` if it is a boundary, else ``None``."""
        text = self.text(token_id)
        found: tuple[str, str] | None = None
        if self.connectors and text.strip() in self.connectors and self._at_paragraph_start():
            found = ("connector", text)
        self._tail = (self._tail + text)[-_TAIL_CHARS:]
        if found is None and self.paragraph and "\n" in text and _BLANK_LINE_END.search(self._tail):
            found = ("paragraph", text)
        return found

    def scan(self, token_ids: Iterable[int]) -> list[Boundary]:
        """Push a batch of tokens; return every boundary in it (state advances past all of them)."""
        out = []
        for i, tid in enumerate(token_ids):
            hit = self.push(tid)
            if hit is not None:
                kind, text = hit
                out.append(Boundary(index=i, keep=i + 1 if kind == "paragraph" else i, kind=kind, text=text))
        return out
