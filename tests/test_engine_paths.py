"""Engine paths the untrained draft never reaches: deep acceptance, a forced exit in the middle of a
round, long generations (KV cache drift), and the bad-input errors around targets and tokenizers."""

from __future__ import annotations

import random

import pytest
import torch
from _oracles import GreedyOracleProposer
from transformers import AutoTokenizer

from specexit.cli import main as cli_main
from specexit.draft import Eagle3Draft, init_draft
from specexit.engine import SpecExitGenerator
from specexit.errors import CheckpointError, TokenizerError
from specexit.exit_policy import ExitConfig
from specexit.proposer import TreeConfig
from specexit.target import TargetModel, compact_cache, crop_cache
from specexit.tiny import make_tiny
from specexit.tree import DraftTree, verification_inputs

PROMPTS = ["What is 12 + 7?", "Wait, so the total", "Add 3 and 4."]


def _oracle_factory(target, holder: dict, **kw):
    """``holder["prompt"]``: the prompt ids; ``holder["reference"]`` (optional): prompt + greedy output."""

    def factory(draft, tree_cfg, sampling):
        ref = holder.get("reference")
        return GreedyOracleProposer(target, holder["prompt"], seed=len(holder["prompt"]), reference=ref, **kw)

    return factory


def _with_exact_oracle(gen: SpecExitGenerator, holder: dict) -> SpecExitGenerator:
    """The same generator, drafting with an oracle that always proposes the true continuation."""
    factory = _oracle_factory(gen.target, holder, error_rate=0.0)
    return SpecExitGenerator(gen.target, gen.tokenizer, gen.draft, proposer_factory=factory)


@pytest.fixture(scope="module", params=["llama", "qwen2", "qwen3"])
def arch(request, tmp_path_factory):
    path = make_tiny(request.param, tmp_path_factory.mktemp(request.param))
    return TargetModel.from_pretrained(path), AutoTokenizer.from_pretrained(path), path


def test_deep_acceptance_greedy_equals_vanilla(arch):
    """Rounds that accept up to 6 tokens (with decoy siblings before the true child) still give exactly
    the plain greedy output: KV compaction keeps the right positions, multi-token commits line up."""
    target, tok, _ = arch
    holder: dict = {}
    gen = SpecExitGenerator(target, tok, init_draft(target), proposer_factory=_oracle_factory(target, holder))
    for prompt, n in zip(PROMPTS, (400, 97, 251), strict=True):
        ids = holder["prompt"] = gen.encode_prompt(prompt)
        ref = gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=n)
        out = gen.generate(input_ids=ids, mode="spec", max_new_tokens=n)
        assert out.token_ids == ref.token_ids
        assert out.mean_accept_length > 3.0, out.accept_lengths
        assert max(out.accept_lengths) == 7  # depth 6 fully accepted + bonus


# --- a target that writes paragraphs (fixture ``paragraph_gen`` in conftest) ------------------------
@pytest.mark.parametrize("readout", ["round", "boundary"])
@pytest.mark.parametrize("oracle", [False, True], ids=["draft", "oracle"])
def test_forced_exit_right_after_the_boundary(paragraph_gen, oracle, readout):
    """With signals that pass, SpecExit keeps the tokens up to and including the first eligible
    paragraph break, forces </think> next, drops the rest of that round, and lets the target go on
    from there: the output equals plain decoding of that forced prefix."""
    gen, para = paragraph_gen
    holder: dict = {}
    if oracle:
        gen = _with_exact_oracle(gen, holder)
    ids = holder["prompt"] = gen.encode_prompt(PROMPTS[0])
    n, min_think = 120, 30
    ref = gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=n).token_ids
    cut = next(i for i, t in enumerate(ref) if t == para and i + 1 >= min_think) + 1
    # the untrained draft's signal rows are zero: confidence = progress = sigmoid(0) = 0.5, remain = 1
    cfg = ExitConfig(thresholds={"confidence": 0.4, "remain": 5.0}, min_thinking_tokens=min_think, readout=readout)
    out = gen.generate(input_ids=ids, mode="specexit", max_new_tokens=n, exit_config=cfg)
    rest = gen.generate(input_ids=ids + ref[:cut] + [gen.think_end_id], mode="vanilla", max_new_tokens=n - cut - 1)
    assert out.token_ids == [*ref[:cut], gen.think_end_id, *rest.token_ids]
    assert out.exited_early and out.thinking_tokens == cut
    assert out.exit["thinking_tokens"] == cut and out.exit["new_tokens"] == cut
    assert out.exit["boundary"] == "paragraph" and out.exit["smoothed"]["confidence"] == pytest.approx(0.5)
    assert out.reasoning == gen.tokenizer.decode(ref[:cut], skip_special_tokens=True).strip()
    # spec mode with the same thresholds never exits and stays equal to vanilla
    spec = gen.generate(input_ids=ids, mode="spec", max_new_tokens=n, exit_config=cfg)
    assert spec.token_ids == ref and not spec.exited_early
    if oracle and readout == "round":  # the exit round had accepted tokens past the boundary: dropped
        r = out.exit["round"]  # policy round 1 is the prefill token; round r is accept_lengths[r - 2]
        before = 1 + sum(out.accept_lengths[: r - 2])
        assert before + out.accept_lengths[r - 2] > cut


