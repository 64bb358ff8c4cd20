"""Incremental detokenisation: text deltas from a growing token list in O(new tokens) per push."""

from __future__ import annotations


class IncrementalDetokenizer:
    """Incremental decoding in O(new tokens): only a short window before the new tokens is decoded
    again (byte-level BPE can merge across the boundary), and half a multi-byte character is held back
    until it is complete."""

    WINDOW = 6

    def __init__(self, tokenizer) -> None:
        self.tok, self.ids = tokenizer, []
        self.prefix = 0  # start of the window decoded again for context
        self.read = 0  # tokens whose text has been emitted

    def _text(self, start: int, end: int) -> str:
        return self.tok.decode(self.ids[start:end], skip_special_tokens=False)

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
        before = self._text(self.prefix, self.read)
        text = self._text(self.prefix, len(self.ids))
        self.read = len(self.ids)
        return text[len(before) :] if text.startswith(before) else ""
