"""``--tree auto``: the planner's choices follow the rate model, it turns speculation off where it loses
and back on, deferred draft commits leave the draft exactly as step-by-step ones, and generation with it
stays lossless (greedy identical to plain decoding) whatever it decides."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest
import torch
from transformers import AutoTokenizer

from specexit.auto_tree import (
    MAX_BACKOFF,
    MIN_BACKOFF,
    MIN_JUDGED,
    MIN_SEEN,
    PROBE_LOSS,
    SIB_PRIOR,
    STALE,
    AutoTreePlanner,
)
from specexit.cli_options import AUTO_BOUNDS, parse_tree
from specexit.draft import init_draft
from specexit.engine import SpecExitGenerator
from specexit.proposer import DraftProposer, TreeConfig
from specexit.round_cost import RoundCost, load_or_measure, monotone
from specexit.sampling import SamplingParams
from specexit.target import TargetModel
from specexit.tiny import make_tiny

SIZES = (1, 2, 4, 8, 16, 32, 64)


def cost_table(per_token_ms: float, base_ms: float = 10.0, draft_ms: float = 1.0) -> RoundCost:
    """A forward of k tokens costs base + per_token * (k - 1): GPU-like when per_token << base."""
    return RoundCost(key="test", sizes=SIZES, target_ms=tuple(base_ms + per_token_ms * (k - 1) for k in SIZES),
                     draft_sizes=(1, 8), draft_step_ms=(draft_ms, draft_ms * 1.5), commit_sizes=(1, 8),
                     commit_ms=(0.5, 0.8), facts={})  # fmt: skip


def two_context_table(short_per_token: float, long_per_token: float, base_ms: float = 10.0) -> RoundCost:
    """Verification dearer per token deep in a trace (1,024 cached positions) than at 128."""
    short = cost_table(short_per_token, base_ms)
    long = tuple(base_ms + long_per_token * (k - 1) for k in SIZES)
    return dataclasses.replace(short, target_long_ms=long, short_context=128, long_context=1024)


def test_costs_are_interpolated_between_the_two_contexts_and_extrapolated_beyond():
    cost = two_context_table(1.0, 4.0)
    assert cost.target(5) == cost.target(5, 128) == pytest.approx(14.0)  # base + 4 x 1
    assert cost.target(5, 1024) == pytest.approx(26.0)  # base + 4 x 4
    assert cost.target(5, 576) == pytest.approx(20.0)  # halfway
    assert cost.target(5, 1920) == pytest.approx(38.0)  # as far again beyond: linear in the keys read
    assert cost.target(5, 10) == pytest.approx(14.0)
    assert cost_table(1.0).target(5, 4096) == pytest.approx(14.0)  # a table of one context ignores it


def test_monotone_pools_a_slow_sample_into_its_neighbours():
    assert monotone([36.0, 37.0, 58.0, 40.0, 51.0]) == pytest.approx([36.0, 37.0, 49.0, 49.0, 51.0])
    assert monotone([1.0, 2.0, 3.0]) == [1.0, 2.0, 3.0]
    assert monotone([3.0, 2.0, 1.0]) == pytest.approx([2.0, 2.0, 2.0])


def test_deep_in_a_trace_the_planner_verifies_fewer_nodes():
    """Where each extra verified token costs more (a long context: attention reads every cached key), the
    same draft probabilities are worth a smaller tree; and a forward that takes what the long table says
    is not read as a slower machine."""
    probs = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1]
    planner = AutoTreePlanner(two_context_table(0.2, 3.0), max_nodes=64, max_depth=8)
    planner.set_context(100)
    near, _ = planner.best_size(probs, 1, 1.0)
    planner.set_context(2000)
    deep, _ = planner.best_size(probs, 1, 1.0)
    assert near == len(probs) and deep < near // 2
    for _ in range(30):
        planner.observe(drafted=True, tree_probs=[0.9], tree_depths=[1], accepted=1, n_verified=2,
                        round_ms=20.0, target_ms=planner.cost.target(2, 2000), draft_ms=1.0, draft_steps=1,
                        tokens=2)  # fmt: skip
    assert planner.target_scale.value == pytest.approx(1.0)


def _sized_rounds(table, truth, rounds: int = 200, w: float = 0.9, nodes: int = 12) -> tuple[list[int], list[float]]:
    """Rounds of a planner with cost ``table`` whose forwards of k tokens really take ``truth(k)`` ms, over
    a chain whose i-th node is accepted with chance w^i: the sizes it verified, and the true rate by size."""
    sizes = tuple(range(1, 17))
    cost = RoundCost(key="t", sizes=sizes, target_ms=tuple(table(k) for k in sizes), draft_sizes=(1, 8),
                     draft_step_ms=(1.0, 1.5), commit_sizes=(1, 8), commit_ms=(0.5, 0.8), facts={})  # fmt: skip
    planner = AutoTreePlanner(cost, max_nodes=nodes, max_depth=nodes)
    ws = [w ** (i + 1) for i in range(nodes)]
    verified = []
    for _ in range(rounds):
        n, _ = planner.best_size(ws, 1, 1.0)
        planner.observe(drafted=True, tree_probs=ws[:n], tree_depths=list(range(1, n + 1)), accepted=n,
                        n_verified=1 + n, round_ms=truth(1 + n) + 2.0, target_ms=truth(1 + n), draft_ms=1.0,
                        draft_steps=n, tokens=n + 1)  # fmt: skip
        verified.append(1 + n)
    fixed = 1.0 + planner.overhead.value
    true_rate = [0.0] + [(1 + sum(ws[: k - 1])) / (fixed + truth(k)) for k in range(1, nodes + 2)]
    return verified, true_rate


def _flat(k: int) -> float:
    return 10.0 + 0.1 * (k - 1)


def _steep(k: int) -> float:  # each token past the 4th costs 3 ms more
    return _flat(k) + 3.0 * max(k - 4, 0)


@pytest.mark.parametrize("table,truth", [(_steep, _flat), (_flat, _steep)], ids=["overstated", "understated"])
def test_a_wrong_cost_table_is_corrected_by_what_forwards_of_each_size_take(table, truth):
    """A table that overstates (understates) the cost of larger sizes is corrected size by size: the planner
    tries the sizes next to the ones it measured and moves to where the true rate is higher, from a
    plan that loses a quarter of the rate to one within 15% of the best."""
    verified, rate = _sized_rounds(table, truth)
    best = max(rate)
    assert rate[verified[0]] < 0.75 * best
    late = verified[-50:]
    assert sum(rate[k] for k in late) / len(late) > 0.85 * best


@pytest.mark.parametrize("cost", [_flat, _steep], ids=["flat", "steep"])
def test_a_right_cost_table_costs_few_rounds_of_trying_other_sizes(cost):
    verified, rate = _sized_rounds(cost, cost)
    best = max(range(len(rate)), key=rate.__getitem__)
    assert verified[0] == best and sum(k != best for k in verified[-100:]) <= 6


def brute_best(planner: AutoTreePlanner, probs: list[float], pending: int, draft_ms: float) -> float:
    rates = [planner.rate(sum(probs[:n]), draft_ms, pending + n) for n in range(min(len(probs), planner.max_nodes) + 1)]
    return max(rates)


def test_best_size_is_the_argmax_of_the_rate_model():
    rng = random.Random(0)
    for per_token in (0.05, 1.0, 10.0):
        planner = AutoTreePlanner(cost_table(per_token), max_nodes=64, max_depth=8)
        for _ in range(50):
            probs = sorted((rng.random() ** 3 for _ in range(rng.randint(0, 80))), reverse=True)
            n, r = planner.best_size(probs, 1, 2.0)
            assert r == pytest.approx(brute_best(planner, probs, 1, 2.0))
            assert r == pytest.approx(planner.rate(sum(probs[:n]), 2.0, 1 + n))


def test_cheap_verification_grows_the_tree_and_costly_verification_keeps_none():
    probs = [0.9, 0.8, 0.7, 0.5, 0.4, 0.3, 0.2, 0.1]
    gpu = AutoTreePlanner(cost_table(0.05), max_nodes=64, max_depth=8)
    cpu = AutoTreePlanner(cost_table(10.0), max_nodes=64, max_depth=8)  # a k-token forward costs k times one
    assert gpu.best_size(probs, 1, 0.0)[0] == len(probs)
    assert cpu.best_size(probs, 1, 0.0)[0] == 0
    # deeper: a confident chain is worth another draft step where verifying is cheap, not where it is dear
    nodes = [(p, p) for p in probs]
    assert gpu.expansion(nodes, [(0.9, 0.9)], 1, 1.0, depth=2) >= 1
    assert cpu.expansion(nodes, [(0.9, 0.9)], 1, 1.0, depth=2) == 0
    assert gpu.expansion(nodes, [(0.9, 0.9)], 1, 1.0, depth=8) == 0  # the depth bound holds
    # a draft step that costs more than the whole forward does not pay for a 0.1 child
    slow_draft = AutoTreePlanner(cost_table(0.05, draft_ms=50.0), max_nodes=64, max_depth=8)
    assert slow_draft.expansion([(0.1, 0.1)], [(0.1, 0.1)], 1, 0.0, depth=1) == 0


def _chain_rounds(planner: AutoTreePlanner, probs: list[float], accepted: int, rounds: int = 60) -> None:
    """Rounds that verify a chain with these path probabilities (depth 1, 2, ...) and accept a prefix."""
    for _ in range(rounds):
        planner.observe(drafted=True, tree_probs=probs, tree_depths=list(range(1, len(probs) + 1)), accepted=accepted,
                        n_verified=1 + len(probs), round_ms=20.0, target_ms=10.0, draft_ms=2.0, draft_steps=len(probs),
                        tokens=accepted + 1)  # fmt: skip


def test_calibration_is_learned_per_depth():
    chain = [0.5, 0.25, 0.125, 0.0625]  # an under-confident draft: top-1 probability 0.5 at every step
    forced = AutoTreePlanner(cost_table(1.0), max_nodes=64, max_depth=8)
    _chain_rounds(forced, chain, accepted=4)  # ... that the target always accepts
    assert [round(forced.depth_factor(d), 1) for d in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert [round(forced.weight(p, d), 2) for d, p in enumerate(chain, 1)] == [1.0] * 4
    nodes = [(p, forced.weight(p, d)) for d, p in enumerate(chain[:2], 1)]
    assert forced.expansion(nodes, nodes[-1:], 1, 2.0, depth=2) >= 1  # sure tokens are worth drafting deeper
    # where a verified token costs half a forward: 0.4 + 0.2 expected tokens do not pay, 2 sure ones do
    fresh, dear = AutoTreePlanner(cost_table(5.0), 64, 8), AutoTreePlanner(cost_table(5.0), 64, 8)
    _chain_rounds(dear, chain, accepted=4)
    assert fresh.best_size([fresh.weight(p, d) for d, p in enumerate(chain[:2], 1)], 1, 2.0)[0] < 2
    assert dear.best_size([dear.weight(p, d) for d, p in enumerate(chain[:2], 1)], 1, 2.0)[0] == 2
    # an over-confident draft whose second token the target never takes: depth 1 only
    sure = [0.9, 0.81, 0.73]
    blind = AutoTreePlanner(cost_table(1.0), max_nodes=64, max_depth=8)
    _chain_rounds(blind, sure, accepted=1)
    assert blind.depth_factor(1) == pytest.approx(1 / 0.9, rel=0.05) and blind.depth_factor(2) < 0.05
    ws = [blind.weight(0.9, 1), blind.weight(0.81, 2, blind.weight(0.9, 1))]
    assert blind.best_size(ws, 1, 2.0)[0] == 1
    # a child never counts for more than its parent
    assert forced.weight(0.25, 2, parent_weight=0.3) == 0.3


def _drawn_chain_rounds(planner: AutoTreePlanner, forced: bool, rounds: int, seed: int) -> tuple[float, float]:
    """Rounds verifying 4-deep chains whose draft top-1 probability per step is drawn from U(0.3, 1); the
    target accepts every top child (``forced``) or each step with that probability (a calibrated draft).
    Returns the mean tokens accepted and the mean the planner predicted before each round."""
    rng = random.Random(seed)
    took = predicted = 0.0
    for _ in range(rounds):
        steps = [rng.uniform(0.3, 1.0) for _ in range(4)]
        probs = list(itertools.accumulate(steps, lambda a, b: a * b))
        weights: list[float] = []
        for d, p in enumerate(probs, 1):
            weights.append(planner.weight(p, d, weights[-1] if weights else 1.0))
        accepted = 4 if forced else next((i for i, q in enumerate(steps) if rng.random() >= q), 4)
        took, predicted = took + accepted, predicted + sum(weights)
        planner.observe(drafted=True, tree_probs=probs, tree_depths=[1, 2, 3, 4], accepted=accepted, n_verified=5,
                        round_ms=20.0, target_ms=10.0, draft_ms=2.0, draft_steps=4, tokens=accepted + 1)  # fmt: skip
    return took / rounds, predicted / rounds


@pytest.mark.parametrize("forced", [True, False], ids=["forced", "calibrated"])
def test_the_capped_fit_predicts_the_tokens_a_chain_yields(forced):
    """Under forced acceptance every top child is accepted whatever its probability: accepted / predicted
    mass (1 / mean p) gave a node of below-mean probability a chance below 1, so chains were cut short.
    Fitted with the caps, what the planner predicts for the next rounds matches what they accept, both there
    and for a draft whose probabilities are the target's acceptance rates."""
    planner = AutoTreePlanner(cost_table(1.0), max_nodes=64, max_depth=8)
    _drawn_chain_rounds(planner, forced, rounds=40, seed=0)  # learning
    took, predicted = _drawn_chain_rounds(planner, forced, rounds=400, seed=1)
    assert predicted == pytest.approx(took, rel=0.1)
    if forced:
        assert took == 4.0 and predicted > 3.8


