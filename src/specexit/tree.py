"""A draft token tree and the attention mask / positions to verify it in one target forward.

Nodes are stored in topological order (a parent precedes its children) and siblings in the order
they were proposed (for sampling: the order they were drawn without replacement, which the
recursive rejection sampler needs).  Node ``-1`` is the root: the last already-known token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class DraftTree:
    tokens: list[int]  # target-vocabulary ids
    parents: list[int]  # index of the parent node, -1 for a child of the root
    depths: list[int]  # 1 for children of the root
    # draft distribution (over the target vocab, sparse: draft ids + probs) at each expanded node
    # (-1 = root); only needed for rejection sampling
    q: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    # the draft's path probability of each node (its score): what the adaptive planner learns from
    probs: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    def children(self) -> dict[int, list[int]]:
        kids: dict[int, list[int]] = {}
        for i, p in enumerate(self.parents):
            kids.setdefault(p, []).append(i)
        return kids

    def path_to(self, node: int) -> list[int]:
        path = []
        while node != -1:
            path.append(node)
            node = self.parents[node]
        return path[::-1]

    @staticmethod
    def empty() -> DraftTree:
        return DraftTree(tokens=[], parents=[], depths=[])


def ancestor_matrix(parents: list[int]) -> torch.Tensor:
    """[n, n] bool: entry (i, j) is True when node j is node i or one of its ancestors."""
    n = len(parents)
    anc = torch.eye(n, dtype=torch.bool)
    for i, p in enumerate(parents):  # topological order: the parent's row is complete already
        if p >= 0:
            anc[i] |= anc[p]
    return anc


def verification_inputs(
    pending: list[int], tree: DraftTree, past_len: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids [1, P+n], position_ids [1, P+n] and additive mask [1, 1, P+n, past+P+n].

    ``pending`` are committed tokens not yet in the KV cache (the last is the tree root); they attend
    causally.  Tree nodes see the whole past, all pending tokens, their ancestors and themselves.
    """
    p, n = len(pending), len(tree)
    q_len = p + n
    allowed = torch.zeros(q_len, past_len + q_len, dtype=torch.bool)
    allowed[:, :past_len] = True
    allowed[:p, past_len : past_len + p] = torch.ones(p, p, dtype=torch.bool).tril()
    if n:
        allowed[p:, past_len : past_len + p] = True
        allowed[p:, past_len + p :] = ancestor_matrix(tree.parents)
    mask = torch.zeros(q_len, past_len + q_len, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    ids = torch.tensor([pending + tree.tokens], dtype=torch.long)
    pos = list(range(past_len, past_len + p)) + [past_len + p - 1 + d for d in tree.depths]
    return ids, torch.tensor([pos], dtype=torch.long), mask[None, None]


def ancestor_index(parents: list[int]) -> tuple[list[int], list[int]]:
    """The True entries of :func:`ancestor_matrix` as (rows, cols) lists, built on the host from the
    parent list alone: one ``index_put`` then gives the whole matrix instead of a tensor op per node."""
    rows: list[int] = []
    cols: list[int] = []
    chains: list[list[int]] = []  # chains[i]: node i and its ancestors
    for i, p in enumerate(parents):  # topological order: the parent's chain is complete already
        chain = [i, *chains[p]] if p >= 0 else [i]
        chains.append(chain)
        rows.extend([i] * len(chain))
        cols.extend(chain)
    return rows, cols


def first_of_token(tokens: list[int], parents: list[int]) -> list[bool]:
    """Per node: False when an earlier sibling (same parent) carries the same token.  A walk that takes
    the first child with a given token can never reach such a duplicate."""
    seen: set[tuple[int, int]] = set()
    first = []
    for tok, p in zip(tokens, parents, strict=True):
        first.append((p, tok) not in seen)
        seen.add((p, tok))
    return first
