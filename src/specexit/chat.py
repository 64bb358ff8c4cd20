"""Prompt formatting and splitting a completion into reasoning and answer."""

from __future__ import annotations

from .errors import ConfigError, TokenizerError


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


def token_id(tokenizer, text: str, what: str) -> int:
    """The id of a single special/marker token, or a clear error if the tokenizer lacks it."""
    tid = tokenizer.convert_tokens_to_ids(text)
    unk = getattr(tokenizer, "unk_token_id", None)
    if tid is None or (unk is not None and tid == unk and text != tokenizer.unk_token):
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) == 1:
            return ids[0]
        raise TokenizerError(
            f"the tokenizer has no single token for the {what} marker {text!r} (it encodes to {len(ids)} "
            f"tokens {ids}); pass the model's own marker (e.g. --think-end) or use a reasoning model"
        )
    return int(tid)


def split_reasoning_ids(
    ids: list[int], think_start_id: int | None, think_end_id: int | None, opened: bool
) -> tuple[list[int], list[int]]:
    """(reasoning ids, answer ids) of a completion.  ``opened``: the prompt already opened thinking.
    Everything before the think-end marker is reasoning (a generated think-start is dropped); with no
    marker, the whole completion is reasoning if thinking was opened, else answer."""
    if think_end_id is not None and think_end_id in ids:
        cut = ids.index(think_end_id)
        head = ids[:cut]
        if think_start_id is not None and think_start_id in head:
            head = head[head.index(think_start_id) + 1 :]
        return head, ids[cut + 1 :]
    if think_start_id is not None and think_start_id in ids:
        return ids[ids.index(think_start_id) + 1 :], []
    return (list(ids), []) if opened else ([], list(ids))
