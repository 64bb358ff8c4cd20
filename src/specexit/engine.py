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
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import AutoTokenizer

from .answer_trigger import DEFAULT_ANSWER_MARKERS, last_paragraph
from .boundaries import BoundaryDetector
from .chat import encode_prompt, split_reasoning_ids, stop_token_ids
from .detokenize import IncrementalDetokenizer
from .draft import Eagle3Draft
from .errors import ConfigError, TokenizerError
from .exit_policy import ExitConfig, ExitPolicy
from .probe import ProbeConfig, ProbeJudge
from .profiling import RoundProfile
from .proposer import DraftProposer, TreeConfig
from .results import MODES, GenerationResult, StreamChunk
from .sampling import SamplingParams, probs_from_logits, sample
from .target import TargetModel, compact_cache, crop_cache, resolve_dtype
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
        if draft is not None:
            draft.check_target(target)
        self.think_start, self.think_end = think_start, think_end
        vocab = tokenizer.get_vocab()
        self.answer_trigger, self.answer_markers = answer_trigger, tuple(answer_markers)
        if answer_trigger is not None:
            if not answer_trigger.strip():
                raise ConfigError("the answer trigger is empty; give the text that makes the model answer")
            if not self.answer_markers:
                raise ConfigError("an answer trigger needs at least one answer marker (e.g. \\boxed)")
            self.think_start_id = self.think_end_id = None
            # what an exit forces: the trigger's tokens (a thinking model: its one think-end token)
            self.exit_ids: list[int] = tokenizer.encode(answer_trigger, add_special_tokens=False)
        else:
            self.think_start_id = vocab.get(think_start)
            self.think_end_id = vocab.get(think_end)
            self.exit_ids = [self.think_end_id] if self.think_end_id is not None else []
        self.stop_ids = self._stop_ids()

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
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir or target_dir), local_files_only=True)
        draft = None
        if draft_dir is not None:
            # the draft may run in another precision than the target: it only changes acceptance, never
            # the output (bf16 drafting is ~4x faster on CPUs with AVX512-BF16, see docs/performance.md)
            dd = resolve_dtype(draft_dtype) if draft_dtype else target.dtype
            draft = Eagle3Draft.from_pretrained(draft_dir, target=target, dtype=dd)
        return cls(target, tokenizer, draft, **kw)

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
        probe: ProbeConfig | None = None,
    ) -> GenerationStream:
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if mode != "vanilla" and self.draft is None:
            raise ConfigError(f"mode {mode!r} needs a draft model (--draft DIR); use mode 'vanilla' without one")
        exit_config = exit_config or ExitConfig(think_start=self.think_start, think_end=self.think_end)
        if probe is not None and (mode != "spec" or not self.exit_ids):
            raise ConfigError("the probing exit runs on mode 'spec' and needs the think-end token (or a trigger)")
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
        policy = ExitPolicy(
            exit_config,
            BoundaryDetector(
                lambda i: self.tokenizer.decode([i]), exit_config.paragraph_boundaries, exit_config.connectors
            ),
            self.think_start_id,
            self.think_end_id if self.think_end_id is not None else -1,
            available_signals=self.draft.signals if self.draft is not None else [],
            enabled=mode == "specexit",
            judge=ProbeJudge(self.target, self.tokenizer, probe, self.exit_ids, self.stop_ids, self.implicit)
            if probe
            else None,
            answer_markers=self.answer_markers if self.implicit else None,
        )
        tail = self.tokenizer.decode(input_ids[-8:], skip_special_tokens=False)
        n = len(self.exit_ids)
        asks_answer = self.implicit and list(input_ids[-n:]) == self.exit_ids
        policy.start(input_ids, tail, opened=not asks_answer if self.implicit else None)
        out = GenerationStream(iter(()))
        out._chunks = self._chunks(
            out, list(input_ids), mode, max_new_tokens, sampling, tree or TreeConfig(), policy, profile
        )
        return out

    # ------------------------------------------------------------------------------------------
    def _chunks(self, out: GenerationStream, prompt_ids, mode, max_new, sampling, tree_cfg, policy, profile):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
        opened = policy.in_thinking
        detok = IncrementalDetokenizer(self.tokenizer)
        phase = "reasoning" if opened else "answer"
        generated: list[int] = []
        accept_lengths: list[int] = []
        finish = "length"

        def emit(tokens: list[int]) -> Iterator[StreamChunk]:
            nonlocal phase
            for seg in _segments(tokens, {self.think_start_id, self.think_end_id}):
                if seg[0] in (self.think_start_id, self.think_end_id) and len(seg) == 1:
                    phase = "reasoning" if seg[0] == self.think_start_id else "answer"
                    yield StreamChunk(seg, detok.push(seg), "marker")
                else:
                    yield StreamChunk(seg, detok.push(seg), phase)

        steps = (
            self._vanilla(prompt_ids, max_new, sampling, gen)
            if mode == "vanilla"
            else self._speculative(prompt_ids, max_new, sampling, tree_cfg, policy, gen, profile)
        )
        try:
            for tokens, accepted in steps:
                stop_at = next((i for i, t in enumerate(tokens) if t in self.stop_ids), None)
                if stop_at is not None:
                    tokens = tokens[: stop_at + 1]
                tokens = tokens[: max_new - len(generated)]
                if not (mode != "vanilla" and policy.can_exit):  # else the speculative loop steps the policy
                    policy.step(tokens, None)
                generated += tokens
                if accepted is not None:
                    accept_lengths.append(accepted)
                if tokens:
                    yield from emit(tokens)
                if stop_at is not None and tokens and tokens[-1] in self.stop_ids:
                    finish = "stop"
                    break
                if len(generated) >= max_new:
                    break
            tail = detok.flush()  # a held-back partial character
            if tail:
                yield StreamChunk([], tail, phase)
        except GeneratorExit:  # the consumer stopped early (client gone, stop string): still report
            finish = "abort"
            raise
        finally:
            out.result = self._result(mode, prompt_ids, generated, accept_lengths, policy, opened, finish, t0)

    def _result(self, mode, prompt_ids, generated, accept_lengths, policy, opened, finish, t0) -> GenerationResult:
        body = generated[:-1] if generated and generated[-1] in self.stop_ids else generated
        if self.implicit:
            reasoning_ids, answer_ids = body[: policy.thinking_tokens], body[policy.thinking_tokens :]
        else:
            reasoning_ids, answer_ids = split_reasoning_ids(body, self.think_start_id, self.think_end_id, opened)
        answer = self.tokenizer.decode(answer_ids, skip_special_tokens=True).strip()
        if self.implicit and not answer and policy.in_thinking and finish == "stop":
            # the model ended without any answer marker: its last paragraph is its answer
            answer = last_paragraph(self.tokenizer.decode(reasoning_ids, skip_special_tokens=True))
        record = policy.record
        return GenerationResult(
            mode=mode,
            text=self.tokenizer.decode(body, skip_special_tokens=False),
            reasoning=self.tokenizer.decode(reasoning_ids, skip_special_tokens=True).strip(),
            answer=answer,
            token_ids=list(generated),
            prompt_tokens=len(prompt_ids),
            new_tokens=len(generated),
            thinking_tokens=policy.thinking_tokens,
            accept_lengths=list(accept_lengths),
            exited_early=record is not None,
            exit=record.to_dict() if record is not None else None,
            finish_reason=finish,
            wall_s=time.perf_counter() - t0,
            signal_history=list(policy.history),
            probe_calls=policy.judge_calls,
        )

    def _choose(self, logits: torch.Tensor, sampling: SamplingParams, gen) -> int:
        if sampling.greedy:
            return int(logits.argmax())
        return sample(probs_from_logits(logits, sampling), gen)

    @torch.inference_mode()
    def _vanilla(self, prompt_ids, max_new, sampling, gen):
        """Plain decoding with the target: the reference the speculative modes must reproduce."""
        cache = self.target.new_cache()
        logits, _ = self.target.forward(torch.tensor([prompt_ids]), cache, last_only=True)
        for _ in range(max_new):
            tok = self._choose(logits[-1], sampling, gen)
            yield [tok], None
            logits, _ = self.target.forward(torch.tensor([[tok]]), cache, last_only=True)

    @torch.inference_mode()
    def _speculative(self, prompt_ids, max_new, sampling, tree_cfg, policy: ExitPolicy, gen, profile=None):
        target, draft = self.target, self.draft
        assert draft is not None
        exits = policy.can_exit
        proposer = self.proposer_factory(draft, tree_cfg, sampling)
        cache = target.new_cache()
        logits, hidden = target.forward(torch.tensor([prompt_ids]), cache)
        first = self._choose(logits[-1], sampling, gen)
        fused, _ = draft.fuse(hidden)
        proposer.commit(fused, [*prompt_ids[1:], first])
        if exits:
            policy.step([first], None)  # prompt positions carry no signal
        yield [first], None
        pending = [first]
        produced = 1
        timed = profile.section if profile is not None else _untimed
        while produced < max_new:
            with timed("propose"):
                tree = proposer.propose(gen) if len(pending) == 1 else DraftTree.empty()
            with timed("tree_inputs"):
                past = cache.get_seq_length()
                ids, pos, mask = verification_inputs(pending, tree, past, target.dtype)
            with timed("target_forward"):
                logits, hidden = target.forward(ids, cache, pos, mask)
            with timed("verify"):
                p = len(pending)
                node_logits = logits[p - 1 :]
                verdict = (
                    verify_greedy(node_logits, tree)
                    if sampling.greedy
                    else verify_sampling(node_logits, tree, sampling, gen)
                )
                acc = verdict.accepted
            with timed("kv_compact"):
                compact_cache(cache, past + p, acc)
            with timed("signals_exit"):
                emitted = [tree.tokens[i] for i in acc] + [verdict.bonus]
                known = torch.cat([hidden[:p], hidden[[p + i for i in acc]]]) if acc else hidden[:p]
                fused, sig = draft.fuse(known)
                forced, kept = False, len(emitted)
                if exits:
                    signals = {n: float(v.mean()) for n, v in sig.items()} if sig and policy.enabled else None
                    per_token = None
                    if signals is not None and policy.config.readout == "boundary":
                        # state after the previous round's last token, then after each accepted token;
                        # the bonus token's state only exists next round
                        rows = {n: v[p - 1 :].tolist() for n, v in sig.items()}
                        per_token = [{n: r[k] for n, r in rows.items()} for k in range(len(acc) + 1)] + [None]
                    if isinstance(policy.judge, ProbeJudge):
                        policy.judge.round(cache, past + p, len(acc), verdict.bonus)
                    # the policy must not see tokens the caller will drop (stop token / length cap)
                    visible = _truncate(emitted, self.stop_ids, max_new - produced)
                    # an exit needs room for the forced think-end token(s) within max_new_tokens
                    decision = policy.step(
                        visible,
                        signals,
                        max_keep=max_new - produced - len(self.exit_ids),
                        token_signals=per_token[: len(visible) + 1] if per_token is not None else None,
                    )
                    if decision.exit:
                        emitted, forced, kept = [*visible[: decision.keep], *self.exit_ids], True, decision.keep
            produced += len(emitted)
            if profile is not None:
                profile.rounds += 1
                profile.tree_tokens += len(tree)
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


def _untimed(_name: str) -> nullcontext:
    return nullcontext()


def _truncate(tokens: list[int], stop_ids: set[int], budget: int) -> list[int]:
    stop_at = next((i for i, t in enumerate(tokens) if t in stop_ids), None)
    if stop_at is not None:
        tokens = tokens[: stop_at + 1]
    return tokens[: max(budget, 0)]


def _segments(tokens: list[int], markers: set[int | None]):
    """Split a token list so that each marker token stands alone (for phase tagging)."""
    start = 0
    for i, t in enumerate(tokens):
        if t in markers:
            if i > start:
                yield tokens[start:i]
            yield [t]
            start = i + 1
    if start < len(tokens):
        yield tokens[start:]
