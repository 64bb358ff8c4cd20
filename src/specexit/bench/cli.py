"""``specexit bench``: accuracy, tokens and end-to-end latency per question, every method, one run."""

from __future__ import annotations

import json
from pathlib import Path

from ..answer_trigger import add_answer_trigger_args, answer_trigger_kwargs
from ..cli_options import (
    add_backend_args,
    add_dtype_args,
    add_think_args,
    add_tree_arg,
    check_at_least,
    check_dtypes,
    check_out_dir,
    parse_tree,
    sampling_from_args,
)

DEFAULT_METHODS = "vanilla,spec,specexit,budget:256,probe,nothink"


def register(sub) -> None:
    b = sub.add_parser("bench", help="benchmark methods side by side (accuracy, tokens, latency, with CIs)")
    b.add_argument("--target", required=True, help="HF folder of the target")
    b.add_argument("--draft", default=None, help="SpecExit draft folder (needed by every method but vanilla)")
    b.add_argument("--dataset", required=True, help="file.jsonl | testbed[:N[:SEED]] | gsm8k100 | "
                   "reasoning-gym:TASK[:N[:SEED]] | champ")  # fmt: skip
    b.add_argument("--limit", type=int, default=None, help="first N problems")
    b.add_argument("--methods", default=None, help="comma-separated; knobs in brackets, e.g. "
                   "specexit[confidence=0.7,alpha=0.2]; see docs/benchmarks.md (default: " + DEFAULT_METHODS +
                   "; with --report-only: the methods of the run in --out)")  # fmt: skip
    b.add_argument("--seeds", default="0", help="comma-separated sampling seeds (one run each)")
    b.add_argument("--temperature", type=float, default=0.0)
    b.add_argument("--top-p", type=float, default=1.0)
    b.add_argument("--max-new-tokens", type=int, default=1024)
    add_tree_arg(b)
    add_dtype_args(b)
    add_think_args(b)
    add_answer_trigger_args(b)
    b.add_argument("--system", default=None)
    b.add_argument("--out", required=True, help="results folder (a rerun resumes)")
    b.add_argument(
        "--shard",
        default="0/1",
        help="K/N: run every N-th job from the K-th (run N processes, one "
        "per core, on the same --out; a final run without --shard writes the report)",
    )
    b.add_argument("--report-only", action="store_true",
                   help="only write summary and plots from the results already in --out")  # fmt: skip
    b.add_argument("--no-plots", action="store_true")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument("--batch-size", type=int, default=1,
                   help="vLLM backend: questions of one method per LLM.generate call")  # fmt: skip
    add_backend_args(b)


