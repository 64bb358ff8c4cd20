"""Response bodies of the two generation endpoints: the whole completion, or its SSE stream chunks."""

from __future__ import annotations

import json
import time
from typing import Any

from .events import Outcome


def usage(out: Outcome) -> dict[str, Any]:
    return {
        "prompt_tokens": out.prompt_tokens,
        "completion_tokens": out.completion_tokens,
        "total_tokens": out.prompt_tokens + out.completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": out.reasoning_tokens},
        "specexit": out.specexit_usage(),
    }


def completion(endpoint: str, rid: str, model: str, out: Outcome) -> dict[str, Any]:
    """The non-streamed body: a ``chat.completion`` (endpoint "chat") or a ``text_completion``."""
    base = {"id": rid, "created": int(time.time()), "model": model}
    if endpoint == "chat":
        message = {
            "role": "assistant",
            "content": out.texts["content"],
            "reasoning_content": out.texts["reasoning_content"] or None,
        }
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": out.finish_reason}
        return {**base, "object": "chat.completion", "choices": [choice], "usage": usage(out)}
    choice = {"index": 0, "text": out.texts["text"], "logprobs": None, "finish_reason": out.finish_reason}
    return {**base, "object": "text_completion", "choices": [choice], "usage": usage(out)}


def sse_line(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


class StreamChunks:
    """The SSE lines of one streamed response (``chat.completion.chunk`` or ``text_completion``)."""

    def __init__(self, endpoint: str, rid: str, model: str, include_usage: bool) -> None:
        self.chat = endpoint == "chat"
        self.rid, self.model, self.include_usage = rid, model, include_usage
        self.created = int(time.time())
        self.object = "chat.completion.chunk" if self.chat else "text_completion"

    def line(self, choices: list[dict[str, Any]], out: Outcome | None = None) -> str:
        data: dict[str, Any] = {
            "id": self.rid, "object": self.object, "created": self.created, "model": self.model, "choices": choices
        }  # fmt: skip
        if self.include_usage:  # OpenAI: "usage": null on every chunk but the last
            data["usage"] = usage(out) if out is not None else None
        return sse_line(data)

    def delta(self, delta: dict[str, str], finish: str | None = None) -> str:
        if self.chat:
            return self.line([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])
        return self.line([{"index": 0, "text": delta.get("text", ""), "logprobs": None, "finish_reason": finish}])

    def usage_line(self, out: Outcome) -> str:
        """The last chunk with ``stream_options.include_usage``: no choices, the usage."""
        return self.line([], out)
