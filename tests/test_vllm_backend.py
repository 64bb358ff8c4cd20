"""The vLLM backend end to end, on the shipped testbed model and draft (needs vLLM: skipped in the main
venv; run by the test command's vLLM stage, `.ci/vllm-tests`, which builds the vLLM venv of docs/vllm.md):

    .ci/vllm-tests            # or: OMP_NUM_THREADS=1 VENV/bin/python -m pytest tests/test_vllm_backend.py -v

Checks: with exit off, vLLM + the SpecExit plugin is lossless (greedy EAGLE-3 output equals the target
alone in vLLM, and equals this package's PyTorch engine); in one mixed batch only the requests whose
signals pass exit, each right after a paragraph boundary with the think-end token, and the others are
untouched; a thinking budget ends thinking at exactly its count; and the exit decisions equal the
PyTorch engine's under the boundary read-out (the same signals, read at the same tokens).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("SPECEXIT_REQUIRE_VLLM") == "1":  # the CI stage (.ci/vllm-tests): a missing vLLM is a failure
    import vllm  # noqa: F401
else:
    pytest.importorskip("vllm", reason="the vLLM backend tests need vLLM (see docs/vllm.md)")

from specexit.backend import GenerationRequest
from specexit.engine import SpecExitGenerator
from specexit.exit_policy import ExitConfig
from specexit.testbed.problems import make_problems
from specexit.vllm_plugin.backend import VLLMBackend

ASSETS = Path(__file__).resolve().parents[1] / "src" / "specexit" / "assets"
TARGET, DRAFT = ASSETS / "testbed", ASSETS / "testbed-draft"
N = 6
MAX_NEW = 600
EXIT = ExitConfig(thresholds={"confidence": 0.5}, readout="boundary", smoothing="none")
NEVER = ExitConfig(thresholds={"confidence": 2.0}, readout="boundary", smoothing="none")  # sigmoid < 1


@pytest.fixture(scope="module")
def backend():
    b = VLLMBackend(TARGET, DRAFT, num_speculative_tokens=5, max_model_len=1024, max_num_seqs=16)
    yield b
    b.close()


@pytest.fixture(scope="module")
def torch_gen():
    return SpecExitGenerator.from_pretrained(TARGET, DRAFT)


@pytest.fixture(scope="module")
def prompts(backend):
    return [backend.encode_prompt(p.question) for p in make_problems(N, seed=0, split="test")]


@pytest.fixture(scope="module")
def vanilla(backend, prompts):
    out = backend.generate_batch([GenerationRequest(ids, "vanilla", MAX_NEW) for ids in prompts])
    return [r.token_ids for r in out]


def test_spec_is_lossless_and_equals_torch_engine(backend, torch_gen, prompts, vanilla):
    spec = backend.generate_batch([GenerationRequest(ids, "spec", MAX_NEW) for ids in prompts])
    assert [r.token_ids for r in spec] == vanilla
    assert all(r.mean_accept_length > 1.5 for r in spec)  # the trained draft is accepted
    for ids, v in zip(prompts, vanilla, strict=True):
        assert torch_gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=MAX_NEW).token_ids == v


def test_mixed_batch_exits_only_where_signals_pass(backend, prompts, vanilla):
    end = backend.think_end_id
    nl2 = backend.tokenizer.convert_tokens_to_ids(backend.tokenizer.tokenize("\n\n"))
    kinds = ["spec", "exit", "never", "exit", "budget", "spec"]
    reqs = []
    for ids, kind in zip(prompts, kinds, strict=True):
        if kind == "spec":
            reqs.append(GenerationRequest(ids, "spec", MAX_NEW))
        elif kind == "budget":
            budget = ExitConfig(thinking_budget=24, thresholds={})
            reqs.append(GenerationRequest(ids, "spec", MAX_NEW, exit_config=budget))
        else:
            reqs.append(GenerationRequest(ids, "specexit", MAX_NEW, exit_config=EXIT if kind == "exit" else NEVER))
    out = backend.generate_batch(reqs)
    for r, kind, ref in zip(out, kinds, vanilla, strict=True):
        if kind in ("spec", "never"):
            assert r.token_ids == ref and not r.exited_early
            continue
        assert r.exited_early, kind
        cut = r.token_ids.index(end)
        assert r.token_ids[:cut] == ref[:cut]  # the same text up to the exit, then think-end
        assert ref[cut] != end  # ...where the target alone kept thinking
        if kind == "budget":
            assert r.thinking_tokens == 24 and cut == 24
        else:
            assert r.token_ids[cut - 1] == nl2[0] and len(nl2) == 1  # right after a paragraph break
            assert r.exit["boundary"] == "paragraph" and r.exit["thinking_tokens"] == cut
            assert r.thinking_tokens < len(ref)


def test_exit_decisions_equal_torch_engine(backend, torch_gen, prompts):
    out = backend.generate_batch([GenerationRequest(ids, "specexit", MAX_NEW, exit_config=EXIT) for ids in prompts])
    for ids, r in zip(prompts, out, strict=True):
        t = torch_gen.generate(input_ids=ids, mode="specexit", max_new_tokens=MAX_NEW, exit_config=EXIT)
        assert r.exited_early == t.exited_early
        assert r.token_ids == t.token_ids
        if r.exit:
            assert abs(r.exit["raw"]["confidence"] - t.exit["raw"]["confidence"]) < 1e-4


def test_boundary_budget_holds_and_equals_torch_engine(backend, torch_gen, prompts, vanilla):
    """The budget that ends at a boundary, under vLLM's speculative steps (which accept past N): the same
    cut as the torch engine, at most N thinking tokens, never mid-word."""
    tok = backend.tokenizer
    for n in (20, 45):
        cfg = ExitConfig(thinking_budget=n, budget_at="boundary", thresholds={})
        out = backend.generate_batch([GenerationRequest(ids, "spec", MAX_NEW, exit_config=cfg) for ids in prompts])
        for ids, r, ref in zip(prompts, out, vanilla, strict=True):
            t = torch_gen.generate(input_ids=ids, mode="spec", max_new_tokens=MAX_NEW, exit_config=cfg)
            assert r.token_ids == t.token_ids and r.thinking_tokens == t.thinking_tokens <= n
            if r.exited_early:
                cut = r.token_ids.index(backend.think_end_id)
                assert r.token_ids[:cut] == ref[:cut] and r.exit["boundary"].startswith("budget")
                nxt = tok.decode([ref[cut]])
                assert nxt[:1].isspace() or tok.decode(ref[:cut]).endswith("\n\n"), (n, nxt)


def test_a_rule_confirmed_by_trial_answers_is_refused_with_a_clear_error(backend, prompts):
    """Agreement rules write trial answers mid-step, which only the torch engine can: vLLM says so."""
    from specexit.errors import ConfigError

    cfg = ExitConfig(thresholds={"confidence": 0.5}, readout="boundary", smoothing="none", agree=2)
    with pytest.raises(ConfigError, match="torch backend"):
        backend.generate_batch([GenerationRequest(prompts[0], "specexit", MAX_NEW, exit_config=cfg)])