def run(a) -> int:
    from ..engine import SpecExitGenerator
    from ..errors import ConfigError
    from ..exit_policy import ExitConfig
    from ..jsonl import DataError
    from ..policy_file import load_policy
    from ..target import check_target_dir
    from .datasets import load_dataset
    from .methods import parse_methods, split_methods
    from .report import to_markdown, write_report
    from .runner import BenchConfig, run_bench

    # every argument is checked before anything loads or is written: a refused run leaves no --out behind
    try:
        seeds = tuple(int(s) for s in a.seeds.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {a.seeds!r}") from None
    tree = parse_tree(a.tree)
    if not seeds:
        raise ConfigError("--seeds is empty")
    try:
        shard = tuple(int(x) for x in a.shard.split("/"))
        assert len(shard) == 2 and 0 <= shard[0] < shard[1]
    except (ValueError, AssertionError):
        raise ConfigError(f"--shard must be K/N with 0 <= K < N, got {a.shard!r}") from None
    check_at_least(a, 1, "limit", "max_new_tokens", "num_speculative_tokens", "max_model_len")
    check_out_dir(a.out)
    if a.report_only and not Path(a.out).is_dir():
        raise ConfigError(f"--report-only needs the folder of a bench run in --out: {a.out} not found")
    if a.methods is None:
        # the draft's calibrated rule joins the default methods where the draft has one
        calibrated = a.draft is not None and load_policy(a.draft) is not None
        a.methods = _methods_of_run(a.out) if a.report_only else DEFAULT_METHODS + ",calibrated" * calibrated
    if a.report_only:  # no model: the summary of what --out holds, for these methods
        rows = write_report(a.out, split_methods(a.methods), make_plots=not a.no_plots)
        print(to_markdown(rows))
        return 0
    methods = parse_methods(a.methods, ExitConfig(think_start=a.think_start, think_end=a.think_end), a.draft)
    if a.draft is None and any(m.mode != "vanilla" for m in methods):
        raise ConfigError("every method but vanilla needs a draft: pass --draft DIR (or --methods vanilla)")
    if a.temperature == 0 and len(seeds) > 1:
        raise ConfigError("several --seeds only make sense with --temperature > 0 (greedy runs are identical)")
    if a.batch_size < 1 or (a.batch_size > 1 and a.backend != "vllm"):
        raise ConfigError("--batch-size must be >= 1, and > 1 only with --backend vllm")
    if a.backend == "vllm" and any(m.probe is not None for m in methods):
        raise ConfigError("the probe baseline runs only on the torch backend (it needs trial answers mid-step)")
    if a.backend == "vllm" and a.answer_trigger is not None:
        raise ConfigError("--answer-trigger runs only on the torch backend (the vLLM plugin forces one token)")
    check_dtypes(a)
    sampling_from_args(a)
    problems = load_dataset(a.dataset, a.limit)
    if not problems:
        raise DataError(f"--dataset {a.dataset}: the dataset is empty (no problems)")
    check_target_dir(a.target)
    if a.backend == "vllm":
        from ..vllm_plugin.backend import VLLMBackend

        gen = VLLMBackend(
            a.target, a.draft, num_speculative_tokens=a.num_speculative_tokens, dtype=a.dtype,
            max_model_len=a.max_model_len, max_num_seqs=max(a.batch_size, 1),
            think_start=a.think_start, think_end=a.think_end,
        )  # fmt: skip
    else:
        gen = SpecExitGenerator.from_pretrained(
            a.target, a.draft, dtype=a.dtype, draft_dtype=a.draft_dtype, think_start=a.think_start,
            think_end=a.think_end, **answer_trigger_kwargs(a),
        )  # fmt: skip
    signals = gen.describe().get("draft_signals") or []
    for m in methods:  # the exit rule against the loaded draft's signals, before --out is made
        if m.mode == "specexit":
            try:
                m.exit_config.validate(signals, enabled=True)
            except ConfigError as e:
                raise ConfigError(f"method {m.label!r}: {e}") from None
    cfg = BenchConfig(
        seeds=seeds,
        temperature=a.temperature,
        top_p=a.top_p,
        max_new_tokens=a.max_new_tokens,
        tree=tree,
        system=a.system,
    )
    run_info = {"dataset": a.dataset, "limit": a.limit, "target": a.target, "draft": a.draft}  # for run.json
    if getattr(a, "dtype_choice", None):  # --dtype auto: what it chose on this machine, and why
        run_info["dtype_choice"] = a.dtype_choice
    run_bench(gen, problems, methods, cfg, a.out, progress=not a.no_progress, shard=shard, batch_size=a.batch_size,
              run_info=run_info)  # fmt: skip
    if shard[1] > 1:
        print(f"shard {a.shard} done; when every shard is, rerun without --shard to write the report")
        return 0
    rows = write_report(a.out, [m.label for m in methods], make_plots=not a.no_plots)
    print(to_markdown(rows))
    print(f"results, summary.json, summary.md and plots in {Path(a.out)}")
    return 0


def _methods_of_run(out: str) -> str:
    """The --methods a run in ``out`` was made with (its run.json), for a report of all of them."""
    from ..errors import ConfigError

    run = Path(out) / "run.json"
    try:
        return ",".join(json.loads(run.read_text())["methods"])
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"--report-only without --methods needs {run} from a bench run ({e})") from None
