"""Prompt formatting and splitting a completion into reasoning and answer."""

from __future__ import annotations

from .errors import ConfigError


def build_prompt(
    tokenizer, prompt: str, system: str | None = None, enable_thinking: bool = True, raw: bool = False
) -> str:
    """Apply the tokenizer's chat template (passing ``enable_thinking`` where it is understood)."""
    if raw or not getattr(tokenizer, "chat_template", None):
        return prompt
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )


def encode_prompt(
    tokenizer, prompt: str, chat: bool = True, enable_thinking: bool = True, system: str | None = None
) -> list[int]:
    """Prompt ids as every backend feeds them: the chat template (no extra special tokens), or the raw
    text with the tokenizer's special tokens."""
    text = build_prompt(tokenizer, prompt, system=system, enable_thinking=enable_thinking, raw=not chat)
    ids = tokenizer.encode(text, add_special_tokens=not chat)
    if not ids:
        raise ConfigError("the prompt is empty after tokenisation")
    return ids


def stop_token_ids(tokenizer, generation_eos: int | list[int] | None = None) -> set[int]:
    """End-of-sequence ids: the tokenizer's eos, the generation config's eos and ``<|im_end|>`` (chat
    models stop on it even where eos is another token)."""
    ids: set[int] = set()
    for src in (getattr(tokenizer, "eos_token_id", None), generation_eos):
        if isinstance(src, int):
            ids.add(src)
        elif isinstance(src, (list, tuple)):
            ids.update(int(i) for i in src)
    im_end = tokenizer.get_vocab().get("<|im_end|>")
    if im_end is not None:
        ids.add(im_end)
    return ids
