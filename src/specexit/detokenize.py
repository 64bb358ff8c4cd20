"""Incremental detokenisation: text deltas from a growing token list in O(new tokens) per push.

Shared by the engine's stream (``StreamChunk.text``) and the server's per-field text
(:class:`specexit.serve.text.TextAssembler`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

Decode = Callable[[list[int]], str]


class IncrementalDetokenizer:
    """Incremental decoding in O(new tokens): only a short window before the new tokens is decoded
    again (byte-level BPE can merge across the boundary), and half a multi-byte character is held back
    until it is complete.  The deltas concatenate to the decoding of all tokens pushed.

    Decodes with ``tokenizer.decode(ids, skip_special_tokens=...)``, or with any ``decode`` function
    (ids -> text) given instead of a tokenizer.
    """

    WINDOW = 6

    def __init__(self, tokenizer: Any = None, skip_special_tokens: bool = False, *, decode: Decode | None = None):
        if (tokenizer is None) == (decode is None):
            raise TypeError("give either a tokenizer or a decode function")
        self._decode: Decode = decode or partial(tokenizer.decode, skip_special_tokens=skip_special_tokens)
        self.ids: list[int] = []
        self.prefix = 0  # start of the window decoded again for context
        self.read = 0  # tokens whose text has been emitted

    def _text(self, start: int, end: int) -> str:
        return self._decode(self.ids[start:end])

    def push(self, ids: list[int]) -> str:
        self.ids += ids
        before = self._text(self.prefix, self.read)
        text = self._text(self.prefix, len(self.ids))
        if text.endswith("\ufffd") or not text.startswith(before):
            return ""
        self.read = len(self.ids)
        self.prefix = max(0, self.read - self.WINDOW)
        return text[len(before) :]

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        if self.read == len(self.ids):
            return ""
        before = self._text(self.prefix, self.read)
        text = self._text(self.prefix, len(self.ids))
        self.read = len(self.ids)
        return text[len(before) :] if text.startswith(before) else ""
