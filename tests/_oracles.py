"""Test-only proposers that know the target, so speculative rounds accept deep paths.

An untrained draft on a random tiny model accepts almost nothing, which leaves the accepted-path
code (KV compaction over deep paths, multi-token commits, a boundary in the middle of a round)
untested.  These proposers plug into ``SpecExitGenerator(proposer_factory=...)``: they see the same
commits the real ``DraftProposer`` sees and return a ``DraftTree`` in the same form.
"""

from __future__ import annotations

import random

import torch

from specexit.sampling import SamplingParams, gumbel_topk, probs_from_logits
from specexit.tree import DraftTree


class _SequenceTracker:
    """Rebuilds the committed token sequence from ``commit`` calls (the last one is the tree root)."""

    def __init__(self, target, prompt_ids: list[int]) -> None:
        self.target = target
        self.seq = [prompt_ids[0]]

    def commit(self, fused, next_tokens: list[int]) -> None:  # same signature as DraftProposer
        self.seq += list(next_tokens)

    @torch.inference_mode()
    def next_logits(self, contexts: list[list[int]]) -> torch.Tensor:
        """Target logits after each context (fresh forward, no cache: the oracle shares no state with
        the engine).  Contexts are of equal length, so no padding is needed."""
        assert len({len(c) for c in contexts}) == 1
        out = self.target.model(input_ids=torch.tensor(contexts), use_cache=False)
        return out.logits[:, -1].float()


class GreedyOracleProposer(_SequenceTracker):
    """Proposes the target's true greedy continuation as a chain of ``depth`` tokens, with a decoy
    sibling before the true child at some levels (so the accepted path is not always the first
    child), a decoy branch of two tokens off the root, and, with probability ``error_rate``, a wrong
    token at a random depth (so acceptance lengths vary)."""

    def __init__(
        self,
        target,
        prompt_ids,
        depth: int = 6,
        error_rate: float = 0.3,
        seed: int = 0,
        reference: list[int] | None = None,
    ) -> None:
        super().__init__(target, prompt_ids)
        self.depth, self.error_rate = depth, error_rate
        # prompt + the known greedy continuation: a shortcut while the sequence follows it
        self.reference = reference or []
        self.rng = random.Random(seed)
        self.vocab = target.vocab_size

    def _decoy(self, avoid: int) -> int:
        tok = self.rng.randrange(self.vocab)
        return tok if tok != avoid else (tok + 1) % self.vocab

    def propose(self, gen=None) -> DraftTree:
        n = len(self.seq)
        on_reference = len(self.reference) >= n + self.depth and self.reference[:n] == self.seq
        truth: list[int] = list(self.reference[n : n + self.depth]) if on_reference else []
        while len(truth) < self.depth:
            truth.append(int(self.next_logits([self.seq + truth])[0].argmax()))
        if self.rng.random() < self.error_rate:
            d = self.rng.randrange(self.depth)
            truth[d] = self._decoy(truth[d])
        tokens, parents, depths = [], [], []

        def add(tok: int, parent: int, depth: int) -> int:
            tokens.append(tok)
            parents.append(parent)
            depths.append(depth)
            return len(tokens) - 1

        branch = add(self._decoy(truth[0]), -1, 1)  # decoy branch off the root, with a child
        add(self._decoy(-1), branch, 2)
        parent = -1
        for d, tok in enumerate(truth):
            if self.rng.random() < 0.5:
                add(self._decoy(tok), parent, d + 1)
            parent = add(tok, parent, d + 1)
        return DraftTree(tokens=tokens, parents=parents, depths=depths)


class MixtureOracleProposer(_SequenceTracker):
    """A sampling proposer whose draft distribution at each node is ``(1 - mix) * p + mix * noise``
    (p: the target's own distribution after temperature/top-k/top-p), so rejection sampling accepts
    often and deep.  The tree has a fixed shape (``branching[d]`` children per node at depth d), drawn
    without replacement from q, so whether a node exists never depends on the token it drew."""

    def __init__(self, target, prompt_ids, sampling: SamplingParams, branching=(2, 2, 1), mix: float = 0.4):
        super().__init__(target, prompt_ids)
        self.sampling, self.branching, self.mix = sampling, branching, mix
        noise_gen = torch.Generator().manual_seed(1234)
        self.noise = torch.rand(target.vocab_size, generator=noise_gen) ** 4
        self.noise /= self.noise.sum()

    def propose(self, gen=None) -> DraftTree:
        tree = DraftTree.empty()
        frontier = [-1]
        for depth, k in enumerate(self.branching, start=1):
            contexts = [self.seq + [tree.tokens[i] for i in tree.path_to(n)] if n != -1 else self.seq for n in frontier]
            p = probs_from_logits(self.next_logits(contexts), self.sampling)
            nxt = []
            for row, node in enumerate(frontier):
                q = (1 - self.mix) * p[row] + self.mix * self.noise
                tree.q[node] = (torch.arange(q.shape[0]), q)
                for tok in gumbel_topk(q.log(), k, gen).tolist():
                    tree.tokens.append(tok)
                    tree.parents.append(node)
                    tree.depths.append(depth)
                    nxt.append(len(tree.tokens) - 1)
            frontier = nxt
        return tree
