"""The vectorised verifiers against the sequential ones they replace, in distribution and in host reads.

1. Greedy: identical verdicts to the previous per-node walk on thousands of random trees (duplicate
   sibling tokens, ties in the logits, empty trees, chains).
2. Sampling: identical verdicts to the previous per-sibling rule when both consume the same uniforms;
   the emitted tokens follow the target exactly (chi-square on the first token and the first two);
   same seed, same verdict; edge cases (child without draft mass, p == q, no residual mass, empty tree).
3. Host reads: a constant number per greedy call, at most ``accepted + 2`` per sampling call.
"""

from __future__ import annotations

import random
from collections import Counter
from contextlib import contextmanager

import pytest
import torch
from scipy.stats import chisquare

from specexit.sampling import SamplingParams, gumbel_topk, probs_from_logits, sample
from specexit.tree import DraftTree, ancestor_index, ancestor_matrix, first_of_token
from specexit.verify import Verdict, verify_greedy, verify_sampling

P_MIN = 1e-4  # fixed seeds: every test is deterministic; a real bias gives p-values far below this


# --- the previous implementations (sequential, host reads per node / per sibling) ------------------
def _old_verify_greedy(node_logits: torch.Tensor, tree: DraftTree) -> Verdict:
    best = node_logits.argmax(-1).tolist()
    kids = tree.children()
    cur, accepted = -1, []
    while True:
        want = best[cur + 1]
        nxt = next((c for c in kids.get(cur, ()) if tree.tokens[c] == want), None)
        if nxt is None:
            return Verdict(accepted, want)
        accepted.append(nxt)
        cur = nxt


def _old_dense_q(tree: DraftTree, node: int, vocab: int) -> torch.Tensor:
    ids, probs = tree.q[node]
    q = torch.zeros(vocab, dtype=torch.float32)
    q[ids] = probs.float()
    return q


def _old_verify_sampling(node_logits, tree, params, generator, batched_uniforms=False) -> Verdict:
    """The previous rule.  ``batched_uniforms``: draw one uniform per child of a level up front (what
    the vectorised verifier does) instead of one per tried child, so both consume the same stream."""
    kids = tree.children()
    vocab = node_logits.shape[-1]
    cur, accepted = -1, []
    while True:
        p = probs_from_logits(node_logits[cur + 1], params)
        cands = kids.get(cur, [])
        nxt = None
        if cands:
            q = _old_dense_q(tree, cur, vocab)
            us = torch.rand(len(cands), generator=generator).tolist() if batched_uniforms else None
            for i, c in enumerate(cands):
                x = tree.tokens[c]
                qx = float(q[x])
                if qx <= 0.0:
                    continue
                px = float(p[x])
                u = us[i] if us is not None else float(torch.rand((), generator=generator))
                if u * qx < px:
                    nxt = c
                    break
                residual = (p - q).clamp_(min=0.0)
                total = float(residual.sum())
                if total <= 0.0:
                    break
                p = residual / total
                q[x] = 0.0
                q_total = float(q.sum())
                if q_total <= 0.0:
                    break
                q = q / q_total
        if nxt is None:
            return Verdict(accepted, sample(p, generator))
        accepted.append(nxt)
        cur = nxt


# --- random trees ------------------------------------------------------------------------------
def _random_shape(rng: random.Random, n: int, kind: str) -> tuple[list[int], list[int]]:
    """(parents, depths) of an n-node tree in topological order."""
    parents: list[int] = []
    depths: list[int] = []
    for i in range(n):
        if kind == "chain":
            p = i - 1
        elif kind == "fan":
            p = -1
        else:  # mixed: lean towards recent nodes so trees get deep as well as wide
            p = rng.choice([-1, *range(max(0, i - 4), i)]) if rng.random() < 0.7 else rng.randrange(-1, i)
        parents.append(p)
        depths.append(1 if p < 0 else depths[p] + 1)
    return parents, depths


