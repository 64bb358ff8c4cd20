"""SpecExitGenerator: plain decoding, EAGLE-3 speculative decoding, and SpecExit (spec + early exit).

One round of speculative decoding (batch size 1):
  1. the draft proposes a tree rooted at the last committed token (``pending``),
  2. the target verifies pending tokens + tree in one forward (tree attention mask),
  3. greedy / rejection sampling picks the accepted path and a bonus token,
  4. the KV cache keeps the accepted path only; the exit signals are read from the draft's fusion
     layer over the newly verified positions and handed to the exit policy with the round's tokens,
  5. on exit the round is cut after the boundary and the think-end token is forced next (for a model
     without think tokens: the answer trigger, several tokens; see ``answer_trigger``),
  6. the draft consumes (target feature, next token) pairs of the kept positions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

from .answer_trigger import DEFAULT_ANSWER_MARKERS
from .auto_tree import AutoTreePlanner, PlannerMemory
from .backend import GenerationRequest
from .chat import encode_prompt, stop_token_ids
from .detokenize import IncrementalDetokenizer
from .draft import Eagle3Draft
from .errors import ConfigError, TokenizerError
from .exit_control import CacheRound, ExitController, JudgeFactory
from .exit_policy import ExitConfig
from .probe import AgreementConfig
from .profiling import RoundProfile
from .proposer import DraftProposer, TreeConfig
from .results import MODES, GenerationResult, StreamChunk, build_result
from .round_cost import RoundCost, load_or_measure
from .sampling import SamplingParams, probs_from_logits, sample
from .span import SpanMarkers
from .target import TargetModel, compact_cache, crop_cache, load_tokenizer, resolve_dtype
from .tree import DraftTree, verification_inputs
from .verify import verify_greedy, verify_sampling


class GenerationStream:
    """Iterate for StreamChunks; ``result`` is set once iteration has finished, or once ``close()`` ends
    it early (then with what was generated so far and finish_reason "abort")."""

    def __init__(self, chunks: Iterator[StreamChunk]) -> None:
        self._chunks = chunks
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[StreamChunk]:
        return self._chunks

    def close(self) -> None:
        self._chunks.close()


class SpecExitGenerator:
    def __init__(
        self,
        target: TargetModel,
        tokenizer,
        draft: Eagle3Draft | None = None,
        think_start: str = "<think>",
        think_end: str = "</think>",
        proposer_factory=None,
        answer_trigger: str | None = None,
        answer_markers: tuple[str, ...] = DEFAULT_ANSWER_MARKERS,
    ) -> None:
        """``answer_trigger``: for chat models without think tokens, the text forced to end the
        (implicit) reasoning span; ``answer_markers`` find where the model starts its answer by itself.
        Without it, the span is delimited by the ``think_start`` / ``think_end`` tokens."""
        self.target, self.tokenizer, self.draft = target, tokenizer, draft
        # builds the proposer for one generation: (draft, tree config, sampling) -> DraftProposer-like
        self.proposer_factory = proposer_factory or DraftProposer
        # greedy acceptance: (node logits [1 + n, V], tree) -> Verdict; benchmarks/floor.py substitutes a
        # perfect draft's verdict (--accept forced) so that forcing is exact in any precision
        self.greedy_verifier = verify_greedy
        if draft is not None:
            draft.check_target(target)
        self.think_start, self.think_end = think_start, think_end
        self.answer_trigger, self.answer_markers = answer_trigger, tuple(answer_markers)
        self.markers = SpanMarkers.from_tokenizer(tokenizer, think_start, think_end, answer_trigger, answer_markers)
        self.think_start_id, self.think_end_id = self.markers.think_start_id, self.markers.think_end_id
        # what an exit forces: the think-end token, or the answer trigger's tokens
        self.exit_ids: list[int] = list(self.markers.exit_ids)
        self.stop_ids = self._stop_ids()
        self._round_costs: dict[int, RoundCost] = {}  # per branching factor: what a round costs here
        # what --tree auto learned in the last generation, per tree bounds and sampling kind
        self._planner_memory: dict[tuple, PlannerMemory] = {}
        self._round_cost_override: RoundCost | None = None

    @property
    def implicit(self) -> bool:
        """True for a model without think tokens: the reasoning span is implicit (see answer_trigger)."""
        return self.answer_trigger is not None

    @classmethod
    def from_pretrained(
        cls,
        target_dir: str | Path,
        draft_dir: str | Path | None = None,
        dtype: str = "float32",
        draft_dtype: str | None = None,
        tokenizer_dir: str | Path | None = None,
        **kw,
    ) -> SpecExitGenerator:
        target = TargetModel.from_pretrained(target_dir, dtype=dtype)
        tokenizer = load_tokenizer(tokenizer_dir or target_dir)
        draft = None
        if draft_dir is not None:
            # the draft may run in another precision than the target: it only changes acceptance, never
            # the output (bf16 drafting is ~4x faster on CPUs with AVX512-BF16, see docs/performance.md)
            dd = resolve_dtype(draft_dtype) if draft_dtype else target.dtype
            draft = Eagle3Draft.from_pretrained(draft_dir, target=target, dtype=dd)
        return cls(target, tokenizer, draft, **kw)

    def use_round_cost(self, cost: RoundCost) -> None:
        """Plan ``--tree auto`` with these costs instead of measuring (tests, a known machine): their shape is
        taken as known (scaled as a whole by measured forwards, not corrected size by size)."""
        self._round_cost_override = cost
        self._planner_memory.clear()  # learned against the old costs

    def round_cost(self, branching: int = 8) -> RoundCost:
        """The measured cost of a round's pieces on this machine (cached on disk per model/dtype/CPU)."""
        if self._round_cost_override is not None:
            return self._round_cost_override
        if branching not in self._round_costs:
            self._round_costs[branching], _ = load_or_measure(self.target, self.draft, branching=branching)
        return self._round_costs[branching]

    def _planner(self, tree_cfg: TreeConfig, sampling: SamplingParams) -> AutoTreePlanner | None:
        """The adaptive planner for ``--tree auto``; a custom proposer that is not a DraftProposer (class)
        drafts its own trees."""
        factory = self.proposer_factory
        if not tree_cfg.auto or not (isinstance(factory, type) and issubclass(factory, DraftProposer)):
            return None
        memory = self._planner_memory.get(_memory_key(tree_cfg, sampling))
        return AutoTreePlanner(self.round_cost(tree_cfg.k), tree_cfg.budget, tree_cfg.depth, memory,
                               correct_sizes=self._round_cost_override is None)  # fmt: skip

    def _stop_ids(self) -> set[int]:
        gen_cfg = getattr(self.target.model, "generation_config", None)
        return stop_token_ids(self.tokenizer, getattr(gen_cfg, "eos_token_id", None))

    # ------------------------------------------------------------------------------------------
    def encode_prompt(
        self, prompt: str, chat: bool = True, enable_thinking: bool = True, system: str | None = None
    ) -> list[int]:
        ids = encode_prompt(self.tokenizer, prompt, chat=chat, enable_thinking=enable_thinking, system=system)
        # a model without think tokens skips its reasoning when the prompt already asks for the answer
        return ids + self.exit_ids if self.implicit and not enable_thinking else ids

    # -- the backend protocol (backend.Backend) ----------------------------------------------------
    name = "torch"
    batched = False  # one request at a time

    def prepare(self, mode: str, tree: TreeConfig | None = None) -> None:
        """The models are loaded; with a draft, measure the round costs ``--tree auto`` plans with (once per
        model and machine, then read from the cache), so that no timed generation pays for it: for the
        branching of ``tree`` (the default auto bounds' when none is given); a fixed tree plans nothing."""
        if mode == "vanilla" or self.draft is None or (tree is not None and not tree.auto):
            return
        if tree is None:
            self.round_cost()
        else:
            self.round_cost(tree.k)

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [
            self.generate(
                input_ids=r.input_ids,
                mode=r.mode,
                max_new_tokens=r.max_new_tokens,
                sampling=r.sampling,
                tree=r.tree,
                exit_config=r.exit_config,
                probe=r.probe,
            )
            for r in requests
        ]

    def describe(self) -> dict:
        """Backend facts for run.json; ``models`` gives the target folder and each model's dtype (the draft
        object does not know its folder: the caller's ``run_info`` names it, see bench.runner)."""
        target_path = str(getattr(self.target.model, "name_or_path", ""))
        draft_dtype = next(self.draft.parameters()).dtype if self.draft is not None else None
        d = {
            "backend": self.name,
            "threads": torch.get_num_threads(),
            "target": target_path,
            "target_params_m": round(sum(p.numel() for p in self.target.model.parameters()) / 1e6, 2),
            "draft_signals": self.draft.signals if self.draft is not None else None,
            "models": {
                "target": {"path": target_path or None, "dtype": str(self.target.dtype).removeprefix("torch.")},
                "draft": {"dtype": str(draft_dtype).removeprefix("torch.")} if draft_dtype is not None else None,
            },
        }
        if self.target.dtype_choice is not None:  # --dtype auto: what was measured and chosen
            d["dtype_choice"] = self.target.dtype_choice
        if self.implicit:  # a model without think tokens: how its reasoning span is delimited
            d.update(answer_trigger=self.answer_trigger, answer_markers=list(self.answer_markers))
        return d

    def generate(self, prompt: str | None = None, **kw) -> GenerationResult:
        stream = self.stream(prompt, **kw)
        for _ in stream:
            pass
        assert stream.result is not None
        return stream.result

    def stream(
        self,
        prompt: str | None = None,
        *,
        input_ids: list[int] | None = None,
        mode: str = "specexit",
        max_new_tokens: int = 512,
        sampling: SamplingParams | None = None,
        tree: TreeConfig | None = None,
        exit_config: ExitConfig | None = None,
        chat: bool = True,
        enable_thinking: bool = True,
        system: str | None = None,
        profile: RoundProfile | None = None,
        probe: JudgeFactory | None = None,
    ) -> GenerationStream:
        """``probe``: a judge that replaces the signal rule (e.g. ``probe.ProbeConfig``, mode 'spec')."""
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if mode != "vanilla" and self.draft is None:
            raise ConfigError(f"mode {mode!r} needs a draft model (--draft DIR); use mode 'vanilla' without one")
        exit_config = exit_config or ExitConfig(think_start=self.think_start, think_end=self.think_end)
        if probe is not None and (mode != "spec" or not self.exit_ids):
            raise ConfigError("the probing exit runs on mode 'spec' and needs the think-end token (or a trigger)")
        if probe is not None and exit_config.agree:
            raise ConfigError("the probing baseline replaces the exit rule: it takes no rule with agree")
        if mode == "vanilla" and exit_config.thinking_budget is not None:
            raise ConfigError("a thinking budget is applied by the speculative loop: use mode 'spec' or 'specexit'")
        if (mode == "specexit" or exit_config.thinking_budget is not None) and not self.exit_ids:
            raise TokenizerError(
                f"the tokenizer has no {self.think_end!r} token, so SpecExit cannot end the thinking span; "
                "pass the model's think-end marker (--think-end), or, for a model that does not think in "
                "tags, an answer trigger (--answer-trigger), or use mode 'spec'"
            )
        if input_ids is None:
            if prompt is None:
                raise ConfigError("give a prompt or input_ids")
            input_ids = self.encode_prompt(prompt, chat=chat, enable_thinking=enable_thinking, system=system)
        if not input_ids:
            raise ConfigError("input_ids is empty")
        sampling = sampling or SamplingParams()
        if probe is None and mode == "specexit" and exit_config.agree:  # trial answers confirm the rule's exits
            probe = AgreementConfig(exit_config.agree, exit_config.agree_tokens)
        control = ExitController(
            exit_config,
            self.tokenizer,
            input_ids,
            self.markers,
            self.draft.signals if self.draft is not None else [],
            enabled=mode == "specexit",
            stop_ids=self.stop_ids,
            judge=probe.make_judge(self.target, self.tokenizer, self.markers, self.stop_ids) if probe else None,
        )
        out = GenerationStream(iter(()))
        out._chunks = self._chunks(
            out, list(input_ids), mode, max_new_tokens, sampling, tree or TreeConfig(), control, profile
        )
        return out

    # ------------------------------------------------------------------------------------------
    def _chunks(self, out: GenerationStream, prompt_ids, mode, max_new, sampling, tree_cfg, control, profile):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
        opened = control.opened
        detok = IncrementalDetokenizer(self.tokenizer)
        generated: list[int] = []
        accept_lengths: list[int] = []
        finish = "length"
        report: dict = {}  # what the adaptive planner decided (``--tree auto``)

        steps = (
            self._vanilla(prompt_ids, max_new, sampling, gen)
            if mode == "vanilla"
            else self._speculative(prompt_ids, max_new, sampling, tree_cfg, control, gen, profile, report)
        )
        try:
            for step_tokens, accepted in steps:
                tokens = control.visible(step_tokens, max_new - len(generated))
                if not (mode != "vanilla" and control.can_exit):  # else the speculative loop steps the policy
                    control.observe(tokens)
                generated += tokens
                if accepted is not None:
                    accept_lengths.append(accepted)
                if tokens:
                    yield StreamChunk(tokens, detok.push(tokens))
                if tokens and tokens[-1] in self.stop_ids:
                    finish = "stop"
                    break
                if len(generated) >= max_new:
                    break
            tail = detok.flush()  # a held-back partial character
            if tail:
                yield StreamChunk([], tail)
        except GeneratorExit:  # the consumer stopped early (client gone, stop string): still report
            finish = "abort"
            raise
        finally:
            out.result = build_result(
                self.tokenizer,
                self.markers,
                mode=mode,
                prompt_ids=prompt_ids,
                generated=generated,
                stop_ids=self.stop_ids,
                opened=opened,
                control=control,
                finish_reason=finish,
                wall_s=time.perf_counter() - t0,
                accept_lengths=accept_lengths,
                exit=control.exit_dict(),
                signal_history=control.history,
                probe_calls=control.judge_calls,
            )
            planner = report.pop("planner", None)
            if planner is not None:  # what --tree auto decided over the whole generation
                report.update(planner.stats.to_dict())
                self._planner_memory[_memory_key(tree_cfg, sampling)] = planner.memory()
            out.result.speculation = report or None

    def _choose(self, logits: torch.Tensor, sampling: SamplingParams, gen) -> int:
        if sampling.greedy:
            return int(logits.argmax())
        return sample(probs_from_logits(logits, sampling), gen)

    @torch.inference_mode()
    def _vanilla(self, prompt_ids, max_new, sampling, gen):
        """Plain decoding with the target: the reference the speculative modes must reproduce."""
        cache = self.target.new_cache(len(prompt_ids) + max_new)
        logits, _ = self.target.forward(torch.tensor([prompt_ids]), cache, last_only=True)
        for _ in range(max_new):
            tok = self._choose(logits[-1], sampling, gen)
            yield [tok], None
            logits, _ = self.target.forward(torch.tensor([[tok]]), cache, last_only=True)

    @torch.inference_mode()
    def _speculative(
        self, prompt_ids, max_new, sampling, tree_cfg, control: ExitController, gen, profile=None, report=None
    ):
        target, draft = self.target, self.draft
        assert draft is not None
        exits = control.can_exit
        planner = self._planner(tree_cfg, sampling)
        if planner is not None:
            proposer = self.proposer_factory(draft, tree_cfg, sampling, planner=planner)
            if report is not None:  # read when the generation ends (``_chunks``)
                report.update(tree="auto", bounds=[tree_cfg.budget, tree_cfg.depth, tree_cfg.k], planner=planner)
        else:
            proposer = self.proposer_factory(draft, tree_cfg, sampling)
        # room for the whole generation plus one round's tree: the buffers never move
        cache = target.new_cache(len(prompt_ids) + max_new + tree_cfg.budget + len(self.exit_ids) + 1)
        logits, hidden = target.forward(torch.tensor([prompt_ids]), cache)
        first = self._choose(logits[-1], sampling, gen)
        fused, _ = draft.fuse(hidden)
        proposer.commit(fused, [*prompt_ids[1:], first])
        if exits:
            control.observe([first])  # prompt positions carry no signal
        yield [first], None
        pending = [first]
        produced = 1
        timed = profile.section if profile is not None else _untimed
        obs: dict | None = None  # the last round, for the planner: observed once the round's time is known
        top = time.perf_counter()
        while produced < max_new:
            now = time.perf_counter()
            if obs is not None and planner is not None:
                # the round's time runs from loop top to loop top (the consumer's work included)
                planner.observe(round_ms=(now - top) * 1e3 - obs.pop("flush_ms"), **obs)
            top, obs = now, None
            drafting = len(pending) == 1 and (planner is None or planner.on)
            past = cache.get_seq_length()  # the pending tokens are not cached yet; proposing leaves it alone
            if planner is not None:
                planner.set_context(past)
            t_draft = time.perf_counter()
            with timed("propose"):
                tree = proposer.propose(gen) if drafting else DraftTree.empty()
            t_draft = (time.perf_counter() - t_draft) * 1e3
            with timed("tree_inputs"):
                if len(tree):
                    ids, pos, mask = verification_inputs(pending, tree, past, target.dtype)
                else:  # no tree: a plain causal step, as plain decoding runs it (no mask to build)
                    ids, pos, mask = torch.tensor([pending]), None, None
            t_target = time.perf_counter()
            with timed("target_forward"):
                logits, hidden = target.forward(ids, cache, pos, mask)
            t_target = (time.perf_counter() - t_target) * 1e3
            with timed("verify"):
                p = len(pending)
                node_logits = logits[p - 1 :]
                verdict = (
                    self.greedy_verifier(node_logits, tree)
                    if sampling.greedy
                    else verify_sampling(node_logits, tree, sampling, gen)
                )
                acc = verdict.accepted
            if len(tree):  # without a tree the cache holds exactly the pending tokens already
                with timed("kv_compact"):
                    compact_cache(cache, past + p, acc)
            with timed("signals_exit"):
                emitted = [tree.tokens[i] for i in acc] + [verdict.bonus]
                known = torch.cat([hidden[:p], hidden[[p + i for i in acc]]]) if acc else hidden[:p]
                fused, sig = draft.fuse(known)
                forced, kept = False, len(emitted)
                if exits:
                    # sig: over the pending and accepted positions; the bonus token's state comes next round
                    where = CacheRound(cache, past + p, len(acc), verdict.bonus)
                    decision = control.round(emitted, sig, max_new - produced, judge_context=where)
                    if decision.exit:
                        kept, forced = decision.keep, True
                        emitted = [*decision.visible[:kept], *self.exit_ids]
            produced += len(emitted)
            if profile is not None:
                profile.rounds += 1
                profile.tree_tokens += len(tree)
            if planner is not None and p == 1:  # a round after an exit verifies forced tokens: not typical
                flush = proposer.last_flush_ms if drafting else 0.0
                obs = dict(drafted=drafting, tree_probs=tree.probs, tree_depths=tree.depths, accepted=len(acc),
                           tree_parents=tree.parents, accepted_nodes=acc,
                           n_verified=p + len(tree), target_ms=t_target, draft_ms=t_draft - flush, tokens=len(acc) + 1,
                           draft_steps=proposer.last_steps if drafting else 0, flush_ms=flush)  # fmt: skip
            yield emitted, len(acc) + 1
            if produced >= max_new or any(t in self.stop_ids for t in emitted):
                return
            with timed("draft_commit"):
                # bring the target cache and the draft up to the kept sequence
                seq = pending + emitted
                # target states exist for the pending and accepted tokens; after an exit only for the kept
                # ones (the forced tokens are verified next round)
                n_known = min(p + len(acc), len(seq) - 1, p + kept)
                if forced:
                    crop_cache(cache, past + n_known)
                proposer.commit(fused[:n_known], seq[1 : n_known + 1])
                pending = seq[n_known:]


def _memory_key(tree_cfg: TreeConfig, sampling: SamplingParams) -> tuple:
    # greedy rounds score nodes by path probability, sampled rounds by rank scores: calibrated apart
    return tree_cfg.budget, tree_cfg.depth, tree_cfg.k, sampling.greedy


def _untimed(_name: str) -> nullcontext:
    return nullcontext()