def test_an_unverified_depth_takes_the_factor_of_the_deepest_verified_one():
    # a draft whose chain the target always accepts, seen only at depth 1 (the planner never verified
    # deeper): where every depth kept its prior (0.8), a depth-2 node of path probability 0.25 counted 0.2
    # tokens and the chain was never tried deeper, so nothing could be learned there
    under = AutoTreePlanner(cost_table(5.0), max_nodes=64, max_depth=8)
    _chain_rounds(under, [0.5], accepted=1, rounds=30)
    c1 = under.depth_factor(1)
    assert c1 == pytest.approx(2.0, rel=0.05)
    assert [under.depth_factor(d) for d in (2, 3, 8)] == [c1] * 3
    fresh = AutoTreePlanner(cost_table(5.0), max_nodes=64, max_depth=8)
    assert under.weight(0.25, 2) == pytest.approx(0.5, rel=0.05) and fresh.weight(0.25, 2) == pytest.approx(0.2)
    # where a verified token costs half a forward, the 0.5 token pays for its verification, the 0.2 does not
    nodes = [(0.5, under.weight(0.5, 1))]
    assert under.expansion(nodes, nodes, 1, 2.0, depth=1) >= 1
    assert fresh.expansion([(0.5, fresh.weight(0.5, 1))], [(0.5, fresh.weight(0.5, 1))], 1, 2.0, depth=1) == 0
    # MIN_SEEN - 1 rounds at depth 1 are not enough: the deeper depths keep their prior
    once = AutoTreePlanner(cost_table(5.0), max_nodes=64, max_depth=8)
    _chain_rounds(once, [0.5], accepted=1, rounds=MIN_SEEN - 1)
    assert once.depth_factor(2) == fresh.depth_factor(2)
    # an over-confident draft (a third of what it predicts at depth 1) is expected to stay so deeper
    over = AutoTreePlanner(cost_table(1.0), max_nodes=64, max_depth=8)
    for accepted in [1, 0, 0] * 30:
        _chain_rounds(over, [0.9], accepted=accepted, rounds=1)
    assert over.depth_factor(2) == over.depth_factor(1) < 0.6 * fresh.depth_factor(2)
    # a depth verified often enough has its own factor, whatever the depth above it says
    mixed = AutoTreePlanner(cost_table(1.0), max_nodes=64, max_depth=8)
    _chain_rounds(mixed, [0.5, 0.25], accepted=1, rounds=60)
    assert mixed.depth_factor(1) == pytest.approx(2.0, rel=0.05) and mixed.depth_factor(2) < 0.05