def _random_greedy_case(rng: random.Random, gen: torch.Generator) -> tuple[torch.Tensor, DraftTree]:
    kind = rng.choice(["mixed", "mixed", "mixed", "chain", "fan"])
    n = rng.choice([0, 1, 2, rng.randrange(0, 12), rng.randrange(0, 45)])
    vocab = rng.choice([2, 3, 5, 8])
    parents, depths = _random_shape(rng, n, kind)
    tree = DraftTree(tokens=[], parents=parents, depths=depths)
    # integer logits in a small range: many ties (argmax tie-breaking must agree too)
    logits = torch.randint(-2, 3, (1 + n, vocab), generator=gen).float()
    best = logits.argmax(-1).tolist()
    for p in parents:  # tokens: often the parent's argmax (deep acceptance), sometimes a duplicate sibling
        tree.tokens.append(best[p + 1] if rng.random() < 0.6 else rng.randrange(vocab))
    return logits, tree


def test_tree_helpers_match_the_definitions():
    rng = random.Random(3)
    for _ in range(300):
        n = rng.randrange(0, 30)
        parents, _ = _random_shape(rng, n, rng.choice(["mixed", "chain", "fan"]))
        anc = torch.zeros(n, n, dtype=torch.bool)
        rows, cols = ancestor_index(parents)
        anc[rows, cols] = True
        assert torch.equal(anc, ancestor_matrix(parents))
        tokens = [rng.randrange(3) for _ in range(n)]
        first = first_of_token(tokens, parents)
        for i in range(n):
            earlier = [j for j in range(i) if parents[j] == parents[i] and tokens[j] == tokens[i]]
            assert first[i] == (not earlier)


def test_greedy_identical_to_the_sequential_walk():
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    deep = dups = 0
    for _ in range(4000):
        logits, tree = _random_greedy_case(rng, gen)
        old, new = _old_verify_greedy(logits, tree), verify_greedy(logits, tree)
        assert new == old, (tree, logits)
        assert isinstance(new.bonus, int) and all(isinstance(i, int) for i in new.accepted)
        deep += len(old.accepted) >= 3
        dups += len(set(zip(tree.parents, tree.tokens, strict=True))) < len(tree)
    assert deep > 300 and dups > 1000, "the random trees should exercise deep paths and duplicate siblings"


def test_greedy_edge_cases():
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 0.0], [0.0, 0.0, 7.0], [0.0, 9.0, 0.0]])
    assert verify_greedy(logits[:1], DraftTree.empty()) == Verdict([], 1)
    chain = DraftTree(tokens=[1, 0, 2], parents=[-1, 0, 1], depths=[1, 2, 3])
    assert verify_greedy(logits, chain) == Verdict([0, 1, 2], 1)
    # duplicate siblings carrying the argmax: the first one is taken, the path continues under it only
    dup = DraftTree(tokens=[1, 1, 0], parents=[-1, -1, 1], depths=[1, 1, 2])
    assert verify_greedy(logits, dup) == _old_verify_greedy(logits, dup) == Verdict([0], 0)
    miss = DraftTree(tokens=[2, 0], parents=[-1, -1], depths=[1, 1])
    assert verify_greedy(logits, miss) == Verdict([], 1)


