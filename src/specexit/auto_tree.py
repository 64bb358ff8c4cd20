"""Adaptive speculation (``--tree auto``): each round, the tree that maximises expected tokens per second.

EAGLE-2's observation is that the draft's own probability of a path tracks how often the target accepts
it.  With the measured cost of a round (``round_cost.py``) that gives, for a candidate tree T over P
pending tokens,

    expected tokens / second  =  (1 + sum_{i in T} w_i) / (D + V(P + |T|) + O),
    w_i = min(c_d(i) p_i, w_parent(i) - sum of w over i's earlier siblings)

with p_i the draft's path probability of node i (its score), w_i the chance the target accepts it: p_i
times a calibration factor c_d of its depth d (learned online: a draft is often well calibrated at depth 1
and under- or over-confident deeper; a depth not yet verified often enough takes the factor of the deepest
one that was).  For first children c_d is fitted with the cap: the factor whose capped predictions,
sum of min(c_d p_i, cap_i) over the last FIT_ROUNDS rounds' nodes of depth d, add up to the tokens accepted
there (a plain ratio, accepted / sum of p_i, left a target that takes the top child whatever its
probability, as under forced acceptance, predicted at min(p_i / mean p, 1) < 1 per node, so the planner
stopped chains early and kept siblings).  It is learned apart for a node's first (top-ranked)
child and for its other children (a target that takes the draft's top token whatever its probability,
as under forced acceptance, never takes a sibling: one factor for both made siblings look as likely as
the top child's shortfall and kept them in the tree instead of a deeper chain), capped by what its
parent's chance leaves after its higher-ranked siblings (a child is accepted only with its parent, and at
most one child is), D the draft steps spent, V(k) the cost of a target forward of
k tokens at the current cache length (measured at two contexts, interpolated, scaled online by what
forwards really took, and corrected per size, see below) and O the rest of a round
(verification, signals, Python), also learned online.  The planner

  * stops growing the tree when one more draft step is not expected to pay for itself,
  * keeps the nodes most likely accepted up to the size that maximises the rate (possibly none),
  * and turns speculation off when rounds with a tree yield fewer tokens per second than plain decoding
    would; it tries again after a back-off that doubles while speculation keeps losing (4 ... 64 rounds,
    or up to 1,024 where a probe loses so much that probing every 64 rounds would cost over 0.5%; a new
    request starts at most 64 rounds from its first probe, since its text may suit the draft better).
    While off, the draft's commits are deferred and done in one batch when speculation resumes.

The cost table is timed once, on a machine whose timings drift (a VM's vary by up to 30% minute to
minute), at two contexts, and extrapolated deeper; a wrong step in it (the measured 2k-token Qwen2.5-0.5B
table made 5 tokens cost 12% more than 3, where generation measured the same time) keeps the planner away
from sizes that would pay.  So each size verified keeps its own correction, measured time over the table's
time, once forwarded SIZE_SEEN times; a size without one takes its neighbours', and the few sizes just
above or below the measured ones, or one not verified for SIZE_STALE rounds, are assumed OPTIMISM cheaper
(and a smaller size never dearer than a larger one), so that the planner tries them: a tree of another
size is lossless (greedy or sampled), it only costs time, and what it costs is then measured.

What a planner learned (its EMAs, whether speculation is on, the back-off) carries over to the next
generation of the same engine (``PlannerMemory``), so a request does not pay again for probing a draft
that the previous ones found too weak, nor re-learn the calibration from the prior.

Scores in sampling mode are the rank scores of ``proposer.py`` (products of the r-th largest draft
probabilities), which never depend on which token a child turned out to be, so choosing the tree from
them keeps the rejection sampler lossless.
"""

from __future__ import annotations

import bisect
import collections
import copy
import itertools
import math
from dataclasses import dataclass

from .round_cost import RoundCost