def test_no_exit_without_room_for_the_marker(paragraph_gen):
    """max_new_tokens ends exactly at the boundary: there is no room for </think>, so no exit is
    claimed and the output is plain decoding cut at the budget."""
    gen, para = paragraph_gen
    ids = gen.encode_prompt(PROMPTS[0])
    ref = gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=120).token_ids
    first = ref.index(para) + 1
    cfg = ExitConfig(thresholds={"confidence": 0.4})
    out = gen.generate(input_ids=ids, mode="specexit", max_new_tokens=first, exit_config=cfg)
    assert out.token_ids == ref[:first] and not out.exited_early


# --- KV cache drift -----------------------------------------------------------------------------
@torch.inference_mode()
def test_kv_cache_has_no_drift_after_thousands_of_tokens(arch):
    """~3000 positions built the way the engine builds them (tree verification, compaction to a random
    accepted path, occasional crop as after a forced exit): the cached logits at the end equal a fresh
    full forward over the same sequence."""
    target, _, _ = arch
    rng = random.Random(0)
    vocab = target.vocab_size
    seq = [rng.randrange(vocab) for _ in range(20)]
    cache = target.new_cache()
    target.forward(torch.tensor([seq[:-1]]), cache)
    pending = seq[-1:]
    while len(seq) < 3000:
        parents: list[int] = []
        for i in range(rng.randint(1, 12)):
            parents.append(rng.randint(-1, i - 1))
        depths = [1 if p == -1 else 0 for p in parents]
        for i, p in enumerate(parents):
            if p != -1:
                depths[i] = depths[p] + 1
        tree = DraftTree([rng.randrange(vocab) for _ in parents], parents, depths)
        past = cache.get_seq_length()
        ids, pos, mask = verification_inputs(pending, tree, past, target.dtype)
        target.forward(ids, cache, pos, mask)
        accepted = tree.path_to(rng.randrange(len(tree))) if rng.random() < 0.8 else []
        compact_cache(cache, past + len(pending), accepted)
        emitted = [tree.tokens[i] for i in accepted] + [rng.randrange(vocab)]
        if rng.random() < 0.15:  # forced exit: keep some of the round, then the marker (as the engine)
            emitted = [*emitted[: rng.randint(0, len(emitted))], rng.randrange(vocab)]
        local = pending + emitted
        known = min(len(pending) + len(accepted), len(local) - 1)
        crop_cache(cache, past + known)
        seq += emitted
        pending = local[known:]
        assert cache.get_seq_length() + len(pending) == len(seq)
    cached, _ = target.forward(torch.tensor([pending]), cache)
    fresh = target.model(input_ids=torch.tensor([seq])).logits[0, -len(pending) :].float()
    assert len(seq) >= 3000
    torch.testing.assert_close(cached, fresh, atol=2e-4, rtol=1e-4)


def test_long_speculative_generation_equals_vanilla(arch):
    """Up to 2000 greedy tokens with deep acceptance: identical to plain decoding."""
    target, tok, _ = arch
    holder: dict = {}
    gen = SpecExitGenerator(target, tok, init_draft(target), proposer_factory=_oracle_factory(target, holder))
    ids = holder["prompt"] = gen.encode_prompt(PROMPTS[1])
    ref = gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=2000)
    holder["reference"] = ids + ref.token_ids
    out = gen.generate(input_ids=ids, mode="spec", max_new_tokens=2000)
    assert ref.new_tokens >= 1000  # (a random model may write its stop token after a while)
    assert out.token_ids == ref.token_ids and out.finish_reason == ref.finish_reason


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw,match",
    [
        ({"hidden": 32}, r"hidden size 32 .* target has hidden size 64"),
        ({"layers": 8}, r"trained on target layers \[1, 3, 4\] but this target \(4 layers\) exposes"),
        ({"vocab_size": 600}, r"target vocabulary of \d+ tokens .* but the target has \d+"),
    ],
)
def test_draft_built_for_another_target(arch, tmp_path, kw, match):
    target, _, _ = arch
    other = TargetModel.from_pretrained(make_tiny("qwen3", tmp_path / "other", **kw))
    init_draft(other).save_pretrained(tmp_path / "draft")
    with pytest.raises(CheckpointError, match=match):
        Eagle3Draft.from_pretrained(tmp_path / "draft", target=target)


