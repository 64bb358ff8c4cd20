"""Accepting draft tokens against the target's logits over the tree.

Greedy: follow the child equal to the target argmax; the first miss gives the bonus token.  The
output is exactly plain greedy decoding.

Sampling: recursive rejection sampling without replacement (Jeon et al. 2024, "Recursive
Speculative Decoding").  At a node with target distribution p and draft distribution q, the
children x1, x2, ... were drawn from q without replacement.  x_i is accepted with probability
min(1, p(x_i)/q_i(x_i)); on rejection p <- norm(max(p - q_i, 0)) and q_{i+1} <- q_i with x_i removed,
renormalised.  When every child is rejected the bonus token is drawn from the final residual p.  The
emitted token is then distributed exactly as p, so the whole output follows the target.

Host reads.  Both verifiers keep the work on tensors (on the logits' device) and read back to the
host only what decides control flow: greedy reads once per call (the accepted path and the bonus);
sampling reads once per tree level that has children (which child, if any, was accepted) and once
for the bonus token.  Nothing is read per node or per sibling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .sampling import SamplingParams, probs_from_logits, sample
from .tree import DraftTree, ancestor_index, first_of_token


@dataclass
class Verdict:
    accepted: list[int]  # accepted tree node indices, root to leaf
    bonus: int  # next token, drawn from the target (after the last accepted node)


def verify_greedy(node_logits: torch.Tensor, tree: DraftTree) -> Verdict:
    """``node_logits``: [1 + n, V], row 0 is the root, row 1 + i is tree node i.

    The walk "from the root, take the first child whose token is the target argmax at its parent"
    is computed for all nodes at once:

    * ``match[i]``: node i's token is the argmax of its parent's row, and i is the first of its
      siblings with that token (a later duplicate is never reached by the walk);
    * ``ok[i]``: node i and all its ancestors match (ancestor matrix, no walk);
    * the ``ok`` nodes are exactly the walked path: an ok node's parent is ok, and a node has at most
      one ok child (matching children carry the argmax token and duplicates are excluded).  Indices
      are topological, so sorted ok nodes run root to leaf; the bonus is the argmax after the deepest.

    One host read per call: the ok mask and the bonus token together.
    """
    n = len(tree)
    device = node_logits.device
    best = node_logits.argmax(-1)  # [1 + n] target argmax per row
    if n == 0:
        return Verdict([], best[0].tolist())
    meta = torch.tensor(  # [3, n]: parent row in node_logits, token, first of its token among siblings
        [[p + 1 for p in tree.parents], tree.tokens, first_of_token(tree.tokens, tree.parents)],
        dtype=torch.long,
        device=device,
    )
    parent_row, tokens, first = meta[0], meta[1], meta[2].bool()  # [n] each
    match = (tokens == best.index_select(0, parent_row)) & first  # [n] bool
    rows, cols = ancestor_index(tree.parents)
    anc = torch.zeros(n, n, dtype=torch.bool, device=device)  # [n, n]: (i, j) j is i or an ancestor
    anc[torch.tensor(rows, device=device), torch.tensor(cols, device=device)] = True
    ok = ~(anc & ~match).any(-1)  # [n] bool: no mismatch on the path root -> i
    rank = torch.arange(1, n + 1, device=device)  # [n] row of node i in node_logits
    leaf_row = (ok * rank).amax().view(1)  # [1]: row of the deepest ok node, 0 (root) if none
    bonus = best.index_select(0, leaf_row)  # [1]
    host = torch.cat([ok.long(), bonus]).tolist()  # the one host read: [n] ok flags + bonus
    return Verdict([i for i in range(n) if host[i]], host[n])


def _dense_q(tree: DraftTree, node: int, vocab: int, device: torch.device | None = None) -> torch.Tensor:
    ids, probs = tree.q[node]
    q = torch.zeros(vocab, dtype=torch.float32, device=device)  # [V]
    q[ids.to(q.device)] = probs.to(q.device, torch.float32)
    return q


def _try_children(
    p: torch.Tensor, q: torch.Tensor, xs: list[int], u: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Recursive rejection over the children tokens ``xs`` of one node, entirely on tensors.

    ``p``: [V] target distribution, ``q``: [V] draft distribution the children were drawn from
    (modified in place), ``u``: [len(xs)] uniforms, one per child.  Returns ``pick`` ([] long: the
    index into ``xs`` of the accepted child, -1 if none) and, for the bonus when none is accepted,
    the final residual unnormalised: ``w`` [V] and its sum ``W`` [] (float64).

    Every child runs the same tensor ops; a child that must not act (one was accepted, the loop
    stopped, or it has no draft mass) gets a zero update coefficient, which leaves the state
    unchanged, instead of a host-side ``break``.  The state is kept unnormalised so a rejection
    costs one fused update and one sum over V:

    * target: ``p_i = w / W`` with ``W = sum(w)``.  ``max(p_i - q_i, 0) = max(w - (W/R) r, 0) / W``,
      so the residual's unnormalised form is ``w <- max(w - c r, 0)`` with ``c = W / R``; c = 0 is
      the identity (w >= 0);
    * draft: ``q_i = r / R``.  ``r`` is the given q with rejected tokens zeroed; like the sequential
      version the first child uses q as given (R = 1) and later ones the renormalised remainder
      (R = sum(r), tracked in float64 by subtracting the removed mass).

    Acceptance ``u < min(1, p_i(x) / q_i(x))`` is tested as ``u q_i(x) < p_i(x)``.  The two stops of
    the sequential rule are kept: a residual with no mass left (p == q up to rounding; that
    rejection had probability ~0) keeps the previous p, and a draft with no mass left ends the loop.
    Each ``u_i`` is only looked at when the children before it were rejected, so the uniforms being
    drawn up front changes nothing in distribution.
    """
    f64 = torch.float64
    w = p  # [V] unnormalised target
    W = w.sum(dtype=f64)  # [] sum(w)
    r = q  # [V] unnormalised draft (rejected tokens zeroed)
    S = r.sum(dtype=f64)  # [] sum(r)
    R = torch.ones((), dtype=f64, device=p.device)  # [] q_i = r / R
    done = torch.zeros((), dtype=torch.bool, device=p.device)  # [] accepted or stopped
    pick = torch.full((), -1, dtype=torch.long, device=p.device)  # [] accepted child's index in xs
    for i, x in enumerate(xs):
        rx, wx = r[x].to(f64), w[x].to(f64)  # [] copies: draft and target mass of this child's token
        valid = ~done & (rx > 0)  # a token with no draft mass cannot have been drawn: skip it
        accept = valid & (u[i] * rx * W < wx * R)  # u q_i(x) < p_i(x), denominators multiplied out
        reject = valid & ~accept
        coef = torch.where(reject, W / R, 0.0).to(w.dtype)  # [] 0: no update
        cand = torch.addcmul(w, r, coef, value=-1.0).clamp_(min=0.0)  # [V] max(w - c r, 0)
        cand_sum = cand.sum(dtype=f64)
        no_mass = reject & (cand_sum <= 0)  # p <= q everywhere: keep p and stop
        upd = reject & ~no_mass
        w = torch.where(no_mass, w, cand)
        W = torch.where(no_mass, W, cand_sum)
        r[x] = torch.where(upd, 0.0, rx).to(r.dtype)  # remove x from the draft
        S = S - torch.where(upd, rx, 0.0)
        R = torch.where(upd, S, R)
        pick = torch.where(accept, i, pick)
        done = done | accept | no_mass | (upd & (S <= 0))  # the last: the draft has no mass left
    return pick, w, W


