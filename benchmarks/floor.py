"""How close the engine runs to its floor, per model, in one run (issue #22).

For each model: plain decoding, speculative decoding with each fixed tree given (the best one is
reported) and with ``--tree auto``, on the same prompts and token counts.  Per method:

- ms/token of the decoding loop (prefill and the first token excluded: they are the same for all);
- the target's verification forward per round, the rest of the round (overhead, % of the round),
  tokens per round (accepted + the bonus);
- the floor: the time of the round's one target forward divided by the tokens it yields, summed over
  rounds (what an engine with zero overhead would take for the same acceptance), and ms/token / floor.

``--accept forced`` overwrites the draft's best chain with the target's own greedy continuation and
accepts it whatever the precision's near-ties (the costliest case for the engine's bookkeeping, and the
acceptance a perfect draft would reach).

    python benchmarks/floor.py --model testbed --out benchmarks/results/floor/testbed.json
    python benchmarks/floor.py --model qwen2.5-coder-0.5b --trees "chain:2;chain:4;16,5,4" --accept forced
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from specexit.cli_options import parse_tree
from specexit.draft import Eagle3Draft, init_draft
from specexit.engine import SpecExitGenerator
from specexit.machine import machine_info
from specexit.profiling import RoundProfile
from specexit.proposer import DraftProposer
from specexit.round_cost import load_or_measure
from specexit.target import TargetModel, load_tokenizer, resolve_dtype
from specexit.verify import Verdict, verify_greedy
from specexit.zoo.registry import shipped_draft_or_none

ASSETS = Path(__file__).resolve().parents[1] / "src" / "specexit" / "assets"


def forced(reference: list[int]) -> tuple[type[DraftProposer], Callable]:
    """A perfect draft for one prompt: a DraftProposer (full drafting cost, planner included) whose best
    chain is overwritten with the target's greedy continuation ``reference`` (prompt + output), and a
    greedy verifier that accepts what matches the reference (after computing the real verdict, so the
    round costs what it would).  Forcing is then exact in any precision: in bf16 a k-token verification
    forward can break a near-tie differently from the 1-token forwards that wrote the reference, and the
    output would leave it for the rest of the request (every later forced token wrong)."""
    live: list[DraftProposer] = []

    class Forced(DraftProposer):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            self.position = 0  # tokens of the sequence so far (the first commit covers the prompt)
            live[:] = [self]

        def commit(self, fused, next_tokens) -> None:
            super().commit(fused, next_tokens)
            self.position += len(next_tokens) if self.position else len(next_tokens) + 1

        def propose(self, gen=None):
            tree = super().propose(gen)
            kids, node, depth = tree.children(), -1, 0
            while kids.get(node) and self.position + depth < len(reference):
                node = kids[node][0]
                want = reference[self.position + depth]
                for sib in kids.get(tree.parents[node], []):  # no sibling may already hold the true token
                    if tree.tokens[sib] == want:
                        tree.tokens[sib] = (want + 1) % self.draft.cfg.vocab_size
                tree.tokens[node] = want
                depth += 1
            return tree

    def verifier(node_logits: torch.Tensor, tree) -> Verdict:
        real = verify_greedy(node_logits, tree)
        at, kids, node, acc = live[0].position, tree.children(), -1, []
        while at + len(acc) < len(reference):
            want = reference[at + len(acc)]
            node = next((c for c in kids.get(node, []) if tree.tokens[c] == want), None)
            if node is None:
                break
            acc.append(node)
        nxt = at + len(acc)
        return Verdict(acc, reference[nxt] if nxt < len(reference) else real.bonus)

    return Forced, verifier


def load(
    model: str, dtype: str, draft_vocab: int = 4096, draft_mlp: int | None = None
) -> tuple[SpecExitGenerator, str]:
    if model == "testbed":
        path = ASSETS / "testbed"
    elif Path(model).is_dir():
        path = Path(model)
    else:
        from specexit.zoo import get_model

        path = get_model(model)
    target = TargetModel.from_pretrained(path, dtype=dtype)
    # the shipped draft of the testbed or of a zoo model (the zoo's registry says which ship one)
    # (an HF folder of a zoo model, such as `specexit models get qwen2.5-coder-0.5b-think`'s, goes by its name)
    draft_dir = ASSETS / "testbed-draft" if model == "testbed" else shipped_draft_or_none(Path(model).name)
    if draft_dir is not None:
        draft = Eagle3Draft.from_pretrained(draft_dir, target=target, dtype=resolve_dtype(dtype))
    else:  # no trained draft: an untrained one of the shipped drafts' shape (its cost does not depend on its
        # weights), with their draft vocabulary unless told otherwise
        vocab = min(draft_vocab, target.vocab_size)
        draft = init_draft(target, draft_vocab_size=vocab, intermediate_size=draft_mlp).to(resolve_dtype(dtype))
    gen = SpecExitGenerator(target, load_tokenizer(path), draft)
    desc = str(draft_dir) if draft_dir else (f"untrained (init_draft, draft vocabulary {draft.cfg.draft_vocab_size}, "
                                             f"MLP width {draft.cfg.intermediate_size})")  # fmt: skip
    return gen, desc


def load_from_args(ap: argparse.ArgumentParser, model: str) -> tuple[argparse.Namespace, SpecExitGenerator, str]:
    """For the scripts beside this one: add --model (default ``model``), --dtype (bf16), --threads and --out
    to ``ap``, parse, set the thread count and load the model and its draft."""
    ap.add_argument("--model", default=model)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    gen, draft = load(a.model, a.dtype)
    return a, gen, draft


def prompts(gen: SpecExitGenerator, dataset: str, n: int, context: int) -> list[list[int]]:
    from specexit.bench.datasets import load_dataset

    questions = [p.question for p in load_dataset(dataset, limit=max(n, 20))]
    out = []
    for q in questions[:n]:
        if context:  # a long context, as deep in a reasoning trace: earlier problems before this one
            filler = " ".join(questions * 20)
            ids = gen.tokenizer.encode(filler, add_special_tokens=False)[:context]
            q = gen.tokenizer.decode(ids) + "\n\n" + q
        out.append(gen.encode_prompt(q))
    return out


def run_method(gen, ids_list, mode, tree, n_new, references=None) -> dict:
    loop_s = target_s = 0.0
    tokens = rounds = 0
    accept, spec = [], []
    sections: dict[str, float] = {}  # seconds per part of a round, over all prompts
    for i, ids in enumerate(ids_list):
        if references is not None:
            gen.proposer_factory, gen.greedy_verifier = forced(references[i])
        prof = RoundProfile()
        stream = gen.stream(input_ids=ids, mode=mode, max_new_tokens=n_new, tree=tree, profile=prof)
        it = iter(stream)
        next(it)  # prefill + the first token: the same for every method
        t0 = time.perf_counter()
        for _ in it:
            pass
        loop_s += time.perf_counter() - t0
        r = stream.result
        if references is not None and ids + r.token_ids != references[i][: len(ids) + len(r.token_ids)]:
            raise RuntimeError("forced acceptance left its reference")  # the verifier above prevents it
        tokens += r.new_tokens - 1
        rounds += prof.rounds
        target_s += prof.seconds.get("target_forward", 0.0)
        for k, v in prof.seconds.items():
            sections[k] = sections.get(k, 0.0) + v
        accept += r.accept_lengths
        if r.speculation:
            spec.append(r.speculation)
    gen.proposer_factory, gen.greedy_verifier = DraftProposer, verify_greedy
    ms_tok = 1e3 * loop_s / tokens
    out = {"ms_per_token": round(ms_tok, 3), "tokens": tokens}
    if mode != "vanilla":
        floor = 1e3 * target_s / tokens
        out.update(rounds=rounds, tokens_per_round=round(tokens / rounds, 3),
                   target_forward_ms_per_round=round(1e3 * target_s / rounds, 3),
                   overhead_ms_per_round=round(1e3 * (loop_s - target_s) / rounds, 3),
                   overhead_pct_of_round=round(100 * (loop_s - target_s) / loop_s, 1),
                   floor_ms_per_token=round(floor, 3), vs_floor=round(ms_tok / floor, 3),
                   sections_ms_per_round={k: round(1e3 * v / rounds, 3) for k, v in sections.items()})  # fmt: skip
        if spec:
            out["auto"] = spec
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="testbed, a zoo name (qwen2.5-coder-0.5b, ...) or an HF folder")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--trees", default="chain:2;chain:4;16,5,4", help="fixed trees to try, ';'-separated")
    ap.add_argument("--auto", default="auto", help="the adaptive tree's spec (auto or auto:T,D,B)")
    ap.add_argument("--dataset", default=None, help="default: testbed:20 for the testbed, else gsm8k100")
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--context", type=int, default=0, help="put about this many tokens before each question")
    ap.add_argument("--repeats", type=int, default=2, help="passes over all methods (the median is kept)")
    ap.add_argument("--accept", choices=["natural", "forced"], default="natural")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--draft-vocab",
        type=int,
        default=4096,
        help="draft vocabulary of the untrained stand-in draft of a model that ships none (the shipped "
        "drafts' 4,096 by default; EAGLE-3's usual 32,000 shows what a larger draft head costs)",
    )
    ap.add_argument("--draft-intermediate", type=int, default=None,
                    help="MLP width of that stand-in draft (default: the target's; the shipped Qwen2.5-0.5B drafts "
                         "use 1,024 for a hidden size of 896)")  # fmt: skip
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    gen, draft = load(a.model, a.dtype, a.draft_vocab, a.draft_intermediate)
    ids_list = prompts(gen, a.dataset or ("testbed:20" if a.model == "testbed" else "gsm8k100"), a.prompts, a.context)
    t0 = time.perf_counter()
    # measured afresh in this run (a cached table may come from a busier moment); --tree auto then reads it
    cost, _ = load_or_measure(gen.target, gen.draft, branching=parse_tree(a.auto).k, refresh=True)
    measured_s = time.perf_counter() - t0
    references = None
    if a.accept == "forced":
        references = [ids + gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=a.new_tokens).token_ids
                      for ids in ids_list]  # fmt: skip
    methods = [("vanilla", "vanilla", None)] + [(t, "spec", parse_tree(t)) for t in a.trees.split(";")]
    methods.append((a.auto, "spec", parse_tree(a.auto)))
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in methods}
    run_method(gen, ids_list[:1], "spec", parse_tree(a.auto), 16, references)  # warm-up
    for rep in range(a.repeats):  # interleaved: every method sees the same machine state
        for name, mode, tree in methods:
            runs[name].append(run_method(gen, ids_list, mode, tree, a.new_tokens, references))
            print(f"rep {rep} {name:12s} {runs[name][-1]['ms_per_token']:8.3f} ms/token", file=sys.stderr)
    # per method, the run of median speed
    med = {name: sorted(rs, key=lambda r: r["ms_per_token"])[len(rs) // 2] for name, rs in runs.items()}
    vanilla = med["vanilla"]["ms_per_token"]
    fixed = a.trees.split(";")
    best_fixed = min(fixed, key=lambda t: med[t]["ms_per_token"])
    for name in med:
        med[name]["speedup_vs_vanilla"] = round(vanilla / med[name]["ms_per_token"], 3)
    res = {
        "model": a.model, "draft": draft, "dataset": a.dataset, "dtype": a.dtype, "accept": a.accept,
        "threads": a.threads, "prompts": a.prompts, "new_tokens": a.new_tokens, "context": a.context,
        "repeats": a.repeats,
        "round_cost": {"ratio_k_over_1": {k: round(cost.ratio(k), 3) for k in cost.sizes},
                       "target_1_ms": round(cost.target(1), 3), "measured_s": round(measured_s, 2)},
        "methods": med, "all_runs": runs, "best_fixed": best_fixed,
        "auto_vs_best_fixed": round(med[best_fixed]["ms_per_token"] / med[a.auto]["ms_per_token"], 3),
        "auto_vs_vanilla": med[a.auto]["speedup_vs_vanilla"],
        "machine": machine_info(),
        "command": " ".join(sys.argv),
    }  # fmt: skip
    emit(res, a.out)


def emit(res: dict, out: str | None) -> None:
    """Print a benchmark's JSON and write it to ``out`` too (when given)."""
    text = json.dumps(res, indent=1)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")


if __name__ == "__main__":
    main()
