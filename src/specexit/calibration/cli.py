"""``specexit calibrate``: the user sets the accuracy risk, this picks the exit rule (docs/calibration.md).

Stages in ``--out`` (each resumes): ``data/`` (traces + gold-referenced label probes, when ``--data`` is a
prompt file), ``signals.jsonl`` (the draft's signals at every boundary), then the choice and its
certificate: ``calibration.json`` (every candidate, the p-values) and ``exit_policy.json`` (the rule).
``--install`` also puts ``exit_policy.json`` beside the draft's weights, where ``generate``, ``bench``,
``serve``, ``demo`` and the vLLM backend pick it up by default.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from ..cli_options import add_think_args, check_at_least, check_dtypes
from ..errors import ConfigError

CITATION = ("Learn-then-Test (Angelopoulos et al. 2021, arXiv 2110.01052) with fixed-sequence testing; "
            "p-values: betting (Waudby-Smith & Ramdas 2020, arXiv 2010.09686) for the net loss, exact "
            "binomial for the harm loss, the smaller of the two doubled (Bonferroni) for net-exact")  # fmt: skip


def register(subparsers) -> argparse.ArgumentParser:
    c = subparsers.add_parser("calibrate", help="choose the exit rule that keeps the accuracy loss <= --risk",
                              description=__doc__.splitlines()[0])  # fmt: skip
    c.add_argument("--target", required=True)
    c.add_argument("--draft", required=True)
    c.add_argument("--data", required=True, help="a prompt file (JSONL with answers) or a pipeline folder "
                   "with traces.jsonl + labels.jsonl (gold-referenced)")  # fmt: skip
    c.add_argument("--risk", type=float, required=True,
                   help="EPS: accuracy loss allowed against full thinking, a fraction (0.01 = 1 point)")  # fmt: skip
    c.add_argument("--delta", type=float, default=0.1, help="the guarantee holds with probability >= 1 - delta")
    c.add_argument("--loss", choices=["net", "harm", "net-exact"], default="net",
                   help="net: accuracy(full) - accuracy(exit), by a betting test; harm: share of problems turned "
                   "wrong, by an exact binomial test; net-exact: the net loss by the better of the two tests "
                   "(Bonferroni: each at delta/2), for rules that change (almost) nothing")  # fmt: skip
    c.add_argument("--out", required=True, help="folder for data/, signals.jsonl, calibration.json, exit_policy.json")
    c.add_argument("--install", action="store_true", help="also write exit_policy.json into the --draft folder")
    c.add_argument("--select-fraction", type=float, default=0.3, help="share of problems that choose the family")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--agree", default="0",
                   help="agreement counts to try, comma-separated (e.g. 0,2): K > 0 adds rules whose passing "
                   "signals only call for a trial answer, exiting once one answer came up K times (torch "
                   "backend only); 0: signal rules")  # fmt: skip
    c.add_argument("--temperature", type=float, default=None,
                   help="the traces' temperature: sampled at it (a prompt file; default 0.6) or, for a folder "
                   "whose pipeline.json does not say, the one they were sampled at")  # fmt: skip
    c.add_argument("--top-p", type=float, default=None, help="likewise (default 1.0)")
    c.add_argument("--max-new-tokens", type=int, default=1024)
    c.add_argument("--probe-tokens", type=int, default=24,
                   help="token cap of the forced answers: those labelled here, or the --probe-tokens the folder's "
                   "labels used; rules with --agree write trial answers of this length")  # fmt: skip
    c.add_argument("--batch-size", type=int, default=8)
    c.add_argument("--dtype", default="float32")
    c.add_argument("--no-progress", action="store_true")
    add_think_args(c)
    return c


def data_sha256(folder: Path) -> str:
    h = hashlib.sha256()
    for name in ("traces.jsonl", "labels.jsonl"):
        h.update((folder / name).read_bytes())
    return h.hexdigest()


def folder_sampling(folder: Path, a) -> dict:
    """How a pipeline folder's traces were sampled: its pipeline.json (the traces stage records it), else
    --temperature / --top-p; the policy names the temperature its guarantee is about."""
    try:
        runs = json.loads((folder / "pipeline.json").read_text())["stages"]["traces"]
        recorded = next((r["sampling"] for r in reversed(runs) if "sampling" in r), None)
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    given = {"temperature": a.temperature, "top_p": a.top_p}
    if recorded is not None:
        clash = [k for k, v in given.items() if v is not None and v != recorded.get(k)]
        if clash:
            flag = "--" + clash[0].replace("_", "-")
            raise ConfigError(f"--data {folder}: its traces were sampled with {recorded}; {flag} says otherwise")
        return {k: recorded.get(k) for k in given}
    if a.temperature is None:
        raise ConfigError(f"--data {folder}: pipeline.json does not say how the traces were sampled; give "
                          "--temperature (and --top-p) they were sampled at")  # fmt: skip
    return {"temperature": a.temperature, "top_p": 1.0 if a.top_p is None else a.top_p}


def _check(a) -> None:
    if not 0 < a.risk < 1:
        raise ConfigError(f"--risk must be a fraction in (0, 1) (0.01 = 1 point), got {a.risk}")
    if not 0 < a.delta < 1:
        raise ConfigError(f"--delta must be in (0, 1), got {a.delta}")
    if not 0 < a.select_fraction < 1:
        raise ConfigError(f"--select-fraction must be in (0, 1), got {a.select_fraction}")
    if (a.temperature is not None and a.temperature < 0) or (a.top_p is not None and not 0 < a.top_p <= 1):
        raise ConfigError("--temperature must be >= 0 and --top-p in (0, 1]")
    check_at_least(a, 1, "max_new_tokens", "batch_size", "probe_tokens")
    check_at_least(a, 0, "seed")
    try:
        a.agree = tuple(sorted({int(x) for x in str(a.agree).split(",") if x.strip()}))
    except ValueError:
        raise ConfigError(f"--agree must be comma-separated integers >= 0, got {a.agree!r}") from None
    if not a.agree or min(a.agree) < 0:
        raise ConfigError(f"--agree must be comma-separated integers >= 0, got {a.agree!r}")
    data = Path(a.data)
    if not data.exists():
        raise ConfigError(f"--data {data}: no such file or folder")
    if data.is_dir() and not all((data / n).is_file() for n in ("traces.jsonl", "labels.jsonl")):
        raise ConfigError(f"--data {data}: a folder needs traces.jsonl and labels.jsonl (train traces + labels)")
    if Path(a.out).is_file():
        raise ConfigError(f"--out {a.out}: is a file, not a folder")


def run(a) -> int:
    from ..draft import check_draft_dir
    from ..engine import SpecExitGenerator
    from ..policy_file import CalibratedPolicy, policy_path, rule_of, write_policy
    from ..target import check_target_dir
    from .choose import calibrate
    from .record import load_signals, record_signals

    _check(a)
    check_dtypes(a)
    check_target_dir(a.target)
    check_draft_dir(a.draft)
    folder, prompts = Path(a.data), not Path(a.data).is_dir()
    if prompts:  # the traces are sampled here
        sampling = {"temperature": 0.6 if a.temperature is None else a.temperature,
                    "top_p": 1.0 if a.top_p is None else a.top_p}  # fmt: skip
    else:  # before anything loads or is written: a refused run leaves no --out
        sampling = folder_sampling(folder, a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    gen = SpecExitGenerator.from_pretrained(a.target, a.draft, dtype=a.dtype, think_start=a.think_start,
                                            think_end=a.think_end)  # fmt: skip
    if prompts:
        from ..train.labels import LabelConfig
        from ..train.pipeline import stage_labels, stage_traces
        from ..train.traces import TraceConfig

        folder = out / "data"
        folder.mkdir(exist_ok=True)
        tcfg = TraceConfig(max_new_tokens=a.max_new_tokens, samples=1, seed=a.seed, batch_size=a.batch_size,
                           **sampling)  # fmt: skip
        stage_traces(gen, a.data, folder, tcfg, progress=not a.no_progress)
        lcfg = LabelConfig(reference="gold", probe_tokens=a.probe_tokens)
        stage_labels(gen, folder, lcfg, progress=not a.no_progress)
    rec = record_signals(gen, folder, out / "signals.jsonl", progress=not a.no_progress)
    traces = load_signals(out / "signals.jsonl")
    cal = calibrate(traces, gen.draft.signals, a.risk, a.delta, a.loss, a.select_fraction, a.seed, a.agree,
                    a.probe_tokens)  # fmt: skip
    report = {
        "target": str(a.target), "draft": str(a.draft), "data": str(folder), "data_sha256": data_sha256(folder),
        "signals": rec, "method": CITATION, "family": cal.family.label(), "threshold": cal.threshold,
        "certified": cal.certified, "n_select": cal.n_select, "n_certify": cal.n_certify,
        "selection": cal.selection, "path": cal.path,
    }  # fmt: skip
    (out / "calibration.json").write_text(json.dumps(report, indent=2) + "\n")
    if cal.rule is None:
        policy_path(out).unlink(missing_ok=True)
        print(f"specexit: no exit rule is certified at risk {a.risk} with delta {a.delta} on {cal.n_certify} "
              f"problems (the most cautious one's p-value is {cal.path[0]['pvalue']}); give more calibration "
              f"problems or a larger --risk.  Candidates: {out / 'calibration.json'}")  # fmt: skip
        return 1
    chosen = next(p for p in cal.path if p["confidence"] == cal.threshold)
    policy = CalibratedPolicy(
        rule=rule_of(cal.rule),
        guarantee={**cal.certified, "method": CITATION, "n_select": cal.n_select},
        expected={k: chosen[k] for k in ("thinking_cut", "accuracy_full", "accuracy_exit", "exit_rate")},
        data={"sha256": report["data_sha256"], "traces": len(traces), **sampling, "folder": str(folder)},
    )
    path = write_policy(policy, policy_path(out))
    if a.install:
        write_policy(policy, policy_path(a.draft))
    print(f"rule {cal.family.label()},confidence>{cal.threshold:g}: certified accuracy loss <= {a.risk:g} "
          f"(delta {a.delta:g}, {cal.n_certify} problems), expected cut {100 * chosen['thinking_cut']:.1f}% of "
          f"thinking -> {path}{' (installed in the draft)' if a.install else ''}")  # fmt: skip
    return 0