def test_a_depth_not_verified_lately_forgets_its_factor():
    # a draft that failed at depth 2 for a while (a passage it cannot predict) ...
    planner = AutoTreePlanner(cost_table(1.0), max_nodes=64, max_depth=8)
    _chain_rounds(planner, [0.5, 0.25], accepted=1, rounds=40)
    assert planner.depth_factor(2) < 0.05
    # ... then is verified at depth 1 only, and accepted there every time: within STALE rounds depth 2 keeps
    # its old factor, after them it takes depth 1's, so the planner tries depth 2 again instead of never
    _chain_rounds(planner, [0.5], accepted=1, rounds=STALE)
    assert planner.depth_factor(2) < 0.05
    _chain_rounds(planner, [0.5], accepted=1, rounds=1)
    assert planner.depth_factor(2) == planner.depth_factor(1) > 1.5


def test_siblings_share_their_parents_chance_and_the_likeliest_nodes_are_kept(tmp_path):
    """At most one child of a node is accepted: in rank order the children share what the parent's chance
    leaves, so a draft whose target takes its top child every time (forced acceptance: c_d huge) verifies a
    chain, not the top child's siblings, which used to count c_d times their own probability each."""
    target = TargetModel.from_pretrained(make_tiny("qwen3", tmp_path / "t", vocab_size=100))
    draft = init_draft(target)
    planner = AutoTreePlanner(cost_table(1.0), max_nodes=64, max_depth=4)
    _chain_rounds(planner, [1e-3, 1e-6, 1e-9, 1e-12], accepted=4, rounds=60)  # the top child always accepted
    assert planner.depth_factor(1) > 500  # any top child of probability >= 1/500 is sure ...
    proposer = DraftProposer(
        draft, TreeConfig(total_tokens=64, depth=4, branching=4), SamplingParams(), planner=planner
    )
    proposer.commit(torch.randn(5, draft.cfg.hidden_size, generator=torch.Generator().manual_seed(0)), [1, 2, 3, 4, 5])
    tree = proposer.propose()
    # ... its siblings get nothing, and the kept tree is the 4-deep chain of top children (which by path
    # probability ranks below the root's other children)
    assert tree.depths == [1, 2, 3, 4] and tree.parents == [-1, 0, 1, 2]


