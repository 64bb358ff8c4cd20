"""The testbed tokenizer: a small byte-level BPE trained on generated traces, with Qwen3's special tokens
and a Qwen3-style chat template.

Pre-tokenization follows Qwen2/3 (digits one at a time, so arithmetic is learnable digit by digit) with
one change: runs of newlines are always their own pre-token, so a paragraph break is the single token
``"\\n\\n"`` (Qwen merges ``".\\n\\n"``); the exit rule's boundary detection then sees one clean token.
"""

from __future__ import annotations

from collections.abc import Iterator

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ..errors import TokenizerError
from .problems import THINK_END, make_problem, make_trace, problem_seeds

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
EOS = "<|im_end|>"
PAD = "<|endoftext|>"
PARAGRAPH = "\n\n"
# Qwen2's pattern without the newlines that Qwen lets trail punctuation (" ?[^\s\p{L}\p{N}]+[\r\n]*").
PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen3-style: with enable_thinking (default) the generation prompt opens the thinking span; with
# enable_thinking=false the empty span is pre-filled, as Qwen3's hybrid template does.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}"
)
DEFAULT_VOCAB_SIZE = 768


def _corpus(n: int, seed: int) -> Iterator[str]:
    """Questions and completions of training problems and the chat roles: the text the model will see."""
    yield from ("system\n", "user\n", "assistant\n", PARAGRAPH)
    for s in problem_seeds(n, seed, "train"):
        prob = make_problem(s)
        yield prob.question
        yield from make_trace(prob).completion.split(THINK_END)  # special tokens are not text to merge


def train_tokenizer(vocab_size: int = DEFAULT_VOCAB_SIZE, n_docs: int = 3000, seed: int = 0) -> PreTrainedTokenizerFast:
    """Train the BPE (a second or two) and wrap it with the special tokens and chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(n_docs, seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=["<|im_start|>", "<think>", "</think>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    check_tokenizer(fast)
    return fast


def check_tokenizer(tok: PreTrainedTokenizerFast) -> None:
    """The properties the testbed relies on; a TokenizerError names the first one that fails."""
    for t in SPECIAL_TOKENS:
        if len(tok.encode(t, add_special_tokens=False)) != 1:
            raise TokenizerError(f"special token {t!r} is not a single token")
    if len(tok.encode(PARAGRAPH, add_special_tokens=False)) != 1:
        raise TokenizerError("the paragraph break '\\n\\n' is not a single token (train on more text)")
    if tok.eos_token != EOS:
        raise TokenizerError(f"eos must be {EOS!r}, got {tok.eos_token!r}")
    digits = tok.encode("1234567890", add_special_tokens=False)
    if len(digits) != 10:
        raise TokenizerError("digits are not split one per token")


def prompt_text(tok: PreTrainedTokenizerFast, question: str, thinking: bool = True) -> str:
    """The chat-formatted prompt (ends with ``<think>\\n``, or the empty span when not thinking)."""
    return tok.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True, enable_thinking=thinking
    )