MIN_BACKOFF, MAX_BACKOFF = 4, 64
# ... and further, up to LOSSY_BACKOFF, while a probe loses so much that probing every MAX_BACKOFF rounds
# would cost more than PROBE_LOSS of plain decoding's speed (rounds with a tree dearer than plain ones by a
# factor the draft's tokens do not repay: a weak draft on a CPU where verifying k tokens costs ~2x one)
LOSSY_BACKOFF, PROBE_LOSS = 1024, 0.005
MIN_JUDGED = 4  # rounds with a tree before speculation may be judged slower than plain decoding
FIT_ROUNDS = 16  # rounds over which a depth's first-child factor is fitted
PRIOR = 0.8  # accepted / predicted before a depth was verified; it weighs (1 - PRIOR_DECAY)^rounds seen
PRIOR_DECAY = 0.15
MAX_FACTOR = 1e4
MIN_SEEN = 3  # rounds that verified a depth before its own calibration factor is trusted
STALE = 16  # ... and it is trusted while that depth was verified within this many rounds with a tree
LOOKAHEAD = 3  # draft steps the depth decision looks ahead
SIB_PRIOR = 0.8  # accepted / predicted for a sibling before any was verified
CONTEXT_STEP = 64  # cache positions after which the planner's cost-by-size table is recomputed
SIZE_SEEN = 3  # forwards of one size before its own measured cost correction is trusted
SIZE_STALE = 64  # ... and rounds after its last forward that it stays trusted (then it is tried afresh)
OPTIMISM = 0.9  # an untried size next to the measured ones (or a stale one): this share of the correction
EXPLORE_SPAN = 4  # ... for this many sizes on either side of the measured ones


class Ema:
    """Exponential moving average, starting from a prior value; ``reset`` forgets it, and the next
    observations are averaged plainly until there are enough of them for the EMA (1/n > alpha)."""

    def __init__(self, prior: float, alpha: float = 0.15) -> None:
        self.value, self.alpha, self.n = prior, alpha, None

    def reset(self) -> None:
        self.n = 0

    def add(self, x: float) -> None:
        if self.n is None:
            self.value += self.alpha * (x - self.value)
            return
        self.n += 1
        self.value += max(self.alpha, 1.0 / self.n) * (x - self.value)


@dataclass
class PlannerStats:
    rounds_on: int = 0
    rounds_off: int = 0
    tree_nodes: int = 0
    draft_steps: int = 0
    switches_off: int = 0
    warm_start: bool = False  # started from the previous generation's memory
    started_on: bool = True

    def to_dict(self) -> dict:
        mean = self.tree_nodes / self.rounds_on if self.rounds_on else 0.0
        return {"rounds_with_tree": self.rounds_on, "rounds_without": self.rounds_off,
                "mean_tree_nodes": round(mean, 2), "draft_steps": self.draft_steps,
                "times_turned_off": self.switches_off, "warm_start": self.warm_start,
                "started_on": self.started_on}  # fmt: skip


@dataclass(frozen=True)
class PlannerMemory:
    """What one generation's planner hands the next (``AutoTreePlanner.memory``)."""

    emas: dict  # name -> Ema (copies)
    on: bool
    off_left: int
    backoff: int


_CARRIED = (
    "depth_fit",
    "sib_acc",
    "sib_mass",
    "sib_age",
    "depth_seen",
    "depth_age",
    "target_scale",
    "size_scale",
    "size_seen",
    "size_age",
    "draft_scale",
    "overhead",
    "top1",
    "off_tokens",
    "off_ms",
)