def _sibling_rounds(planner: AutoTreePlanner, took_sibling_every: int, rounds: int = 80) -> None:
    """Rounds verifying a top child (path probability 0.5) and its sibling (0.3) at depth 1, each with a
    first child of its own at depth 2 (0.25, 0.15); the target takes the top child's line, except every
    ``took_sibling_every``-th round (0: never), where it takes the sibling's."""
    for i in range(rounds):
        sib = took_sibling_every and i % took_sibling_every == 0
        planner.observe(drafted=True, tree_probs=[0.5, 0.3, 0.25, 0.15], tree_depths=[1, 1, 2, 2],
                        tree_parents=[-1, -1, 0, 1], accepted_nodes=[1, 3] if sib else [0, 2], accepted=2,
                        n_verified=5, round_ms=20.0, target_ms=10.0, draft_ms=2.0, draft_steps=2, tokens=3)  # fmt: skip


def test_first_children_and_their_siblings_are_calibrated_apart():
    """A target that always takes the draft's top token (forced acceptance) never takes a sibling: the top
    child is sure and its siblings worth nothing.  With one factor per depth (accepted / the mass of the
    whole depth) the top child counted 0.5 x 1/0.8 = 0.63 and its sibling got the 0.37 left, so the
    planner kept siblings instead of drafting the chain deeper."""
    top_only = AutoTreePlanner(cost_table(1.0), max_nodes=64, max_depth=8)
    _sibling_rounds(top_only, took_sibling_every=0)
    assert top_only.weight(0.5, 1) == pytest.approx(1.0, abs=0.02)
    assert top_only.weight(0.3, 1, first=False) < 0.02
    # depth 2 holds two first children: the top child's (0.25) and the sibling's (0.15), which cannot be
    # accepted more often than the sibling (its cap ~0); fitted with the caps, the top child's is sure
    # (factor 1 / 0.25), where accepted / mass (1 / 0.4) gave it 0.63
    assert top_only.depth_factor(2) == pytest.approx(1 / 0.25, rel=0.05)
    assert top_only.weight(0.25, 2, top_only.weight(0.5, 1)) == pytest.approx(1.0, abs=0.02)
    # siblings not verified for STALE rounds (chains only) are given their prior chance again, once
    _chain_rounds(top_only, [0.5, 0.25], accepted=2, rounds=STALE)
    assert top_only.depth_factor(1, first=False) < 0.05
    _chain_rounds(top_only, [0.5, 0.25], accepted=2, rounds=1)
    assert top_only.depth_factor(1, first=False) == pytest.approx(SIB_PRIOR)
    _sibling_rounds(top_only, took_sibling_every=0, rounds=1)  # verified again and not taken: out again
    assert top_only.depth_factor(1, first=False) < 0.05
    # a target that takes the sibling's line every other round: each kind learns its own rate
    both = AutoTreePlanner(cost_table(1.0), max_nodes=64, max_depth=8)
    _sibling_rounds(both, took_sibling_every=2)
    assert both.depth_factor(1) == pytest.approx(0.5 / 0.5, rel=0.1)
    assert both.depth_factor(1, first=False) == pytest.approx(0.5 / 0.3, rel=0.1)
    # a chain (no parents given) is all first children: the sibling factors keep their prior
    chain = AutoTreePlanner(cost_table(1.0), max_nodes=64, max_depth=8)
    _chain_rounds(chain, [0.5, 0.25], accepted=2)
    assert chain.depth_factor(1, first=False) == pytest.approx(0.8)


