"""Drafting: the draft's KV cache over committed tokens, and the dynamic draft tree (EAGLE-2 style).

Tree growth: from the root, each step expands the ``branching`` best frontier nodes with one draft
forward; every expanded node proposes ``branching`` children.  A child's score is its parent's score
plus the log of the *rank-th largest* draft probability at the parent.  In greedy mode the children
are the top tokens, so this is exactly the cumulative log-probability of EAGLE-2.  In sampling mode
the children are drawn without replacement (Gumbel-top-k) while the tree *shape* still comes from
the rank scores, so whether a child enters the tree never depends on which token it turned out to be
-- the condition the recursive rejection sampler in ``verify.py`` needs to stay lossless.  Finally
the ``total_tokens`` best nodes are kept; scores only fall along a path, so the kept set contains
every ancestor of every kept node.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from .auto_tree import AutoTreePlanner
from .draft import DraftKV, Eagle3Draft
from .draft_decode import decoder_for
from .errors import ConfigError
from .sampling import SamplingParams, gumbel_topk, probs_from_logits
from .tree import DraftTree


@dataclass(frozen=True)
class TreeConfig:
    total_tokens: int = 60
    depth: int = 6
    branching: int = 10
    chain: bool = False  # a single chain of ``depth`` tokens
    # adaptive (``--tree auto``): the sizes above are upper bounds; each round the planner of
    # ``auto_tree.py`` picks the depth and the number of nodes (or none) from measured costs
    auto: bool = False

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ConfigError(f"tree depth must be >= 1, got {self.depth}")
        if self.branching < 1:
            raise ConfigError(f"tree branching must be >= 1, got {self.branching}")
        if self.total_tokens < 1:
            raise ConfigError(f"tree total_tokens must be >= 1, got {self.total_tokens}")

    @property
    def k(self) -> int:
        return 1 if self.chain else self.branching

    @property
    def budget(self) -> int:
        return self.depth if self.chain else self.total_tokens


def _causal_mask(past: int, t: int, dtype: torch.dtype) -> torch.Tensor:
    mask = torch.zeros(t, past + t, dtype=dtype)
    mask[:, past:] = torch.full((t, t), torch.finfo(dtype).min, dtype=dtype).triu(1)
    return mask


class DraftProposer:
    def __init__(
        self, draft: Eagle3Draft, tree: TreeConfig, sampling: SamplingParams, planner: AutoTreePlanner | None = None
    ) -> None:
        self.draft, self.tree_cfg, self.sampling, self.planner = draft, tree, sampling, planner
        # commits deferred while the planner has speculation off: (fused [t, H], next tokens), done as one
        self._backlog: list[tuple[torch.Tensor, list[int]]] = []
        self.last_flush_ms = 0.0  # time the last propose spent catching up on the backlog
        self.last_steps = 0  # draft forwards in the last propose
        self.dtype = draft.fc.weight.dtype
        self.kv = DraftKV()
        self.last_hidden: torch.Tensor | None = None
        self.last_logits: torch.Tensor | None = None
        self.last_pos = -1
        self.vocab_map = draft.draft_to_target
        self.decoder = decoder_for(draft)  # the draft's layer and head in packed form (draft_decode.py)

    @torch.inference_mode()
    def commit(self, fused: torch.Tensor, next_tokens: list[int]) -> None:
        """Append (fused target feature at position t, token t+1) pairs to the draft cache (deferred
        while the planner has speculation off: nothing reads the draft until it drafts again)."""
        if self.planner is not None and not self.planner.on:
            self._backlog.append((fused, list(next_tokens)))
            return
        if self._backlog:
            self._backlog.append((fused, list(next_tokens)))
            self._flush()
            return
        self._commit(fused, next_tokens)

    def _flush(self) -> None:
        fused = torch.cat([f for f, _ in self._backlog])
        tokens = [t for _, toks in self._backlog for t in toks]
        self._backlog.clear()
        self._commit(fused, tokens)

    def _commit(self, fused: torch.Tensor, next_tokens: list[int]) -> None:
        self.kv.drop_scratch()
        start = self.kv.committed
        t = fused.shape[0]
        pos = torch.arange(start, start + t)
        ids = torch.tensor(next_tokens, dtype=torch.long)
        h = self.decoder.layer(fused.to(self.dtype), ids, pos, self.kv, _causal_mask(start, t, self.dtype))
        self.kv.commit()
        self.last_hidden, self.last_pos = h[-1], start + t - 1
        self.last_logits = self.decoder.logits(h[-1:])[0]

    def _expand(self, logits: torch.Tensor, gen: torch.Generator | None):
        """Children of m nodes at once, from draft logits [m, Vd]: target ids [m][k] (in draw order),
        rank log-scores [m][k] (the r-th largest log-probability), and q [m, Vd] (sampling only)."""
        k = min(self.tree_cfg.k, logits.shape[-1])
        logits = logits.float()
        if self.sampling.greedy:  # children = the top k (log_softmax is cheaper than logsumexp here)
            top = torch.topk(torch.log_softmax(logits, dim=-1), k, dim=-1)
            ranks, draft_ids, q = top.values, top.indices, None
        else:
            q = probs_from_logits(logits, self.sampling)
            ranks = torch.topk(q, k, dim=-1).values.log()
            draft_ids = gumbel_topk(q.log(), k, gen)
        return self.vocab_map[draft_ids].tolist(), ranks.tolist(), q

    @torch.inference_mode()
    def propose(self, gen: torch.Generator | None = None) -> DraftTree:
        cfg, planner = self.tree_cfg, self.planner
        self.last_flush_ms, self.last_steps = 0.0, 0
        if self._backlog:  # speculation resumes: catch the draft up in one forward
            t0 = time.perf_counter()
            self._flush()
            self.last_flush_ms = (time.perf_counter() - t0) * 1e3
        keep_q = not self.sampling.greedy
        tokens: list[int] = []
        parents: list[int] = []
        depths: list[int] = []
        scores: list[float] = []
        weights: list[float] = []  # --tree auto: acceptance chances (AutoTreePlanner.weight)
        shared: dict[int, float] = {}  # node -> the chance given to its children so far
        q_store: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        hidden_of: dict[int, torch.Tensor] = {-1: self.last_hidden}
        slot_of: dict[int, int] = {}  # node -> index in the draft scratch cache

        def add_children(expanded: list[int], logits: torch.Tensor, depth: int) -> list[int]:
            """Give each expanded node (-1 = root) its children; returns the new nodes."""
            ids, ranks, q = self._expand(logits, gen)
            new = []
            for row, parent in enumerate(expanded):
                if keep_q:
                    q_store[parent] = (self.vocab_map, q[row])
                base = scores[parent] if parent >= 0 else 0.0
                if planner is not None and ranks[row]:
                    planner.observe_top1(math.exp(ranks[row][0]))
                for tok, rank in zip(ids[row], ranks[row], strict=True):
                    if rank == float("-inf"):  # q has fewer than k tokens (top-k / top-p cut)
                        break
                    tokens.append(tok)
                    parents.append(parent)
                    depths.append(depth)
                    scores.append(base + rank)
                    if planner is not None:  # the chance the target accepts this node
                        weights.append(planner.child_weight(math.exp(base + rank), depth, parent, weights, shared)[1])
                    new.append(len(tokens) - 1)
            return new

        frontier = add_children([-1], self.last_logits[None], 1)
        neg = torch.finfo(self.dtype).min
        draft_ms = 0.0  # the planner's estimate of the draft steps spent so far
        for depth in range(1, cfg.depth):
            expand = sorted(frontier, key=lambda i: -scores[i])[: cfg.k]
            if not expand:
                break
            if planner is not None:
                ranked = sorted(range(len(scores)), key=lambda i: (-weights[i], i))
                nodes = [(math.exp(scores[i]), weights[i]) for i in ranked]
                m = planner.expansion(nodes, [(math.exp(scores[i]), weights[i]) for i in expand], 1, draft_ms, depth)
                if m == 0:
                    break
                expand = expand[:m]
                draft_ms += planner.step_ms(m)
            self.last_steps += 1
            n_past = self.kv.length
            # mask: committed cache visible; scratch entries only when they are ancestors; self visible
            mask = torch.zeros(len(expand), n_past + len(expand), dtype=self.dtype)
            if n_past > self.kv.committed:
                mask[:, self.kv.committed : n_past] = neg
            rows, cols = [], []
            for row, node in enumerate(expand):
                p = parents[node]
                while p != -1:
                    rows.append(row)
                    cols.append(slot_of[p])
                    p = parents[p]
            if rows:  # one scatter instead of a tensor write per ancestor
                mask[rows, cols] = 0.0
            mask[:, n_past:] = torch.full((len(expand), len(expand)), neg, dtype=self.dtype).fill_diagonal_(0.0)
            hid = torch.stack([hidden_of[parents[i]] for i in expand])
            ids = torch.tensor([tokens[i] for i in expand], dtype=torch.long)
            pos = torch.full((len(expand),), self.last_pos + depth, dtype=torch.long)
            h = self.decoder.layer(hid, ids, pos, self.kv, mask)
            for row, node in enumerate(expand):
                slot_of[node] = n_past + row
                hidden_of[node] = h[row]
            frontier = add_children(expand, self.decoder.logits(h), depth + 1)
        self.kv.drop_scratch()

        # the planner keeps the nodes most likely accepted (a child's chance never exceeds its parent's, and
        # ties go to the earlier-made node, so every prefix is a subtree); a fixed tree, the best-scoring
        rank = (lambda i: (-weights[i], i)) if planner is not None else (lambda i: (-scores[i], i))
        order = sorted(range(len(tokens)), key=rank)
        if planner is not None:
            budget, _ = planner.best_size([weights[i] for i in order], 1, draft_ms)
        else:
            budget = cfg.budget
        kept = sorted(order[:budget])  # creation order is topological and keeps siblings in draw order
        remap = {old: new for new, old in enumerate(kept)}
        remap[-1] = -1
        tree = DraftTree(
            tokens=[tokens[i] for i in kept],
            parents=[remap[parents[i]] for i in kept],
            depths=[depths[i] for i in kept],
            probs=[math.exp(scores[i]) for i in kept],
        )
        if keep_q:
            tree.q = {remap[n]: q for n, q in q_store.items() if n in remap}
        return tree
