"""Shared test settings and fixtures."""

import json
from pathlib import Path

import pytest
import torch

# The tests run tiny models: one thread is faster than two (no sync cost per small matmul) and
# stays fast when the other core is busy (two spinning OpenMP threads then slow down many-fold).
torch.set_num_threads(1)


def make_thinking_tiny(path, arch: str = "qwen3", seed: int = 0):
    """A tiny random model whose output head was edited so that it writes paragraph breaks, closes
    its thinking span and stops: in place of its three favourite tokens (on a fixed prompt) it writes
    "\\n\\n", "</think>" and (more rarely) "<|im_end|>".  A random model otherwise never ends its
    thinking, and the training pipeline needs traces with thinking spans."""
    from collections import Counter

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specexit.tiny import make_tiny

    make_tiny(arch, path, seed=seed)
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tok.encode(text, add_special_tokens=False)
    out = model.generate(torch.tensor([ids]), max_new_tokens=200, do_sample=False, eos_token_id=None)
    favourites = [t for t, _ in Counter(out[0, len(ids) :].tolist()).most_common(3)]
    vocab = tok.get_vocab()
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        for fav, marker, scale in zip(favourites, ["ĊĊ", "</think>", "<|im_end|>"], [1.03, 1.08, 0.85], strict=True):
            head[vocab[marker]] = head[fav] * scale
    model.save_pretrained(path)
    return path


QUESTIONS = ["What is 12 + 7?", "Add 3 and 4.", "Tom has 5 apples and buys 3 more.", "What is 9 * 3?", "Half of 18?"]


def write_prompts(path: Path, questions: list[str]) -> Path:
    path.write_text("".join(json.dumps({"question": q, "answer": str(i)}) + "\n" for i, q in enumerate(questions)))
    return path


@pytest.fixture(scope="session")
def thinking_tiny_dir(tmp_path_factory):
    return make_thinking_tiny(tmp_path_factory.mktemp("thinking-tiny"))


@pytest.fixture(scope="session")
def tiny_pipeline(thinking_tiny_dir, tmp_path_factory):
    """Traces, labels and vocabulary of the thinking tiny model for 5 prompts x 2 samples."""
    from specexit.engine import SpecExitGenerator
    from specexit.train.labels import LabelConfig
    from specexit.train.pipeline import stage_labels, stage_traces, stage_vocab
    from specexit.train.traces import TraceConfig

    gen = SpecExitGenerator.from_pretrained(thinking_tiny_dir)
    out = tmp_path_factory.mktemp("pipe")
    prompts = write_prompts(out / "prompts.jsonl", QUESTIONS)
    stage_traces(gen, prompts, out, TraceConfig(max_new_tokens=96, samples=2, batch_size=4), progress=False)
    stats = stage_labels(gen, out, LabelConfig(), progress=False)
    stage_vocab(gen, out, 400)
    assert stats["labelled"] >= 4, stats
    return out


PARAGRAPH_PROMPT = "What is 12 + 7?"


@pytest.fixture(scope="module")
def paragraph_gen(tmp_path_factory):
    """Tiny Qwen3 whose head writes "\\n\\n" where it would have written its favourite token, so the
    greedy output has paragraph breaks (a random model never writes a blank line by itself)."""
    from collections import Counter

    from transformers import AutoTokenizer

    from specexit.draft import init_draft
    from specexit.engine import SpecExitGenerator
    from specexit.target import TargetModel
    from specexit.tiny import make_tiny

    path = make_tiny("qwen3", tmp_path_factory.mktemp("qwen3-para"))
    target, tok = TargetModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    gen = SpecExitGenerator(target, tok, init_draft(target))
    out = gen.generate(PARAGRAPH_PROMPT, mode="vanilla", max_new_tokens=300).token_ids
    favourite = Counter(out).most_common(1)[0][0]
    para = tok.get_vocab()["ĊĊ"]  # byte-level BPE spelling of "\\n\\n"
    with torch.no_grad():
        head = target.model.get_output_embeddings().weight
        head[para] = head[favourite] * 1.02
    return gen, para
