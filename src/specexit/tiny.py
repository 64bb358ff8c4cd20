"""Tiny random-weight targets with a real (trained-here) BPE tokenizer, for tests and plumbing.

No downloads: the tokenizer is a byte-level BPE trained in a second on generated text that looks
like step-by-step reasoning (numbers, paragraphs, "Wait, let me double-check."), with the special
tokens of Qwen-style chat models and a chat template that opens the thinking span.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
ARCHS = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
}

# Qwen3-style template; with enable_thinking (default) the prompt opens the thinking span, as the
# Qwen3 *-Thinking-2507 templates do; with enable_thinking=false an empty span is pre-filled.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}"
)

_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "we",
    "so",
    "then",
    "total",
    "each",
    "number",
    "add",
    "subtract",
    "multiply",
    "divide",
    "left",
    "gives",
    "answer",
    "check",
    "step",
    "first",
    "next",
    "result",
    "apples",
    "boxes",
    "price",
    "cost",
    "sum",
    "twice",
    "half",
    "more",
    "less",
]
_CONNECTORS = ("Wait", "But", "So", "Alternatively", "Hmm", "However")


def _corpus(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        paras = []
        for _ in range(rng.randint(2, 6)):
            a, b = rng.randint(0, 999), rng.randint(1, 99)
            words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
            lead = rng.choice(_CONNECTORS) + ", " if rng.random() < 0.3 else ""
            paras.append(f"{lead}{words.capitalize()}: {a} + {b} = {a + b}. {a} * {b} = {a * b}.")
        end = rng.choice(["\n\n", ".\n\n", " \n\n", "\n\n\n", "\n"])
        docs.append(end.join(paras) + "\n\nThe answer is \\boxed{" + str(rng.randint(0, 99)) + "}.")
    return docs


def train_tokenizer(vocab_size: int = 512, seed: int = 0) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(2000, seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<think>", "</think>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny(
    arch: str,
    out: str | Path,
    hidden: int = 64,
    layers: int = 4,
    heads: int = 4,
    kv_heads: int = 2,
    vocab_size: int = 512,
    seed: int = 0,
    init_std: float = 0.08,
    head_std: float = 0.5,
) -> Path:
    """Write a tiny random ``arch`` model + tokenizer to ``out``.  ``head_std`` (the output head's
    init scale) is far above the usual 0.02 so that the next-token distribution is peaked like a
    trained LM's rather than uniform: sampling tests then have structure to check."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {arch!r}")
    out = Path(out)
    tokenizer = train_tokenizer(vocab_size, seed)
    cfg_cls, model_cls = ARCHS[arch]
    kw = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        initializer_range=init_std,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    if arch == "qwen3":
        kw["head_dim"] = hidden // heads
    torch.manual_seed(seed)
    model = model_cls(cfg_cls(**kw)).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, head_std)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