class AutoTreePlanner:
    """One generation's speculation plan.  Times are in milliseconds."""

    def __init__(self, cost: RoundCost, max_nodes: int, max_depth: int, memory: PlannerMemory | None = None,
                 correct_sizes: bool = True) -> None:  # fmt: skip
        """``correct_sizes``: correct the table size by size from measured forwards (False: a table given
        as known, scaled only as a whole)."""
        self.cost, self.max_nodes, self.max_depth = cost, max_nodes, max_depth
        self.correct_sizes = correct_sizes
        # per depth d (index d; 0 unused), the last FIT_ROUNDS rounds that verified first children there:
        # ((path probability, cap) of each, accepted 0/1); c_d is fitted to them (``_capped_fit``)
        self.depth_fit: list[collections.deque] = [collections.deque(maxlen=FIT_ROUNDS) for _ in range(max_depth + 2)]
        self.depth_seen = [0] * (max_depth + 2)  # rounds that verified nodes of depth d
        self.depth_age = [0] * (max_depth + 2)  # rounds with a tree since depth d was last verified
        # the same for the other children (ranked below a first child): their own factor, no fallback to
        # other depths (a sibling is taken only where the first child is not, which says nothing of other
        # depths); a depth whose siblings were not verified in STALE rounds takes the prior again, so that
        # siblings found useless once are tried again now and then
        self.sib_acc = [Ema(SIB_PRIOR) for _ in range(max_depth + 2)]
        self.sib_mass = [Ema(1.0) for _ in range(max_depth + 2)]
        self.sib_age = [0] * (max_depth + 2)
        self._factors: list[float] | None = None  # c_d by depth, recomputed after each observed round
        self.target_scale = Ema(1.0)  # measured target forward / the cost table's prediction
        # per verified size k: measured / predicted, forwards seen, rounds since the last one
        self.size_scale: dict[int, Ema] = {}
        self.size_seen: dict[int, int] = {}
        self.size_age: dict[int, int] = {}
        self._costs: list[float] | None = None  # corrected forward time by size at the table's context
        self.draft_scale = Ema(1.0)
        # the rest of a round: verification and Python (~5% of a forward) plus the draft's commit of the
        # accepted and bonus tokens (about 2)
        self.overhead = Ema(0.05 * cost.target(1) + cost.commit(2))
        self.top1 = Ema(0.7)  # the draft's top-1 probability at an expanded node
        # realised tokens and ms per round, over rounds that drafted (since the last restart) and rounds
        # that did not (plain decoding; its prior: the cost table's 1-token forward): rate = tokens / ms
        self.on_tokens, self.on_ms = Ema(0.0), Ema(0.0)
        self.on_tokens.reset()
        self.on_ms.reset()
        self.off_tokens, self.off_ms = Ema(1.0), Ema(1.05 * cost.target(1))  # no commit: deferred
        self._on_rounds = 0  # rounds with a tree since speculation was (re)started
        self.on = True
        self._off_left = 0
        self._backoff = MIN_BACKOFF
        self.stats = PlannerStats()
        self._table: list[float] = [0.0]  # the cost table's target forward of k tokens, by k, at ...
        self._table_context = 0  # ... this cache length (redone when the context has moved on)
        self.context = 0  # positions in the target's cache this round
        if memory is not None:
            self._recall(memory)

    # -- across generations ---------------------------------------------------------------------------
    def memory(self) -> PlannerMemory:
        """This planner's learned state, for the next generation's planner."""
        return PlannerMemory(
            {k: copy.deepcopy(getattr(self, k)) for k in _CARRIED}, self.on, self._off_left, self._backoff
        )

    def _recall(self, m: PlannerMemory) -> None:
        for k, ema in m.emas.items():
            setattr(self, k, copy.deepcopy(ema))
        self._factors = self._costs = None
        self._backoff = m.backoff
        # speculation that was off stays off for the rest of its back-off (at least one round); a draft
        # that was on is judged afresh on the new request's rounds
        self.on, self._off_left = m.on, (0 if m.on else min(max(m.off_left, 1), MAX_BACKOFF))
        self.stats.warm_start, self.stats.started_on = True, self.on

    # -- the cost model -----------------------------------------------------------------------------
    def set_context(self, n: int) -> None:
        """The target's cache holds ``n`` positions this round: verification costs more deeper in a trace."""
        self.context = n
        if abs(n - self._table_context) >= CONTEXT_STEP:
            self._table, self._table_context, self._costs = [0.0], n, None

    def verify_ms(self, k: int) -> float:
        return self._cost_row(k)[k]

    def _cost_row(self, k_max: int) -> list[float]:
        """The target forward's expected time by size, 0 ... at least ``k_max``: the table at this context
        times each size's correction (``_corrections``); never more for fewer tokens."""
        if self._costs is None or len(self._costs) <= k_max:
            self._target_table(k_max)
            row = [c * t for c, t in zip(self._corrections(len(self._table)), self._table, strict=True)]
            for k in range(len(row) - 2, 0, -1):  # a borrowed guess errs cheap, so it is tried and measured
                row[k] = min(row[k], row[k + 1])
            self._costs = row
        return self._costs

    def _corrections(self, n: int) -> list[float]:
        """Measured / predicted forward time for sizes 0 ... n - 1.  A size forwarded SIZE_SEEN times has its
        own: as measured while verified within SIZE_STALE rounds, OPTIMISM times that later (so that a size
        left after a few slow forwards is tried again if it was close).  Others take it from the sizes that
        have one: interpolated between two, the nearest one's below or above them, and OPTIMISM times that for
        the EXPLORE_SPAN sizes next to them (so the planner's sizes move step by step where they pay).
        Before any size has one: the common scale."""
        own = {k: e.value * (1.0 if self.size_age[k] <= SIZE_STALE else OPTIMISM)
               for k, e in self.size_scale.items() if self.size_seen[k] >= SIZE_SEEN}  # fmt: skip
        if not own:
            return [self.target_scale.value] * n
        known = sorted(own)
        out = []
        for k in range(n):
            i = bisect.bisect_left(known, k)
            if i < len(known) and known[i] == k:
                out.append(own[k])
            elif i == 0:
                low = known[0]
                out.append(own[low] * (OPTIMISM if k >= low - EXPLORE_SPAN else 1.0))
            elif i == len(known):
                top = known[-1]
                out.append(own[top] * (OPTIMISM if k <= top + EXPLORE_SPAN else 1.0))
            else:
                lo, hi = known[i - 1], known[i]
                out.append(own[lo] + (own[hi] - own[lo]) * (k - lo) / (hi - lo))
        return out

    def _observe_size(self, k: int, ratio: float) -> None:
        self.size_age = {j: a + 1 for j, a in self.size_age.items()}
        if k not in self.size_scale or self.size_age[k] > SIZE_STALE:  # what it cost long ago no longer counts
            self.size_scale[k] = Ema(ratio)
            self.size_scale[k].reset()
        self.size_scale[k].add(ratio)
        self.size_seen[k] = self.size_seen.get(k, 0) + 1
        self.size_age[k] = 0

    def _target_table(self, k: int) -> float:
        if k >= len(self._table):
            self._table += [self.cost.target(i, self._table_context) for i in range(len(self._table), k + 1)]
        return self._table[k]

    def step_ms(self, m: int) -> float:
        return self.draft_scale.value * self.cost.draft_step(m)

    def depth_factor(self, depth: int, first: bool = True) -> float:
        """c_d: accepted / predicted at this depth, for first children or (``first=False``) the others."""
        if not first:
            d = min(depth, len(self.sib_acc) - 1)
            own = self.sib_acc[d].value / max(self.sib_mass[d].value, 1e-6)
            return own if self.sib_age[d] <= STALE else max(own, SIB_PRIOR)
        if self._factors is None:
            self._factors = self._depth_factors()
        return self._factors[min(depth, len(self._factors) - 1)]

    def _depth_factors(self) -> list[float]:
        """c_d for every depth.  A depth verified in fewer than MIN_SEEN rounds, or not in the last STALE
        rounds with a tree, has no factor of its own (yet, or any more: a factor learned while the draft
        failed, say on text it cannot predict, would keep that depth unverified, and so unlearned, for
        good): it takes the factor of the deepest trusted depth above it.  So a draft found
        under-confident (the target accepts more than it predicts) is tried one level deeper, and learns
        there, instead of never being verified past the depth its prior allows; one found over-confident
        is expected to stay so.  (Continuing the trend geometrically, c_D (c_D / c_{D-1})^(d - D), was
        tried: the trained Qwen2.5-0.5B draft's trees grew to 21 nodes under forced acceptance, 0.54 of
        chain:4's speed.)  Before any depth is trusted every depth keeps its own value."""
        n = len(self.depth_fit)
        own = [1.0]
        for d in range(1, n):
            prior = (1.0 - PRIOR_DECAY) ** self.depth_seen[d]
            own.append(prior * PRIOR + (1.0 - prior) * _capped_fit(self.depth_fit[d]))  # never seen: PRIOR
        out, deepest = list(own), 0
        for d in range(1, n):
            if self.depth_seen[d] >= MIN_SEEN and self.depth_age[d] <= STALE and deepest == d - 1:
                deepest = d
            elif deepest:
                out[d] = own[deepest]
        return out

    def weight(self, prob: float, depth: int, parent_weight: float = 1.0, first: bool = True) -> float:
        """The chance the target accepts a node of path probability ``prob`` at ``depth``; ``first``: the
        node is its parent's top-ranked child."""
        return min(self.depth_factor(depth, first) * prob, parent_weight)

    def child_weight(self, prob: float, depth: int, parent: int, weights: list[float], shared: dict[int, float]
                     ) -> tuple[float, float]:  # fmt: skip
        """(cap, chance) of the next child of ``parent`` (-1: the root) as a tree is made, parents first and
        siblings in rank order: siblings exclude each other (one child at most is accepted), so in rank order
        they share what their parent's chance (``weights[parent]``) leaves; ``shared`` (parent -> the chance
        its children got so far) is updated, and the first one made is the parent's first child."""
        first = parent not in shared
        cap = max((weights[parent] if parent >= 0 else 1.0) - shared.get(parent, 0.0), 0.0)
        w = self.weight(prob, depth, cap, first)
        shared[parent] = shared.get(parent, 0.0) + w
        return cap, w

    def tree_weights(self, probs: list[float], depths: list[int], parents: list[int] | None = None
                     ) -> tuple[list[bool], list[float], list[float]]:  # fmt: skip
        """Per node of a tree made as the proposer makes it (``parents`` None: a chain, node i the first
        child of node i - 1): whether it is its parent's first child, its cap and its chance as the planner
        now weighs it (``child_weight``)."""
        if parents is None:
            parents = [i - 1 for i in range(len(probs))]
        first, caps, weights = [], [], []
        shared: dict[int, float] = {}
        for p, d, par in zip(probs, depths, parents, strict=True):
            first.append(par not in shared)
            cap, w = self.child_weight(p, d, par, weights, shared)
            caps.append(cap)
            weights.append(w)
        return first, caps, weights

    def rate(self, weight_sum: float, draft_ms: float, n_verified: int) -> float:
        """Expected tokens per ms of a round that verifies ``n_verified`` tokens."""
        return (1.0 + weight_sum) / (draft_ms + self.verify_ms(n_verified) + self.overhead.value)

    # -- decisions inside a round --------------------------------------------------------------------
    def best_size(self, weights: list[float], n_pending: int, draft_ms: float) -> tuple[int, float]:
        """(n, rate): how many nodes to verify, taken in the given order (descending acceptance chance,
        so that every prefix is a subtree); ``weights`` are their acceptance chances (``weight``)."""
        fixed = draft_ms + self.overhead.value
        costs = self._cost_row(n_pending + self.max_nodes)
        best_n, best = 0, 1.0 / (fixed + costs[n_pending])
        for n, total in enumerate(itertools.accumulate(weights[: self.max_nodes]), start=1):
            r = (1.0 + total) / (fixed + costs[n_pending + n])
            if r > best:
                best_n, best = n, r
        return best_n, best

    def expansion(self, nodes: list[tuple[float, float]], frontier: list[tuple[float, float]], n_pending: int,
                  draft_ms: float, depth: int) -> int:  # fmt: skip
        """How many of the best frontier nodes the next draft step should expand, 0 to stop drafting.
        ``nodes``: (path probability, weight) of the tree so far, descending weight; ``frontier``:
        those of the nodes at ``depth`` that may be expanded, descending.  The count (1, 2, 4, ... up to
        the branching) whose next LOOKAHEAD steps are expected to raise the rate most.  A step gives each
        expanded node a best child of about the node's probability times the draft's usual top-1
        probability; looking several steps ahead keeps a first step that costs more than it gives from
        stopping a chain that pays later."""
        if depth >= self.max_depth or not frontier:
            return 0
        _, best = self.best_size([w for _, w in nodes], n_pending, draft_ms)
        choice, m = 0, 1
        while True:
            hyp, extra_ms, chain = list(nodes), draft_ms, list(frontier[:m])
            for step in range(1, min(LOOKAHEAD, self.max_depth - depth) + 1):
                chain = [(p * self.top1.value, self.weight(p * self.top1.value, depth + step, w)) for p, w in chain]
                hyp = sorted(hyp + chain, key=lambda x: -x[1])  # stable: a child stays after its parent
                extra_ms += self.step_ms(len(chain))
                r = self.best_size([w for _, w in hyp], n_pending, extra_ms)[1]
                if r > best:
                    choice, best = len(chain), r
            if m >= len(frontier):
                return choice
            m = min(2 * m, len(frontier))

    def observe_top1(self, p: float) -> None:
        self.top1.add(p)

    # -- after a round ---------------------------------------------------------------------------------
    def observe(self, *, drafted: bool, tree_probs: list[float], tree_depths: list[int], accepted: int,
                n_verified: int, round_ms: float, target_ms: float, draft_ms: float, draft_steps: int,
                tokens: int, tree_parents: list[int] | None = None,
                accepted_nodes: list[int] | None = None) -> None:  # fmt: skip
        """What the round did: whether it drafted, the verified tree's path probabilities, depths and parents
        (None: a chain), the nodes accepted from it (root to leaf; None: the first ``accepted`` of a chain),
        the target forward's and the draft's time, the round's time and the tokens it yielded."""
        pred = self.cost.target(n_verified, self.context)
        if pred > 0 and target_ms > 0:
            ratio = min(max(target_ms / pred, 0.2), 5.0)
            if self.correct_sizes:
                self._observe_size(n_verified, ratio)
            self.target_scale.add(ratio)
            self._costs = None
        if draft_steps and self.cost.draft_step(1) > 0:
            self.draft_scale.add(min(max(draft_ms / (draft_steps * self.cost.draft_step(1)), 0.2), 5.0))
        self.overhead.add(max(round_ms - target_ms - draft_ms, 0.0))
        if tree_probs:
            self._observe_tree(tree_probs, tree_depths, accepted, tree_parents, accepted_nodes)
        st = self.stats
        if drafted:
            self._on_rounds += 1
            st.rounds_on += 1
            st.tree_nodes += len(tree_probs)
            st.draft_steps += draft_steps
        else:
            st.rounds_off += 1
        if round_ms > 0:
            toks, ms = (self.on_tokens, self.on_ms) if drafted else (self.off_tokens, self.off_ms)
            toks.add(tokens)
            ms.add(round_ms)
        self._switch()

    def _observe_tree(self, probs: list[float], depths: list[int], accepted: int, parents: list[int] | None,
                      accepted_nodes: list[int] | None) -> None:  # fmt: skip
        """Per depth and kind of child (first or other): the verified path-probability mass and whether the
        accepted path's node of that depth was of that kind."""
        if accepted_nodes is None:  # a chain's first ``accepted`` nodes
            accepted_nodes = list(range(min(accepted, len(probs))))
        top = max(depths) + 1
        first, caps, _ = self.tree_weights(probs, depths, parents)
        samples: list[list[tuple[float, float]]] = [[] for _ in range(top)]  # first children by depth
        mass = [0.0] * top  # the other children's path-probability mass by depth
        for p, d, f, cap in zip(probs, depths, first, caps, strict=True):
            if f:
                samples[d].append((p, cap))
            else:
                mass[d] += p
        took = [[0.0] * top, [0.0] * top]  # [first, other][depth]
        for i in accepted_nodes:  # the accepted path holds one node of each depth up to its length
            took[0 if first[i] else 1][depths[i]] = 1.0
        self.depth_age = [a + 1 for a in self.depth_age]
        self.sib_age = [a + 1 for a in self.sib_age]
        for d in range(1, min(top, len(self.depth_fit))):
            if samples[d]:
                self.depth_fit[d].append((tuple(samples[d]), took[0][d]))
                self.depth_seen[d] += 1
                self.depth_age[d] = 0
            if mass[d] > 0:
                self.sib_mass[d].add(mass[d])
                self.sib_acc[d].add(took[1][d])
                self.sib_age[d] = 0
        self._factors = None

    @property
    def rate_on(self) -> float:
        return self.on_tokens.value / self.on_ms.value if self.on_ms.value > 0 else 0.0

    @property
    def rate_off(self) -> float:
        return self.off_tokens.value / self.off_ms.value

    def _backoff_cap(self) -> int:
        """MAX_BACKOFF, or the back-off at which a probe of MIN_JUDGED rounds, losing what the last one
        lost, costs PROBE_LOSS of plain decoding's speed (at most LOSSY_BACKOFF)."""
        loss = self.rate_off / max(self.rate_on, 1e-9) - 1.0  # extra time per token of a probing round
        return max(MAX_BACKOFF, min(LOSSY_BACKOFF, math.ceil(MIN_JUDGED * loss / PROBE_LOSS)))

    def _switch(self) -> None:
        if self.on:
            if self._on_rounds >= MIN_JUDGED and self.rate_on < self.rate_off:
                self.on, self._off_left = False, self._backoff
                self._backoff = min(2 * self._backoff, self._backoff_cap())
                self.stats.switches_off += 1
            elif self._on_rounds >= MIN_JUDGED and self.rate_on > 1.1 * self.rate_off:
                self._backoff = MIN_BACKOFF  # speculation is winning: a later loss backs off briefly
        else:
            self._off_left -= 1
            if self._off_left <= 0:  # try again, judged on the rounds from now on
                self.on, self._on_rounds = True, 0
                self.on_tokens.reset()
                self.on_ms.reset()


def _capped_fit(rounds: collections.deque) -> float:
    """The smallest c with sum of min(c p, cap) over the rounds' nodes equal to the tokens they accepted
    (that sum grows piecewise linearly in c, bending at each cap / p).  Where even every node at its cap
    predicts fewer than were accepted (a target that takes the top child whatever the draft thinks), the
    c that caps them all; where none was accepted, 0."""
    took = sum(t for _, t in rounds)
    nodes = [(cap / p, p, cap) for group, _ in rounds for p, cap in group if p > 0 and cap > 0]
    if took <= 0 or not nodes:
        return 0.0
    nodes.sort()
    slope, capped = sum(p for _, p, _ in nodes), 0.0  # the sum is capped + slope * c between bends
    for bend, p, cap in nodes:
        if capped + slope * bend >= took:
            return (took - capped) / slope
        capped += cap
        slope -= p
    return min(nodes[-1][0], MAX_FACTOR)