def _feed(planner: AutoTreePlanner, *, on_tokens: float, on_ms: float, off_ms: float, rounds: int) -> list[bool]:
    states = []
    for _ in range(rounds):
        drafted = planner.on
        planner.observe(drafted=drafted, tree_probs=[0.5] * 4 if drafted else [],
                        tree_depths=[1, 2, 3, 4] if drafted else [], accepted=int(on_tokens) - 1,
                        n_verified=5 if drafted else 1, round_ms=on_ms if drafted else off_ms, target_ms=0.0,
                        draft_ms=0.0, draft_steps=2 if drafted else 0, tokens=on_tokens if drafted else 1)  # fmt: skip
        states.append(planner.on)
    return states


def test_speculation_that_loses_is_turned_off_backs_off_longer_each_time_and_winning_keeps_it_on():
    losing = AutoTreePlanner(cost_table(1.0), max_nodes=64, max_depth=8)
    states = _feed(losing, on_tokens=2, on_ms=30.0, off_ms=10.0, rounds=1500)  # 0.067 vs 0.1 tokens/ms
    assert states[MIN_JUDGED - 1] is False  # judged after MIN_JUDGED rounds, not before
    assert all(states[: MIN_JUDGED - 1])
    runs = [(k, len(list(g))) for k, g in itertools.groupby(states)]
    off_runs = [n for k, n in runs if not k]
    assert off_runs[:5] == [MIN_BACKOFF, 2 * MIN_BACKOFF, 4 * MIN_BACKOFF, 8 * MIN_BACKOFF, 16 * MIN_BACKOFF]
    # past MAX_BACKOFF only as far as keeps probing under PROBE_LOSS: a probe here takes 15 ms a token
    # where plain decoding takes 10, so 4 probing rounds cost 0.5% over 400 rounds
    # (4 x (1.5 - 1) / PROBE_LOSS = 400)
    assert off_runs[5:8] == [2 * MAX_BACKOFF, 4 * MAX_BACKOFF, 400] and MIN_JUDGED * 0.5 / PROBE_LOSS == 400
    assert sum(states) / len(states) < 0.06  # mostly plain decoding
    # a new request is probed within MAX_BACKOFF rounds (its text may suit the draft), then backs off long
    assert losing._off_left > MAX_BACKOFF
    nxt = AutoTreePlanner(cost_table(1.0), max_nodes=64, max_depth=8, memory=losing.memory())
    modes = _feed(nxt, on_tokens=2, on_ms=30.0, off_ms=10.0, rounds=600)
    runs = [(k, len(list(g))) for k, g in itertools.groupby(modes)]
    assert runs[0] == (False, MAX_BACKOFF - 1) and runs[2] == (False, 400)
    winning = AutoTreePlanner(cost_table(1.0), max_nodes=64, max_depth=8)
    assert all(_feed(winning, on_tokens=4, on_ms=20.0, off_ms=10.0, rounds=200))  # 0.2 vs 0.1 tokens/ms


