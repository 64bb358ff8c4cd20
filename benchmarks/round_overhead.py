"""Per-round cost of speculative decoding: how much of a round is the target's own forward, and how
much is engine overhead (drafting the tree, building the tree mask, verification, KV compaction,
signal read-out, draft commit, Python bookkeeping).

    python benchmarks/round_overhead.py --model tiny
    python benchmarks/round_overhead.py --model smollm2-135m          # real model from the zoo
    python benchmarks/round_overhead.py --model smollm2-135m --accept natural

The draft is an untrained SpecExit draft sized for the target (32k draft vocabulary, as trained
drafts for Llama-3/Qwen3 vocabularies have); its cost does not depend on its weights.  With
``--accept forced`` (default) the best chain of every proposed tree is overwritten with the target's
true greedy continuation, so rounds accept the full depth as a well-trained draft would; this is the
costliest case for KV compaction and draft commit.  ``natural`` keeps the untrained draft's guesses.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

from specexit.draft import init_draft
from specexit.engine import SpecExitGenerator
from specexit.profiling import RoundProfile
from specexit.proposer import DraftProposer, TreeConfig
from specexit.target import TargetModel, resolve_dtype
from specexit.tiny import make_tiny

PROMPT = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May? Think step by step."
)
SECTIONS = ("propose", "tree_inputs", "target_forward", "verify", "kv_compact", "signals_exit", "draft_commit")


class ForcedAcceptanceProposer(DraftProposer):
    """The real proposer (full drafting cost), whose best chain is then overwritten with the target's
    known greedy continuation so that verification accepts it.  Forcing stops if the generated
    sequence ever leaves the reference (in bf16 a near-tie can flip: see docs/performance.md)."""

    def __init__(self, draft, tree_cfg, sampling, reference: list[int], start: int) -> None:
        super().__init__(draft, tree_cfg, sampling)
        self.reference, self.position = reference, start  # position: length of the committed sequence
        self.on_reference = True

    def commit(self, fused, next_tokens) -> None:
        super().commit(fused, next_tokens)
        if self.position > 1:  # the first commit is the prompt itself
            got = self.reference[self.position : self.position + len(next_tokens)]
            self.on_reference = self.on_reference and got == list(next_tokens)
        self.position += len(next_tokens)

    def propose(self, gen=None):
        tree = super().propose(gen)
        node, depth = -1, 0
        kids = tree.children()
        while self.on_reference and kids.get(node) and self.position + depth < len(self.reference):
            node = kids[node][0]
            want = self.reference[self.position + depth]
            for sib in kids.get(tree.parents[node], []):  # no sibling may already hold the true token
                if tree.tokens[sib] == want:
                    tree.tokens[sib] = (want + 1) % self.draft.cfg.vocab_size
            tree.tokens[node] = want
            depth += 1
        return tree


def load_target(name: str, dtype: str) -> tuple[TargetModel, object, str]:
    from transformers import AutoTokenizer

    if name == "tiny":
        from specexit.zoo import cache_dir

        path = cache_dir() / "bench" / "tiny-qwen3"
        if not (path / "config.json").is_file():
            make_tiny("qwen3", path)
    elif Path(name).is_dir():
        path = Path(name)
    else:
        from specexit.zoo import get_model

        path = get_model(name)
    return TargetModel.from_pretrained(path, dtype=dtype), AutoTokenizer.from_pretrained(path), str(path)


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    target, tok, path = load_target(args.model, args.dtype)
    draft_dtype = resolve_dtype(args.draft_dtype or args.dtype)
    draft = init_draft(target, draft_vocab_size=min(args.draft_vocab, target.vocab_size)).to(draft_dtype)
    total, depth, branching = (int(x) for x in args.tree.split(","))
    tree = TreeConfig(total_tokens=total, depth=depth, branching=branching)
    gen = SpecExitGenerator(target, tok, draft)
    ids = gen.encode_prompt(PROMPT)
    if args.context > len(ids):  # a long context, as deep in a reasoning trace: prefix earlier problems
        filler = tok.encode(" ".join([PROMPT] * (args.context // 20 + 1)), add_special_tokens=False)
        ids = gen.encode_prompt(tok.decode(filler[: args.context - len(ids)]) + "\n\n" + PROMPT)
    n_new = args.rounds * (depth + 1) + 1

    t0 = time.perf_counter()
    ref = gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=n_new)
    vanilla_s = time.perf_counter() - t0
    vanilla_ms_per_token = 1000 * vanilla_s / ref.new_tokens
    reference = ids + ref.token_ids
    if args.accept == "forced":
        gen.proposer_factory = lambda d, t, s: ForcedAcceptanceProposer(d, t, s, reference, start=1)
        # In bf16 the verification forward (61 rows) and plain decoding (1 row) round differently, so
        # a near-tie can flip and the speculative output leave the plain greedy one.  Then take the
        # speculative output as the reference and repeat until forcing reproduces its own output.
        for _ in range(8):
            out = gen.generate(input_ids=ids, mode="spec", max_new_tokens=n_new, tree=tree).token_ids
            if ids + out == reference:
                break
            reference[:] = ids + out

    rows = []
    for rep in range(args.repeats + 1):  # the first repeat warms up and is dropped
        prof = RoundProfile()
        stream = gen.stream(input_ids=ids, mode="spec", max_new_tokens=n_new, tree=tree, profile=prof)
        it = iter(stream)
        next(it)  # prefill + first token: not a round
        t_first = time.perf_counter()
        for _ in it:
            pass
        loop_s = time.perf_counter() - t_first
        r = stream.result
        assert r is not None
        match = next(
            (i for i, (a, b) in enumerate(zip(r.token_ids, ref.token_ids, strict=False)) if a != b), r.new_tokens
        )
        if args.dtype == "float32" and args.accept == "forced":
            assert match == r.new_tokens, "fp32 speculative greedy output must equal plain greedy output"
        if rep == 0:
            continue
        per = prof.per_round_ms()
        round_ms = 1000 * loop_s / prof.rounds
        rows.append(
            {
                "round_ms": round_ms,
                **{f"{k}_ms": per.get(k, 0.0) for k in SECTIONS},
                "other_ms": round_ms - sum(per.get(k, 0.0) for k in SECTIONS),
                "rounds": prof.rounds,
                "tree_tokens": prof.tree_tokens / prof.rounds,
                "mean_accept_length": r.mean_accept_length,
                "tokens_equal_to_vanilla": match,
                "new_tokens": r.new_tokens,
            }
        )
    med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    overhead = med["round_ms"] - med["target_forward_ms"]
    tokens_per_round = med["mean_accept_length"]
    return {
        "model": args.model,
        "path": path,
        "params_m": round(sum(p.numel() for p in target.model.parameters()) / 1e6, 1),
        "layers": target.num_layers,
        "hidden": target.hidden_size,
        "vocab": target.vocab_size,
        "draft_vocab": draft.cfg.draft_vocab_size,
        "dtype": args.dtype,
        "draft_dtype": str(draft_dtype).removeprefix("torch."),
        "threads": args.threads,
        "tree": args.tree,
        "accept": args.accept,
        "prompt_tokens": len(ids),
        "repeats": args.repeats,
        "median": {k: round(v, 3) for k, v in med.items()},
        "overhead_ms": round(overhead, 3),
        "overhead_pct_of_round": round(100 * overhead / med["round_ms"], 1),
        "vanilla_ms_per_token": round(vanilla_ms_per_token, 3),
        "spec_ms_per_token": round(med["round_ms"] / tokens_per_round, 3),
        "speedup_vs_vanilla": round(vanilla_ms_per_token * tokens_per_round / med["round_ms"], 3),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": torch.get_num_threads(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="'tiny', a zoo name (smollm2-135m, ...) or an HF folder")
    ap.add_argument("--tree", default="60,6,10", help="total_tokens,depth,branching")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--context", type=int, default=0, help="grow the prompt to about this many tokens")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--accept", choices=["forced", "natural"], default="forced")
    ap.add_argument("--draft-vocab", type=int, default=32000)
    ap.add_argument("--dtype", default="float32", help="target precision")
    ap.add_argument("--draft-dtype", default=None, help="draft precision (default: the target's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the JSON here too")
    args = ap.parse_args()
    res = run(args)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
