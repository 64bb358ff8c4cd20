"""Speculative sampling must be distributed exactly like the target (chi-square tests).

1. The verifier alone, on a Markov-chain "target" and a different Markov "draft", with trees drawn
   the way the proposer draws them: many samples, several temperature / top-k / top-p settings.
2. The whole engine on a tiny Qwen3 model: with the shipped ``DraftProposer`` (mostly rejections)
   and with an oracle proposer whose q is close to p (deep acceptances).  The exact probability of
   every short continuation is enumerated from the target and compared with the sampled counts.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from _oracles import MixtureOracleProposer
from scipy.stats import chisquare
from transformers import AutoTokenizer

from specexit.draft import init_draft
from specexit.engine import SpecExitGenerator
from specexit.proposer import TreeConfig
from specexit.sampling import SamplingParams, gumbel_topk, probs_from_logits
from specexit.target import TargetModel
from specexit.tiny import make_tiny
from specexit.tree import DraftTree
from specexit.verify import verify_sampling

P_MIN = 1e-3  # fixed seeds make every test deterministic; a real bias gives p-values far below this


def _chi_square(counts: Counter, probs: dict[tuple, float], n: int) -> float:
    """p-value of observed ``counts`` against exact ``probs``; rare outcomes lumped into one bin."""
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert set(counts) <= set(probs), f"impossible outcomes sampled: {set(counts) - set(probs)}"
    common = [k for k, p in probs.items() if p * n >= 5]
    obs = [counts[k] for k in common]
    exp = [probs[k] * n for k in common]
    rest_p = 1.0 - sum(probs[k] for k in common)
    if rest_p * n >= 1:
        obs.append(n - sum(obs))
        exp.append(rest_p * n)
    exp = [e * n / sum(exp) for e in exp]  # remove float rounding so the sums agree
    assert len(obs) >= 5, "too few categories for a meaningful test"
    return float(chisquare(obs, exp).pvalue)


# --- 1. the verifier on Markov chains ---------------------------------------------------------
V = 7


def _markov_tables(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(V, V, generator=g) * 1.5
    draft = target + torch.randn(V, V, generator=g) * 1.2  # related but different
    return target, draft


def _markov_round(root, tl, dl, params, shape, gen):
    """Draw a fixed-shape tree from the draft without replacement, verify it against the target."""
    tree = DraftTree.empty()
    frontier = [-1]
    for depth, k in enumerate(shape, start=1):
        nxt = []
        for node in frontier:
            last = root if node == -1 else tree.tokens[node]
            q = probs_from_logits(dl[last], params)
            tree.q[node] = (torch.arange(V), q)
            for tok in gumbel_topk(q.log(), min(k, int((q > 0).sum())), gen).tolist():
                tree.tokens.append(tok)
                tree.parents.append(node)
                tree.depths.append(depth)
                nxt.append(len(tree.tokens) - 1)
        frontier = nxt
    rows = [tl[root]] + [tl[t] for t in tree.tokens]
    verdict = verify_sampling(torch.stack(rows), tree, params, gen)
    return [tree.tokens[i] for i in verdict.accepted] + [verdict.bonus], len(verdict.accepted)


@pytest.mark.parametrize(
    "params,shape",
    [
        (SamplingParams(temperature=1.0), (3, 2, 1)),
        (SamplingParams(temperature=0.7, top_k=4), (2, 2)),
        (SamplingParams(temperature=1.3, top_p=0.8), (4, 1, 1)),
        (SamplingParams(temperature=1.0, top_k=3, top_p=0.9), (1, 1, 1, 1)),
    ],
)
def test_verifier_matches_markov_target(params, shape):
    tl, dl = _markov_tables(0)
    gen = torch.Generator().manual_seed(7)
    n, length, root = 5000, 3, 0
    counts: Counter = Counter()
    accepted = 0
    for _ in range(n):
        out, cur = [], root
        while len(out) < length:
            emitted, acc = _markov_round(cur, tl, dl, params, shape, gen)
            accepted += acc
            out += emitted
            cur = out[-1]
        counts[tuple(out[:length])] += 1
    step = probs_from_logits(tl, params)  # [V, V] exact transition probabilities
    probs = {}
    for a in range(V):
        for b in range(V):
            for c in range(V):
                p = float(step[root, a] * step[a, b] * step[b, c])
                if p > 0:
                    probs[(a, b, c)] = p
    assert accepted > n * 0.3, "the draft should be accepted often enough to test both paths"
    assert _chi_square(counts, probs, n) > P_MIN


def test_verifier_detects_a_biased_sampler():
    """The test above can fail: plain sampling from the *draft* is rejected by the same check."""
    tl, dl = _markov_tables(0)
    params = SamplingParams(temperature=1.0)
    gen = torch.Generator().manual_seed(7)
    n, root = 12000, 0
    dstep, tstep = probs_from_logits(dl, params), probs_from_logits(tl, params)
    counts: Counter = Counter()
    for _ in range(n):
        a = int(torch.multinomial(dstep[root], 1, generator=gen))
        b = int(torch.multinomial(dstep[a], 1, generator=gen))
        counts[(a, b)] += 1
    probs = {(a, b): float(tstep[root, a] * tstep[a, b]) for a in range(V) for b in range(V)}
    assert _chi_square(counts, probs, n) < P_MIN


# --- 2. the whole engine on a tiny model -------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = make_tiny("qwen3", tmp_path_factory.mktemp("qwen3-sampling"))
    target = TargetModel.from_pretrained(path)
    return target, AutoTokenizer.from_pretrained(path)


@torch.inference_mode()
def _exact_continuations(target, prompt_ids, params, length, stop_ids) -> dict[tuple, float]:
    """Probability of every continuation of ``length`` tokens (shorter if a stop token ends it)."""
    done: dict[tuple, float] = {}
    level = {(): 1.0}
    for _ in range(length):
        prefixes = list(level)
        logits = target.model(input_ids=torch.tensor([prompt_ids + list(p) for p in prefixes])).logits[:, -1]
        probs = probs_from_logits(logits.float(), params)
        nxt = {}
        for row, prefix in enumerate(prefixes):
            for tok in torch.nonzero(probs[row]).flatten().tolist():
                seq, pr = (*prefix, tok), level[prefix] * float(probs[row, tok])
                (done if tok in stop_ids else nxt)[seq] = pr
        level = nxt
    done.update(level)
    return done


def _engine_chi_square(gen, params, tree, n, length, prompt="What is 12 + 7?"):
    ids = gen.encode_prompt(prompt)
    counts: Counter = Counter()
    accepted = 0
    for seed in range(n):
        sp = SamplingParams(params.temperature, params.top_p, params.top_k, seed=seed)
        r = gen.generate(input_ids=ids, mode="spec", max_new_tokens=length, sampling=sp, tree=tree)
        counts[tuple(r.token_ids)] += 1
        accepted += sum(a - 1 for a in r.accept_lengths)
    probs = _exact_continuations(gen.target, ids, params, length, gen.stop_ids)
    return _chi_square(counts, probs, n), accepted


def test_engine_sampling_matches_target_with_real_proposer(tiny):
    target, tok = tiny
    gen = SpecExitGenerator(target, tok, init_draft(target))
    params = SamplingParams(temperature=1.0, top_k=3)
    pvalue, accepted = _engine_chi_square(gen, params, TreeConfig(8, 3, 3), n=1200, length=3)
    assert accepted > 0
    assert pvalue > P_MIN


def test_engine_sampling_matches_target_with_deep_acceptance(tiny):
    target, tok = tiny
    params = SamplingParams(temperature=0.9, top_k=3, top_p=0.95)
    holder = {}

    def factory(draft, tree_cfg, sampling):
        holder["p"] = MixtureOracleProposer(target, holder["prompt"], sampling)
        return holder["p"]

    gen = SpecExitGenerator(target, tok, init_draft(target), proposer_factory=factory)
    holder["prompt"] = gen.encode_prompt("What is 12 + 7?")
    n, length = 900, 5
    pvalue, accepted = _engine_chi_square(gen, params, TreeConfig(), n=n, length=length)
    # rounds after the first token: each accepts a good part of the 3-deep tree on average
    assert accepted > n * 1.5
    assert pvalue > P_MIN