def _useless_draft_rate(accept: float, tree_cost: float, seed: int, rounds: int = 4000, warm: int = 1000) -> float:
    """Tokens per ms of the rounds after the first ``warm`` (the planner's memory, in a server) of a
    generation whose draft's one-node trees are accepted with chance ``accept``, a round with a tree costing
    ``tree_cost`` x a plain round (10 ms), every round's time +-10% noise; as a share of plain decoding's."""
    rng, planner, tokens, ms = random.Random(seed), AutoTreePlanner(cost_table(1.0), 64, 8), 0, 0.0
    for i in range(rounds):
        if i == warm:
            tokens, ms = 0, 0.0
        drafted = planner.on
        got = 1 + (drafted and rng.random() < accept)
        took = (tree_cost if drafted else 1.0) * 10.0 * rng.uniform(0.9, 1.1)
        planner.observe(drafted=drafted, tree_probs=[0.05] if drafted else [], tree_depths=[1] if drafted else [],
                        accepted=got - 1, n_verified=1 + drafted, round_ms=took, target_ms=0.0, draft_ms=0.0,
                        draft_steps=0, tokens=got)  # fmt: skip
        tokens, ms = tokens + got, ms + took
    return tokens / ms / 0.1


@pytest.mark.parametrize("accept", [0.0, 0.06])
@pytest.mark.parametrize("tree_cost", [1.04, 1.3, 2.0])
def test_a_useless_draft_costs_under_one_percent_of_plain_decoding(accept, tree_cost):
    """An untrained draft (SmolLM2's stand-in accepts ~6% of one-node trees) on rounds as noisy as this
    VM's, where a round with a tree costs 4% more than a plain one, or 2x (a 5-token verification on an
    AVX2-only CPU): probing it loses under 1% against plain decoding once the back-off has grown.  With
    MAX_BACKOFF as the only cap the 2x case lost 6%."""
    assert min(_useless_draft_rate(accept, tree_cost, seed) for seed in range(3)) > 0.99


