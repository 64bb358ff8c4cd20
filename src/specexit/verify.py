"""Accepting draft tokens against the target's logits over the tree.

Greedy: follow the child equal to the target argmax; the first miss gives the bonus token.  The
output is exactly plain greedy decoding.

Sampling: recursive rejection sampling without replacement (Jeon et al. 2024, "Recursive
Speculative Decoding").  At a node with target distribution p and draft distribution q, the
children x1, x2, ... were drawn from q without replacement.  x_i is accepted with probability
min(1, p(x_i)/q_i(x_i)); on rejection p <- norm(max(p - q_i, 0)) and q_{i+1} <- q_i with x_i removed,
renormalised.  When every child is rejected the bonus token is drawn from the final residual p.  The
emitted token is then distributed exactly as p, so the whole output follows the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .sampling import SamplingParams, probs_from_logits, sample
from .tree import DraftTree


@dataclass
class Verdict:
    accepted: list[int]  # accepted tree node indices, root to leaf
    bonus: int  # next token, drawn from the target (after the last accepted node)


def verify_greedy(node_logits: torch.Tensor, tree: DraftTree) -> Verdict:
    """``node_logits``: [1 + n, V], row 0 is the root, row 1 + i is tree node i."""
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


def _dense_q(tree: DraftTree, node: int, vocab: int) -> torch.Tensor:
    ids, probs = tree.q[node]
    q = torch.zeros(vocab, dtype=torch.float32)
    q[ids] = probs.float()
    return q


def verify_sampling(
    node_logits: torch.Tensor, tree: DraftTree, params: SamplingParams, generator: torch.Generator | None
) -> Verdict:
    kids = tree.children()
    vocab = node_logits.shape[-1]
    cur, accepted = -1, []
    while True:
        p = probs_from_logits(node_logits[cur + 1], params)
        cands = kids.get(cur, [])
        nxt = None
        if cands:
            q = _dense_q(tree, cur, vocab)
            for c in cands:
                x = tree.tokens[c]
                qx = float(q[x])
                if qx <= 0.0:  # cannot have been drawn from q: not a valid candidate
                    continue
                px = float(p[x])
                u = float(torch.rand((), generator=generator))
                if u * qx < px:  # u < min(1, px/qx)
                    nxt = c
                    break
                residual = (p - q).clamp_(min=0.0)
                total = float(residual.sum())
                if total <= 0.0:  # p == q up to rounding: rejection had probability ~0
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
