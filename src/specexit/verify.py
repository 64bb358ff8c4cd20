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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Recursive rejection over the children tokens ``xs`` of one node, entirely on tensors.

    ``p``: [V] target distribution, ``q``: [V] draft distribution the children were drawn from,
    ``u``: [k] uniforms, one per child.  Returns ``pick`` ([] long: index into ``xs`` of the accepted
    child, -1 if none) and the residual to draw the bonus from when none is accepted ([V], normalised).

    Why this is the sequential rule.  Write the state after some rejections unnormalised,
    ``p_i = w_i / W_i`` and ``q_i = r_i / R_i`` (``r_i``: q with the rejected tokens zeroed; ``R_1 = 1``
    -- the first child uses q as given, like the sequential version -- and later ``R_i = sum(r_i)``).
    A rejection of ``x_i`` sets ``w_{i+1} = max(w_i - c_i r_i, 0)`` with ``c_i = W_i / R_i``, which is
    ``W_i max(p_i - q_i, 0)``.  Since ``max(max(a, 0) - b, 0) = max(a - b, 0)`` for b >= 0, and a rejected
    token is left with no residual mass (rejection needs ``p_i(x) <= u q_i(x) < q_i(x)``) so dropping it
    from r changes nothing afterwards, every residual has the closed form

        w_{i+1} = max(p - C_i q, 0),   C_i = c_1 + ... + c_i,

    with the *original* p and q: the state is a few scalars (C, W = sum(w), R), and a rejection costs
    one pass over V (the sum W).  Removed tokens are zeroed explicitly in the final residual, so
    rounding cannot give them mass back.

    Why no host reads.  Child i is only tried when every earlier child was rejected (or skipped), so
    the state child i is tested with is the one of the "everything before was rejected" trajectory.
    That trajectory does not depend on the uniforms: the loop computes it for all children (the
    sequential rule's two stops freeze it: a residual with no mass, p == q up to rounding, keeps the
    previous p; a draft with no mass left ends the loop).  Then every child's test
    ``u_i q_i(x_i) < p_i(x_i)`` (= ``u < min(1, p/q)``) runs as one vector op and the accepted child is
    the first that passes.  Each ``u_i`` is looked at only through that test, after the children
    before it failed theirs, so drawing the uniforms up front changes nothing in distribution.  A
    child whose token has no draft mass cannot have been drawn from q and is skipped, as is a
    duplicate of an earlier sibling (its mass was removed with that sibling, or it had none).
    """
    k, device = len(xs), p.device
    f64 = torch.float64
    ids = torch.tensor(xs, dtype=torch.long, device=device)  # [k]
    first = torch.tensor(first_of_token(xs, [0] * k), device=device)  # [k] bool: not a duplicate
    qs = q.index_select(0, ids) * first  # [k] draft mass of each child's token (0: skipped)
    tried = qs > 0  # [k] a candidate at all
    W = p.sum()  # [] sum of max(p - C q, 0) at C = 0
    C = torch.zeros((), dtype=p.dtype, device=device)  # [] residual = max(p - C q, 0)
    S = q.sum(dtype=f64)  # [] draft mass not yet removed
    R = torch.ones((), dtype=f64, device=device)  # [] q_i = r / R
    alive = torch.ones((), dtype=torch.bool, device=device)  # [] the sequential loop still runs
    states = []  # (W_i, R_i, C_i, alive_i): child i is tested against these
    removed = []  # [] bool per child: rejected with an update (its token leaves q)
    for go_i, qx in zip(tried.unbind(), qs.unbind(), strict=True):
        states.append((W, R, C, alive))
        go = alive & go_i  # tried (and, on this trajectory, rejected)
        c_new = C + torch.where(go, W / R, 0.0).to(C.dtype)
        w_sum = torch.addcmul(p, q, c_new, value=-1.0).clamp_(min=0.0).sum()  # [] sum max(p - C q, 0)
        upd = go & (w_sum > 0)  # otherwise p <= q everywhere: keep p and stop
        C = torch.where(upd, c_new, C)
        W = torch.where(upd, w_sum, W)
        S = S - torch.where(upd, qx, 0.0)
        R = torch.where(upd, S, R)
        removed.append(upd)
        alive = alive & (upd | ~go) & (S > 0)  # S <= 0: the draft has no mass left
    W_i, R_i, C_i, alive_i = (torch.stack(v) for v in zip(*states, strict=True))  # [k] each
    ps = p.index_select(0, ids)  # [k] target mass of each child's token
    wx = (ps - C_i * qs).clamp_(min=0.0)  # [k] W_i p_i(x_i)
    accept = alive_i & tried & (u * qs * W_i < wx * R_i)  # [k] u q_i(x) < p_i(x), denominators multiplied out
    order = torch.arange(k, device=device)
    first_ok = torch.where(accept, order, k).amin()  # [] k when none passes
    pick = torch.where(first_ok < k, first_ok, -1)
    w = torch.addcmul(p, q, C, value=-1.0).clamp_(min=0.0)  # [V] final residual, unnormalised
    # zero the removed tokens; every occurrence of a token writes the same value (its first sibling's)
    owner = torch.tensor([xs.index(x) for x in xs], dtype=torch.long, device=device)  # [k]
    w[ids] = torch.where(torch.stack(removed).index_select(0, owner), 0.0, w.index_select(0, ids))
    return pick, w / w.sum()


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
        pick, residual = _try_children(p, q, [tree.tokens[c] for c in cands], u)
        j = int(pick.item())  # this level's one host read
        if j < 0:
            return Verdict(accepted, sample(residual, generator))
        accepted.append(cands[j])
        cur = cands[j]