def test_the_next_generation_starts_from_what_the_last_one_learned():
    losing = AutoTreePlanner(cost_table(1.0), max_nodes=64, max_depth=8)
    first = _feed(losing, on_tokens=2, on_ms=30.0, off_ms=10.0, rounds=MIN_JUDGED + 1)  # off, one round spent
    assert first[-1] is False and losing.depth_factor(2) != AutoTreePlanner(cost_table(1.0), 64, 8).depth_factor(2)
    nxt = AutoTreePlanner(cost_table(1.0), max_nodes=64, max_depth=8, memory=losing.memory())
    assert [nxt.depth_factor(d) for d in range(1, 9)] == [losing.depth_factor(d) for d in range(1, 9)]
    assert nxt.rate_off == losing.rate_off
    assert nxt.stats.warm_start and not nxt.stats.started_on
    # the rest of the back-off (MIN_BACKOFF - 1 rounds), then one probe, then the doubled back-off: no
    # request re-pays the probing that earlier ones already did
    modes = [nxt.on, *_feed(nxt, on_tokens=2, on_ms=30.0, off_ms=10.0, rounds=60)]  # each round's mode
    runs = [(k, len(list(g))) for k, g in itertools.groupby(modes)]
    assert runs[:3] == [(False, MIN_BACKOFF - 1), (True, MIN_JUDGED), (False, 2 * MIN_BACKOFF)]
    # memory is a copy: the next planner's learning does not change what the last one handed over
    m = nxt.memory()
    nxt.depth_fit[1].append((((0.123, 1.0),), 0.0))
    assert m.emas["depth_fit"][1] != nxt.depth_fit[1]
    # a draft that was winning stays on, and its next request is judged on its own rounds
    winning = AutoTreePlanner(cost_table(1.0), max_nodes=64, max_depth=8)
    _feed(winning, on_tokens=4, on_ms=20.0, off_ms=10.0, rounds=20)
    again = AutoTreePlanner(cost_table(1.0), max_nodes=64, max_depth=8, memory=winning.memory())
    assert again.on and again.stats.started_on and again._on_rounds == 0


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def gen(request, tmp_path_factory):
    path = make_tiny(request.param, tmp_path_factory.mktemp(request.param))
    target = TargetModel.from_pretrained(path)
    return SpecExitGenerator(target, AutoTokenizer.from_pretrained(path), init_draft(target))


def test_deferred_commits_leave_the_draft_as_step_by_step_commits(gen):
    draft, target = gen.draft, gen.target
    ids = torch.randint(0, target.vocab_size, (1, 30), generator=torch.Generator().manual_seed(1))
    _, hidden = target.forward(ids, target.new_cache(64))
    with torch.inference_mode():
        fused, _ = draft.fuse(hidden)
    planner = AutoTreePlanner(cost_table(1.0), max_nodes=8, max_depth=3)
    lazy = DraftProposer(draft, TreeConfig(8, 3, 4, auto=True), SamplingParams(), planner=planner)
    eager = DraftProposer(draft, TreeConfig(8, 3, 4), SamplingParams())
    tokens = ids[0].tolist()
    for p in (lazy, eager):
        p.commit(fused[:10], tokens[1:11])
    planner.on = False
    for a in range(10, 29, 3):  # speculation off: commits pile up
        b = min(a + 3, 29)
        lazy.commit(fused[a:b], tokens[a + 1 : b + 1])
        eager.commit(fused[a:b], tokens[a + 1 : b + 1])
    assert lazy.kv.committed == 10 < eager.kv.committed == 29
    planner.on = True
    lazy.propose()  # speculation resumes: the backlog is committed first, in one draft forward
    assert lazy.kv.committed == eager.kv.committed == 29 and lazy.last_pos == eager.last_pos
    torch.testing.assert_close(lazy.last_logits, eager.last_logits, atol=1e-4, rtol=1e-4)