# --- sampling: same uniforms, same verdict as the sequential rule -------------------------------
def _random_sampling_case(rng: random.Random, gen: torch.Generator):
    kind = rng.choice(["mixed", "mixed", "chain", "fan"])
    n = rng.choice([0, 1, rng.randrange(0, 10), rng.randrange(0, 30)])
    vocab = rng.choice([3, 5, 8])
    parents, depths = _random_shape(rng, n, kind)
    logits = torch.randn(1 + n, vocab, generator=gen) * rng.choice([0.5, 1.5, 3.0])
    params = rng.choice(
        [SamplingParams(1.0), SamplingParams(0.7, top_k=2), SamplingParams(1.2, top_p=0.8), SamplingParams(1.0)]
    )
    tree = DraftTree(tokens=[rng.randrange(vocab) for _ in parents], parents=parents, depths=depths)
    for node in {-1, *parents}:
        p = probs_from_logits(logits[node + 1], params)
        mode = rng.choice(["draft", "draft", "sparse", "equal", "scaled", "zeros"])
        if mode == "equal":  # p == q: every tried child is accepted
            ids, probs = torch.arange(vocab), p.clone()
        elif mode == "scaled":  # q >= p everywhere (unnormalised): the residual has no mass
            ids, probs = torch.arange(vocab), p * 1.5
        elif mode == "sparse":  # draft mass on a few ids only: children off them are skipped
            k = rng.randrange(1, vocab + 1)
            ids = torch.randperm(vocab, generator=gen)[:k]
            probs = torch.softmax(torch.randn(k, generator=gen), -1)
        else:
            probs = torch.softmax(torch.randn(vocab, generator=gen) * 1.5, -1)
            if mode == "zeros":
                probs[torch.randperm(vocab, generator=gen)[: vocab // 2]] = 0.0
                probs = probs / probs.sum()
            ids = torch.arange(vocab)
        tree.q[node] = (ids, probs)
    # children drawn from q often enough that acceptance is common; duplicates and q == 0 tokens stay
    for i, p in enumerate(parents):
        if rng.random() < 0.5:
            ids, probs = tree.q[p]
            tree.tokens[i] = int(ids[torch.multinomial(probs.clamp(min=0) + 1e-9, 1, generator=gen)])
    return logits, tree, params


def test_sampling_identical_to_the_sequential_rule_on_the_same_uniforms():
    rng, gen = random.Random(1), torch.Generator().manual_seed(1)
    deep = 0
    for case in range(2500):
        logits, tree, params = _random_sampling_case(rng, gen)
        seed = 1000 + case
        old = _old_verify_sampling(logits, tree, params, torch.Generator().manual_seed(seed), batched_uniforms=True)
        new = verify_sampling(logits, tree, params, torch.Generator().manual_seed(seed))
        assert new == old, (case, tree, params)
        assert isinstance(new.bonus, int) and all(isinstance(i, int) for i in new.accepted)
        deep += len(new.accepted) >= 2
    assert deep > 200


def test_sampling_same_seed_same_verdict():
    rng, gen = random.Random(2), torch.Generator().manual_seed(2)
    for case in range(300):
        logits, tree, params = _random_sampling_case(rng, gen)
        g1, g2 = torch.Generator().manual_seed(case), torch.Generator().manual_seed(case)
        assert verify_sampling(logits, tree, params, g1) == verify_sampling(logits, tree, params, g2)
        assert torch.equal(g1.get_state(), g2.get_state())


# --- sampling: exact in distribution ------------------------------------------------------------
V = 6


def _markov(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Target and draft logits [V, V]: row = last token.  Related but clearly different."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(V, V, generator=g) * 1.5
    return target, target + torch.randn(V, V, generator=g) * 1.5


# tree shapes: children count per expanded node, by position (never by token, as the proposer does)
SHAPES = {
    "fan3": {-1: 3},  # root with 3 children
    "chain3": {-1: 1, 0: 1, 1: 1},  # a chain of depth 3
    "expanded": {-1: 3, 1: 2},  # root with 3 children, the second expanded into 2
}


def _draw_round(last, tl, dl, params, shape, gen, zero_child=False):
    """One round: a tree of the given shape drawn from the draft without replacement, verified."""
    tree = DraftTree.empty()
    for node, k in shape.items():
        ctx = last if node == -1 else tree.tokens[node]
        q = probs_from_logits(dl[ctx], params)
        if zero_child and node == -1:  # first child: a token the draft gives no mass (must be skipped)
            z = int(q.argmin())
            q[z] = 0.0
            q = q / q.sum()
            tree.tokens.append(z)
            tree.parents.append(node)
            tree.depths.append(1)
        tree.q[node] = (torch.arange(V), q)
        for tok in gumbel_topk(q.log(), min(k, int((q > 0).sum())), gen).tolist():
            tree.tokens.append(tok)
            tree.parents.append(node)
            tree.depths.append(1 if node == -1 else tree.depths[node] + 1)
    rows = torch.stack([tl[last]] + [tl[t] for t in tree.tokens])
    verdict = verify_sampling(rows, tree, params, gen)
    if zero_child:
        assert 0 not in verdict.accepted
    return [tree.tokens[i] for i in verdict.accepted] + [verdict.bonus], len(verdict.accepted)


def _pvalue(counts: Counter, probs: dict, n: int) -> float:
    assert set(counts) <= {k for k, p in probs.items() if p > 0}, "impossible outcome sampled"
    keys = [k for k, p in probs.items() if p * n >= 5]
    obs = [counts[k] for k in keys]
    exp = [probs[k] * n for k in keys]
    if n - sum(obs) > 0 or sum(exp) < n - 1:
        obs.append(n - sum(obs))
        exp.append(n - sum(exp))
    exp = [e * n / sum(exp) for e in exp]
    return float(chisquare(obs, exp).pvalue)


def _sample_two(shape, params, n, seed, zero_child=False):
    tl, dl = _markov(seed)
    gen = torch.Generator().manual_seed(seed)
    root = 1  # a context where p has mass the draft lacks: the residual path carries real mass
    first, two = Counter(), Counter()
    accepted = 0
    for _ in range(n):
        out, acc = _draw_round(root, tl, dl, params, shape, gen, zero_child)
        accepted += acc
        if len(out) < 2:
            out += _draw_round(out[0], tl, dl, params, shape, gen, zero_child)[0]
        first[out[0]] += 1
        two[tuple(out[:2])] += 1
    step = probs_from_logits(tl, params)  # [V, V] exact next-token distributions
    p1 = {a: float(step[root, a]) for a in range(V)}
    p2 = {(a, b): float(step[root, a] * step[a, b]) for a in range(V) for b in range(V)}
    return _pvalue(first, p1, n), _pvalue(two, p2, n), accepted / n


@pytest.mark.parametrize(
    "shape,params",
    [
        ("fan3", SamplingParams(temperature=1.0)),
        ("chain3", SamplingParams(temperature=1.0, top_k=4)),
        ("expanded", SamplingParams(temperature=0.9, top_p=0.9)),
    ],
)
def test_sampling_follows_the_target(shape, params):
    p1, p2, acc = _sample_two(SHAPES[shape], params, n=24000, seed=5)
    assert acc > 0.3, "both the acceptance and the rejection path should be exercised"
    assert p1 > P_MIN and p2 > P_MIN, (p1, p2)


def test_sampling_skips_a_child_without_draft_mass():
    p1, p2, _ = _sample_two(SHAPES["fan3"], SamplingParams(temperature=1.0), n=15000, seed=6, zero_child=True)
    assert p1 > P_MIN and p2 > P_MIN, (p1, p2)


def test_the_distribution_check_detects_a_bias():
    """The check above can fail: emitting the draft's first child (never rejecting) is caught."""
    tl, dl = _markov(5)
    params = SamplingParams(temperature=1.0)
    gen = torch.Generator().manual_seed(0)
    n, counts = 6000, Counter()
    q = probs_from_logits(dl[0], params)
    for tok in torch.multinomial(q, n, replacement=True, generator=gen).tolist():
        counts[tok] += 1
    p1 = {a: float(probs_from_logits(tl[0], params)[a]) for a in range(V)}
    assert _pvalue(counts, p1, n) < P_MIN


def test_sampling_p_equal_q_accepts_every_level():
    tl, _ = _markov(7)
    params = SamplingParams(temperature=1.0)
    gen = torch.Generator().manual_seed(7)
    for _ in range(300):
        out, acc = _draw_round(2, tl, tl, params, SHAPES["chain3"], gen)  # draft == target
        assert acc == 3, out


def test_sampling_residual_without_mass_keeps_p():
    """q >= p everywhere (q unnormalised, 1.5 p): a rejection leaves no residual; the bonus then
    comes from p itself, as in the sequential rule (which accepts with probability 2/3 here)."""
    tl, _ = _markov(8)
    params = SamplingParams(temperature=1.0)
    p = probs_from_logits(tl[0], params)
    gen = torch.Generator().manual_seed(8)
    n, rejected, bonus = 6000, 0, Counter()
    for _ in range(n):
        toks = gumbel_topk(p.log(), 2, gen).tolist()
        tree = DraftTree(tokens=toks, parents=[-1, -1], depths=[1, 1], q={-1: (torch.arange(V), p * 1.5)})
        v = verify_sampling(tl[[0, *toks]], tree, params, gen)
        assert v.accepted in ([], [0])  # the loop stops at the first rejection: child 1 is never tried
        if not v.accepted:
            rejected += 1
            bonus[v.bonus] += 1
    assert abs(rejected / n - 1 / 3) < 0.03
    assert _pvalue(bonus, {a: float(p[a]) for a in range(V)}, rejected) > P_MIN


def test_sampling_empty_tree_draws_from_p():
    tl, _ = _markov(9)
    params = SamplingParams(temperature=0.8, top_k=3)
    for seed in range(50):
        v = verify_sampling(tl[:1], DraftTree.empty(), params, torch.Generator().manual_seed(seed))
        assert v == Verdict([], sample(probs_from_logits(tl[0], params), torch.Generator().manual_seed(seed)))


# --- host reads ---------------------------------------------------------------------------------
@contextmanager
def _count_host_reads(monkeypatch):
    counts: Counter = Counter()
    for name in ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    try:
        yield counts
    finally:
        monkeypatch.undo()


def _proposer_like_tree(n: int, vocab: int, gen: torch.Generator, logits: torch.Tensor, params) -> DraftTree:
    """n nodes, up to 10 children per expanded node, children drawn from q = a mix with the target."""
    tree = DraftTree.empty()
    frontier = [-1]
    while len(tree) < n:
        nxt = []
        for node in frontier:
            p = probs_from_logits(logits[node + 1], params) if params else torch.softmax(logits[node + 1], -1)
            q = 0.7 * p + 0.3 / vocab
            tree.q[node] = (torch.arange(vocab), q)
            k = min(10, n - len(tree))
            for tok in gumbel_topk(q.log(), k, gen).tolist():
                tree.tokens.append(tok)
                tree.parents.append(node)
                tree.depths.append(1 if node < 0 else tree.depths[node] + 1)
                nxt.append(len(tree) - 1)
            if len(tree) >= n:
                break
        frontier = nxt
    return tree


@pytest.mark.parametrize("verifier", ["greedy", "sampling"])
def test_host_reads_do_not_grow_with_the_tree(monkeypatch, verifier):
    vocab = 50
    params = SamplingParams(temperature=1.0)
    reads = {}
    for n in (8, 60):
        gen = torch.Generator().manual_seed(n)
        # rows = target logits; the tree is drawn close to them so sampling accepts several levels
        logits = torch.randn(1 + n, vocab, generator=gen) * 3
        tree = _proposer_like_tree(n, vocab, gen, logits, params)
        assert len(tree) == n
        if verifier == "greedy":
            best = logits.argmax(-1)  # two in three nodes carry their parent's argmax: long accepted paths
            tree.tokens = [int(best[p + 1]) if i % 3 else tree.tokens[i] for i, p in enumerate(tree.parents)]
            with _count_host_reads(monkeypatch) as counts:
                verdict = verify_greedy(logits, tree)
            assert verdict == _old_verify_greedy(logits, tree)
            reads[n] = sum(counts.values())
            assert reads[n] <= 2, counts
        else:
            per_call = []
            for seed in range(20):
                with _count_host_reads(monkeypatch) as counts:
                    verdict = verify_sampling(logits, tree, params, torch.Generator().manual_seed(seed))
                assert sum(counts.values()) <= len(verdict.accepted) + 2, (counts, verdict)
                per_call.append(sum(counts.values()) - len(verdict.accepted))
            reads[n] = max(per_call)
    assert reads[8] == reads[60], reads
