"""Trial answers verified against a guess (the judge's previous answer): the answer is the one plain
greedy decoding writes, in fewer target forwards when the guess is right, and the KV cache is untouched."""

from __future__ import annotations

import pytest
import torch
from conftest import PARAGRAPH_PROMPT

from specexit.probe import trial_answer

MAX = 10


@pytest.fixture(scope="module")
def cached(paragraph_gen):
    """The target with a prompt in its cache, a boundary 3 positions before the cache's end (the later
    entries must not leak into the answer), and the plain trial answer there."""
    gen, _ = paragraph_gen
    ids = gen.encode_prompt(PARAGRAPH_PROMPT)
    cache = gen.target.new_cache(len(ids) + 64)
    gen.target.forward(torch.tensor([ids]), cache, last_only=True)
    visible, feed = len(ids) - 3, [gen.think_end_id]
    plain = trial_answer(gen.target, cache, visible, feed, set(), MAX)
    assert len(plain[0]) == MAX and cache.get_seq_length() == len(ids)
    return gen.target, cache, visible, feed, plain


def _calls(target, cache, visible, feed, guess, stop=frozenset()):
    before = target.forward_calls
    out = trial_answer(target, cache, visible, feed, set(stop), MAX, guess=guess)
    return out, target.forward_calls - before


def _wrong(tokens: list[int]) -> list[int]:
    return [t + 1 for t in tokens]


@pytest.mark.parametrize("right", [MAX, 4, 0], ids=["all", "first-4", "none"])
def test_a_guess_changes_the_forwards_not_the_answer(cached, right):
    target, cache, visible, feed, (tokens, probs) = cached
    guess = tokens[:right] + _wrong(tokens[right:])
    (got, got_probs), calls = _calls(target, cache, visible, feed, guess)
    assert got == tokens and got_probs == pytest.approx(probs, abs=1e-5)
    # one forward writes the right guessed tokens plus the next greedy one, then one token per forward
    first = min(right + 1, MAX)
    assert calls == 1 + (MAX - first)
    assert cache.get_seq_length() == visible + 3


def test_a_guessed_answer_stops_where_the_plain_one_does(cached):
    target, cache, visible, feed, (tokens, _) = cached
    stop = tokens[5]
    cut = tokens.index(stop) + 1
    (got, _), calls = _calls(target, cache, visible, feed, tokens, stop={stop})
    assert got == tokens[:cut] and calls == 1


def test_the_cache_after_a_guessed_answer_continues_as_before(cached):
    target, cache, visible, feed, (tokens, _) = cached
    n = cache.get_seq_length()
    nxt = torch.tensor([[tokens[0]]])
    ref, _ = target.forward(nxt, cache, last_only=True)
    cache.keep_first(n)
    _calls(target, cache, visible, feed, tokens[:3] + _wrong(tokens[3:]))
    again, _ = target.forward(nxt, cache, last_only=True)
    cache.keep_first(n)
    assert torch.equal(ref, again)