def test_auto_greedy_equals_vanilla_whatever_the_costs(gen):
    nodes = {}
    for per_token in (0.05, 1.0, 1000.0):
        gen.use_round_cost(cost_table(per_token))
        try:
            for prompt, n in [("What is 12 + 7?", 150), ("Wait, so the total", 41)]:
                ids = gen.encode_prompt(prompt)
                ref = gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=n)
                out = gen.generate(input_ids=ids, mode="spec", max_new_tokens=n, tree=parse_tree("auto"))
                assert out.token_ids == ref.token_ids
                assert out.speculation["tree"] == "auto" and out.speculation["bounds"] == list(AUTO_BOUNDS)
                nodes.setdefault(per_token, []).append(out.speculation["mean_tree_nodes"])
        finally:
            gen.use_round_cost(None)
    # the dearer a verified token, the smaller the trees; at ~1000x a token's cost, never a node
    mean = {k: sum(v) / len(v) for k, v in nodes.items()}
    assert mean[0.05] > mean[1.0] > mean[1000.0] == 0.0, mean


def test_the_engine_hands_each_generation_the_last_ones_planner_memory(gen):
    gen.use_round_cost(cost_table(1.0))
    try:
        ids = gen.encode_prompt("What is 12 + 7?")
        ref = gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=30)
        runs = [gen.generate(input_ids=ids, mode="spec", max_new_tokens=30, tree=parse_tree("auto")) for _ in range(2)]
        greedy_other = gen.generate(input_ids=ids, mode="spec", max_new_tokens=30, tree=parse_tree("auto:16,4,4"))
        assert [r.speculation["warm_start"] for r in runs] == [False, True]
        assert greedy_other.speculation["warm_start"] is False  # other bounds: learned apart
        assert all(r.token_ids == ref.token_ids for r in runs)  # still lossless
        sampled = SamplingParams(temperature=0.8, seed=3)
        s1 = gen.generate(input_ids=ids, mode="spec", max_new_tokens=30, tree=parse_tree("auto"), sampling=sampled)
        assert s1.speculation["warm_start"] is False  # sampled rounds score nodes otherwise than greedy ones
        gen.use_round_cost(cost_table(2.0))  # new costs: what was learned against the old ones is dropped
        assert (
            gen.generate(input_ids=ids, mode="spec", max_new_tokens=30, tree=parse_tree("auto")).speculation[
                "warm_start"
            ]
            is False
        )
    finally:
        gen.use_round_cost(None)


def test_measured_costs_are_cached_per_model_and_machine(gen, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECEXIT_CACHE", str(tmp_path))
    cost, fresh = load_or_measure(gen.target, gen.draft, branching=4)
    again, fresh_again = load_or_measure(gen.target, gen.draft, branching=4)
    assert fresh and not fresh_again and again == cost
    assert len(list((tmp_path / "round-cost").glob("*.json"))) == 1
    assert cost.sizes[0] == 1 and all(ms > 0 for ms in cost.target_ms)
    assert cost.long_context == 1024 and len(cost.target_long_ms) == len(cost.sizes)  # the second context
    assert list(cost.target_ms) == sorted(cost.target_ms)  # never cheaper for more tokens
    assert cost.facts["threads"] == torch.get_num_threads() and cost.facts["target_dtype"] == "float32"


def test_measuring_does_not_count_as_target_forwards(gen, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECEXIT_CACHE", str(tmp_path))
    before = gen.target.forward_calls
    load_or_measure(gen.target, gen.draft, branching=4, refresh=True)
    assert gen.target.forward_calls == before


def test_prepare_measures_the_costs_before_any_timed_generation(gen, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECEXIT_CACHE", str(tmp_path))
    import specexit.engine as engine_mod

    calls = []
    real = engine_mod.load_or_measure
    monkeypatch.setattr(engine_mod, "load_or_measure", lambda *a, **k: calls.append(1) or real(*a, **k))
    fresh = SpecExitGenerator(gen.target, gen.tokenizer, gen.draft)
    fresh.prepare("vanilla")
    assert calls == []  # plain decoding plans nothing
    fresh.prepare("spec")
    assert calls == [1]
    fresh.generate("What is 2 + 2?", mode="spec", max_new_tokens=8, tree=parse_tree("auto"))
    assert calls == [1]  # the generation found the costs measured
    fresh.prepare("spec", parse_tree("16,5,4"))
    assert calls == [1]  # a fixed tree plans nothing
    fresh.prepare("spec", parse_tree("auto:16,4,4"))  # other bounds: their branching is measured up front
    assert calls == [1, 1]
    fresh.generate("What is 2 + 2?", mode="spec", max_new_tokens=8, tree=parse_tree("auto:16,4,4"))
    assert calls == [1, 1]