def test_tokenizer_lacking_the_think_end_marker(arch, capsys):
    target, tok, path = arch
    gen = SpecExitGenerator(target, tok, init_draft(target), think_end="</reasoning>")
    with pytest.raises(TokenizerError, match=r"no '</reasoning>' token"):
        gen.generate("hi", mode="specexit", max_new_tokens=4)
    assert gen.generate("hi", mode="spec", max_new_tokens=4).new_tokens == 4  # spec needs no marker
    rc = cli_main(["generate", "--target", str(path), "--prompt", "hi", "--mode", "vanilla", "--think-end", "</r>"])
    assert rc == 0
    rc = cli_main(["generate", "--target", str(path), "--prompt", "hi", "--mode", "specexit", "--max-new-tokens", "4"])
    assert rc == 2 and "needs a draft model" in capsys.readouterr().err.splitlines()[-1]


def test_cli_specexit_without_marker_is_a_clear_error(arch, tmp_path, capsys):
    target, _, path = arch
    init_draft(target).save_pretrained(tmp_path / "draft")
    argv = ["generate", "--target", str(path), "--draft", str(tmp_path / "draft"), "--prompt", "hi"]
    assert cli_main([*argv, "--think-end", "</reasoning>", "--max-new-tokens", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("specexit: error:") and "'</reasoning>'" in err and "Traceback" not in err


def test_tree_config_and_budget_errors(arch):
    target, tok, _ = arch
    gen = SpecExitGenerator(target, tok, init_draft(target))
    for bad in (0, -5, 2.5):
        with pytest.raises(Exception, match="max_new_tokens must be a positive integer"):
            gen.generate("hi", mode="spec", max_new_tokens=bad)
    with pytest.raises(Exception, match="tree depth must be >= 1"):
        TreeConfig(depth=0)


@pytest.mark.parametrize("mode", ["spec", "specexit"])
def test_thinking_budget_forces_the_marker_after_n_thinking_tokens(paragraph_gen, mode):
    """budget:N (the serving-engine baseline): exactly N thinking tokens, then </think>, then the target
    goes on from there; it needs no signals and no boundary."""
    gen, _ = paragraph_gen
    ids = gen.encode_prompt(PROMPTS[1])
    n, budget = 80, 23
    ref = gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=n).token_ids
    # thresholds that never pass: only the budget can end thinking
    cfg = ExitConfig(thresholds={"confidence": 0.99}, thinking_budget=budget)
    out = gen.generate(input_ids=ids, mode=mode, max_new_tokens=n, exit_config=cfg)
    rest = gen.generate(
        input_ids=[*ids, *ref[:budget], gen.think_end_id], mode="vanilla", max_new_tokens=n - budget - 1
    )
    assert out.token_ids == [*ref[:budget], gen.think_end_id, *rest.token_ids]
    assert out.exited_early and out.exit["boundary"] == "budget" and out.thinking_tokens == budget
    with pytest.raises(Exception, match="thinking budget is applied by the speculative loop"):
        gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=n, exit_config=cfg)


@pytest.mark.parametrize("oracle", [False, True], ids=["draft", "oracle"])
def test_probe_baseline_leaves_no_trace_and_scores_the_right_prefix(paragraph_gen, oracle):
    """DEER-style probing: a probe that never passes leaves the output exactly plain greedy (the KV
    cache is restored); one that always passes exits at the first boundary, and its score is the
    trial answer's mean probability computed from that prefix alone (nothing later in the round leaks)."""
    from specexit.probe import ProbeConfig

    gen, para = paragraph_gen
    holder: dict = {}
    if oracle:
        gen = _with_exact_oracle(gen, holder)
    ids = holder["prompt"] = gen.encode_prompt(PROMPTS[0])
    n = 100
    ref = gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=n).token_ids
    cfg = ExitConfig(min_thinking_tokens=30)
    never = gen.generate(input_ids=ids, mode="spec", max_new_tokens=n, exit_config=cfg, probe=ProbeConfig(threshold=2))
    assert never.token_ids == ref and never.probe_calls >= 2 and not never.exited_early
    probe = ProbeConfig(threshold=-1.0, max_tokens=6)
    out = gen.generate(input_ids=ids, mode="spec", max_new_tokens=n, exit_config=cfg, probe=probe)
    cut = next(i for i, t in enumerate(ref) if t == para and i + 1 >= 30) + 1
    assert out.token_ids[: cut + 1] == [*ref[:cut], gen.think_end_id] and out.probe_calls == 1
    # the same trial answer, computed from scratch on the prefix alone
    feed = [*ids, *ref[:cut], gen.think_end_id, *gen.tokenizer.encode(probe.answer_prefix, add_special_tokens=False)]
    probs = []
    for _ in range(probe.max_tokens):
        with torch.no_grad():
            p = torch.softmax(gen.target.model(input_ids=torch.tensor([feed])).logits[0, -1].float(), -1)
        tok = int(p.argmax())
        probs.append(float(p[tok]))
        feed.append(tok)
        if tok in gen.stop_ids or "}" in gen.tokenizer.decode(feed[-len(probs) :]):
            break
    assert out.exit["raw"]["probe"] == pytest.approx(sum(probs) / len(probs), abs=1e-5)