def verify_sampling(
    node_logits: torch.Tensor, tree: DraftTree, params: SamplingParams, generator: torch.Generator | None
) -> Verdict:
    """Recursive rejection sampling down the tree (see the module docstring and ``_try_children``).

    Per level: the target distribution of the current node, the draft distribution of its children
    (``tree.q``), one batch of uniforms (one per child, drawn from ``generator``) and the rejection
    loop on tensors; then one host read of the accepted child's index.  A level without children
    needs no read.  The bonus costs one more read, so a call reads ``accepted levels + 2`` times at
    most, whatever the tree's size.  Same generator state, same verdict.
    """
    kids = tree.children()
    vocab = node_logits.shape[-1]
    cur, accepted = -1, []
    while True:
        p = probs_from_logits(node_logits[cur + 1], params)  # [V]
        cands = kids.get(cur, [])
        if not cands:
            return Verdict(accepted, sample(p, generator))
        q = _dense_q(tree, cur, vocab, p.device)  # [V]
        gen_device = generator.device if generator is not None else None
        u = torch.rand(len(cands), generator=generator, device=gen_device).to(p.device)  # [k]
        pick, w, w_sum = _try_children(p, q, [tree.tokens[c] for c in cands], u)
        j = int(pick.item())  # this level's one host read
        if j < 0:
            return Verdict(accepted, sample(w / w_sum.to(w.dtype), generator))
        accepted.append(cands[j])
        cur = cands[j]
