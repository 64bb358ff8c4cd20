"""specexit serve: the real uvicorn server on 127.0.0.1, driven by the official openai client and raw httpx.

The server's answers are checked against direct engine runs with the same settings (greedy, same
prompt -> identical reasoning / answer / token counts); then the per-request ``specexit`` control,
the metrics, every kind of bad input, a full queue, concurrency and a client disconnect mid-stream.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import pytest
import uvicorn
from conftest import make_thinking_tiny
from openai import OpenAI

from specexit.cli import main as cli_main
from specexit.engine import SpecExitGenerator
from specexit.exit_policy import ExitConfig
from specexit.proposer import TreeConfig
from specexit.sampling import SamplingParams
from specexit.serve.app import ServeConfig, create_app
from specexit.serve.events import Delta, Outcome
from specexit.serve.generation import ChatPrompt, GenerationPlan, TextPrompt, run_generation
from specexit.serve.text import TextAssembler

PROMPT = "What is 2 + 3?"
MESSAGES = [{"role": "user", "content": PROMPT}]
MODEL = "tiny"
# the untrained draft reads confidence = progress = 0.5 and remain = 1 everywhere
EXITS = {"confidence": 0.4, "progress": 0.4, "remain": 2.0}
LONG = 3000  # max_tokens of a request that would run for many seconds


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = make_thinking_tiny(tmp_path_factory.mktemp("serve-tiny"))
    draft = tmp_path_factory.mktemp("serve-draft")
    assert cli_main(["init-draft", "--target", str(path), "--out", str(draft)]) == 0
    return path, draft


class _Served:
    """A real uvicorn server in a background thread, on a free loopback port."""

    def __init__(self, gen: SpecExitGenerator, cfg: ServeConfig) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.gen = gen
        self.server = uvicorn.Server(uvicorn.Config(create_app(gen, cfg), log_level="warning", loop="asyncio"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        self.client = OpenAI(base_url=self.url + "/v1", api_key="x", max_retries=0, timeout=60)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    def metrics(self) -> dict[str, float]:
        text = httpx.get(self.url + "/metrics").text
        return {
            k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines() if line[:1] not in ("#", ""))
        }

    def wait_idle(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while (h := httpx.get(self.url + "/health").json())["busy"] or h["queue_depth"]:
            assert time.monotonic() < deadline, f"server still busy: {h}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def srv(tiny):
    gen = SpecExitGenerator.from_pretrained(*tiny)
    s = _Served(gen, ServeConfig(model_name=MODEL, max_queue=8, max_tokens_cap=4000, default_max_tokens=64))
    yield s
    s.close()


@pytest.fixture(scope="module")
def engine_runs(srv):
    """Direct engine runs (the server is idle while they run): the reference outputs."""
    gen = srv.gen
    return {
        "spec": gen.generate(PROMPT, mode="spec", max_new_tokens=64),
        "specexit": gen.generate(PROMPT, mode="specexit", max_new_tokens=64),
        "exit": gen.generate(PROMPT, mode="specexit", max_new_tokens=64, exit_config=ExitConfig(thresholds=EXITS)),
        "raw": gen.generate("Once upon", mode="spec", max_new_tokens=24, chat=False),
    }


def _stream_chat(client: OpenAI, **kw):
    """(role, reasoning text, content text, finish_reason, usage, field order) of a streamed chat completion."""
    role, reasoning, content, finish, usage, order = None, [], [], None, None, []
    for chunk in client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, **kw):
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        role = role or d.role
        if getattr(d, "reasoning_content", None):
            reasoning.append(d.reasoning_content)
            order.append("r")
        if d.content:
            content.append(d.content)
            order.append("c")
        finish = chunk.choices[0].finish_reason or finish
    return role, "".join(reasoning), "".join(content), finish, usage, order


def test_text_assembler():
    """Deltas concatenate to the final text; stop-sequence prefixes and trailing whitespace wait."""

    def feed(asm: TextAssembler, *parts: str) -> list[str]:
        return [asm.push([ord(c) for c in p]) for p in parts] + [asm.finish()]

    def chars(ids: list[int]) -> str:
        return "".join(map(chr, ids))

    a = TextAssembler(chars, strip=True, stops=["END"])
    assert feed(a, "  Hi", " E", "N", "D more") == ["Hi", "", "", "", ""] and a.stopped and a.text == "Hi"
    b = TextAssembler(chars, strip=True, stops=["END"])
    assert feed(b, "Hi E", "Xy  ") == ["Hi", " EXy", ""] and not b.stopped and b.text == "Hi EXy"
    c = TextAssembler(chars, strip=False, stops=["\n\nQ:"])
    assert feed(c, "A\n", "\nB") == ["A", "\n\nB", ""] and c.text == "A\n\nB"
    d = TextAssembler(lambda ids: chars(ids).replace("~", "\ufffd"), strip=False)
    assert feed(d, "x~", "y") == ["", "x\ufffdy", ""]  # half a character waits for the rest


def test_text_assembler_is_incremental():
    """Each push decodes a bounded window, not the whole field again (that would be quadratic)."""
    decoded = 0

    def chars(ids: list[int]) -> str:
        nonlocal decoded
        decoded += len(ids)
        return "".join(map(chr, ids))

    text = "think, step by step; " * 250  # 5250 one-character tokens
    asm = TextAssembler(chars, strip=True, stops=["never-there"])
    deltas = [asm.push([ord(c)]) for c in text] + [asm.finish()]
    assert "".join(deltas) == asm.text == text.strip()
    assert decoded <= 16 * len(text)  # whole-field decoding: len(text) ** 2 / 2
    # a decoder that rewrites text across the window ("a ." -> "a."): the finished field is still its
    # whole decoding
    rewrites = TextAssembler(lambda ids: chars(ids).replace(" .", "."), strip=True)
    assert "".join([rewrites.push([ord(c)]) for c in "a .b"] + [rewrites.finish()]) == rewrites.text == "a.b"


class _CountingTokenizer:
    """The real tokenizer, counting the token ids it decodes (the cost of detokenisation, machine-free)."""

    def __init__(self, tok) -> None:
        self.tok, self.decoded = tok, 0

    def decode(self, ids: list[int], **kw) -> str:
        self.decoded += len(ids)
        return self.tok.decode(ids, **kw)

    def __len__(self) -> int:
        return len(self.tok)

    def __getattr__(self, name: str):
        return getattr(self.tok, name)


class _ScriptedStream:
    result = None  # no engine result, as after a stop sequence: the outcome counts the streamed tokens

    def __init__(self, output: list[int]) -> None:
        self.output = output

    def __iter__(self) -> Iterator[SimpleNamespace]:
        return (SimpleNamespace(token_ids=[t]) for t in self.output)


class _ScriptedGenerator:
    """What ``run_generation`` uses of a generator, streaming a fixed output one token per chunk."""

    def __init__(self, gen: SpecExitGenerator, output: list[int]) -> None:
        self.tokenizer = _CountingTokenizer(gen.tokenizer)
        self.target, self.stop_ids = gen.target, gen.stop_ids
        self.think_start_id, self.think_end_id = gen.think_start_id, gen.think_end_id
        self.output = output

    def stream(self, **_kw) -> _ScriptedStream:
        return _ScriptedStream(self.output)


def test_streamed_fields_decode_incrementally(srv):
    """A long output with multi-byte characters split over byte tokens, streamed a token at a time: the
    deltas equal the whole-output decoding of each field, and each token is decoded a bounded number of
    times (decoding the field again on every push would cost n ** 2 / 2 token decodings)."""
    gen, tok = srv.gen, srv.gen.tokenizer

    def ids(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False)

    reasoning = ids("Let me think \u2192 about \u03c0\u2026 2 + 3 = 5 \u2713 \U0001f642 \u65e5\u672c.\n\n" * 30)
    answer = ids("The answer is 5 \u2014 sure \U0001f44d.  " * 12 + "Done.")
    stop_id = tok.get_vocab()["<|im_end|>"]
    assert stop_id in gen.stop_ids
    output = [*reasoning, gen.think_end_id, *answer, stop_id]
    plan = GenerationPlan("spec", len(output), SamplingParams(), ExitConfig(), TreeConfig())

    def run(prompt, stops: tuple[str, ...] = ()) -> tuple[dict[str, str], Outcome, int]:
        scripted = _ScriptedGenerator(gen, output)
        events = list(run_generation(scripted, dataclasses.replace(plan, stops=stops), prompt))
        streamed: dict[str, str] = {}
        for e in events:
            if isinstance(e, Delta):
                streamed[e.field] = streamed.get(e.field, "") + e.text
        assert isinstance(events[-1], Outcome)
        return streamed, events[-1], scripted.tokenizer.decoded

    assert len(output) > 1500
    streamed, outcome, decoded = run(ChatPrompt(MESSAGES))  # the template opens the thinking span
    fields = {"reasoning_content": reasoning, "content": answer}
    assert streamed == outcome.texts == {k: tok.decode(v, skip_special_tokens=True).strip() for k, v in fields.items()}
    assert decoded <= 16 * len(output)

    full = tok.decode(output[:-1], skip_special_tokens=False)
    streamed, outcome, decoded = run(TextPrompt(ids=ids("Once upon")), stops=("never-there", "Done"))
    assert streamed == outcome.texts == {"text": full[: full.index("Done")]} and outcome.finish_reason == "stop"
    assert decoded <= 16 * len(output)


def test_chat_matches_engine(srv, engine_runs):
    ref = engine_runs["spec"]
    assert ref.reasoning and ref.answer and not ref.exited_early  # the tiny model thinks, then answers
    r = srv.client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=64, temperature=0, extra_body={"specexit": {"mode": "spec"}}
    )
    msg = r.choices[0].message
    assert (msg.reasoning_content, msg.content) == (ref.reasoning, ref.answer)
    assert r.choices[0].finish_reason == ref.finish_reason == "length"
    u = r.usage
    assert (u.prompt_tokens, u.completion_tokens) == (ref.prompt_tokens, ref.new_tokens)
    assert u.total_tokens == ref.prompt_tokens + ref.new_tokens
    assert u.completion_tokens_details.reasoning_tokens == ref.thinking_tokens
    assert u.specexit["mode"] == "spec" and u.specexit["exited_early"] is False
    assert u.specexit["mean_accept_length"] == pytest.approx(ref.mean_accept_length, abs=1e-4)

    role, reasoning, content, finish, usage, order = _stream_chat(
        srv.client, max_tokens=64, stream_options={"include_usage": True}, extra_body={"specexit": {"mode": "spec"}}
    )
    assert role == "assistant" and (reasoning, content) == (ref.reasoning, ref.answer) and finish == "length"
    assert order == sorted(order, reverse=True)  # every reasoning delta comes before the answer
    timeless = [{**x.model_dump(), "specexit": {**x.specexit, "generation_s": 0}} for x in (usage, u)]
    assert timeless[0] == timeless[1]


def test_per_request_exit_control(srv, engine_runs):
    def ask(opts: dict):
        return srv.client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=64, extra_body={"specexit": opts}
        )

    # thresholds the untrained draft passes: exit at the first paragraph break, as the engine does
    ref = engine_runs["exit"]
    assert ref.exited_early
    r = ask({"thresholds": EXITS})
    sx = r.usage.specexit
    assert sx["mode"] == "specexit" and sx["exited_early"] is True and sx["exit_boundary"] == "paragraph"
    assert sx["exit_position"] == ref.exit["thinking_tokens"] == r.usage.completion_tokens_details.reasoning_tokens
    assert sx["smoothed"] == pytest.approx({"confidence": 0.5, "progress": 0.5, "remain": 1.0}, abs=1e-3)
    assert (r.choices[0].message.reasoning_content, r.choices[0].message.content) == (ref.reasoning, ref.answer)
    # one signal alone (the others switched off with null) also exits
    assert ask({"enabled": True, "thresholds": {"confidence": None, "progress": None, "remain": 2}}).usage.specexit[
        "exited_early"
    ]
    # default thresholds (confidence > 0.8) never pass: no exit, same text as without exit
    default = ask({})
    assert default.usage.specexit["mode"] == "specexit" and not default.usage.specexit["exited_early"]
    assert default.choices[0].message.content == engine_runs["specexit"].answer == engine_runs["spec"].answer
    off = ask({"enabled": False, "thresholds": EXITS})
    assert off.usage.specexit["mode"] == "spec" and not off.usage.specexit["exited_early"]
    vanilla = ask({"mode": "vanilla"})
    assert vanilla.usage.specexit["mean_accept_length"] is None
    assert vanilla.choices[0].message.content == engine_runs["spec"].answer


def test_thinking_token_budget_per_request(srv, engine_runs):
    """vLLM's field name; the budget ends at a boundary, holds under speculation, composes with the rule."""
    full = engine_runs["spec"]
    n = max(2, full.thinking_tokens // 2)
    body = {"thinking_token_budget": n, "specexit": {"mode": "spec"}}
    r = srv.client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=64, extra_body=body)
    sx = r.usage.specexit
    assert r.usage.completion_tokens_details.reasoning_tokens <= n
    assert sx["exited_early"] and sx["exit_boundary"].startswith("budget") and sx["exit_rule"] is not None
    bad = httpx.post(srv.url + "/v1/chat/completions", json={"messages": MESSAGES, "thinking_token_budget": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "thinking_token_budget"


def test_completions_and_stop_sequences(srv, engine_runs):
    raw = engine_runs["raw"]
    c = srv.client.completions.create(
        model=MODEL, prompt="Once upon", max_tokens=24, extra_body={"specexit": {"mode": "spec"}}
    )
    assert c.choices[0].text == raw.text and c.usage.completion_tokens == raw.new_tokens
    pieces = srv.client.completions.create(
        model=MODEL, prompt="Once upon", max_tokens=24, stream=True, extra_body={"specexit": {"mode": "spec"}}
    )
    assert "".join(p.choices[0].text for p in pieces) == raw.text

    answer = engine_runs["spec"].answer
    stop = answer[len(answer) // 2 : len(answer) // 2 + 2]
    expected = answer[: answer.find(stop)].rstrip()
    r = srv.client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=64,
        stop=["never-there", stop],
        extra_body={"specexit": {"mode": "spec"}},
    )
    assert r.choices[0].message.content == expected and r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.reasoning_content == engine_runs["spec"].reasoning  # stops apply to the answer only
    # the engine's partial result (stream.close() after the cut) still gives the exit record and counts
    assert r.usage.specexit["exited_early"] is False and r.usage.specexit["draft_rounds"] > 0
    assert r.usage.completion_tokens_details.reasoning_tokens == engine_runs["spec"].thinking_tokens
    _, _, content, finish, _, _ = _stream_chat(
        srv.client, max_tokens=64, stop=stop, extra_body={"specexit": {"mode": "spec"}}
    )
    assert (content, finish) == (expected, "stop")


def test_completions_cut_by_a_stop_sequence_count_their_reasoning_tokens(srv, engine_runs):
    """/v1/completions of a prompt that opens thinking, cut by a stop sequence in the answer: the usage
    counts the thinking tokens before the cut (it said 0: the text router did not count them and the
    engine's partial result was not used), streamed and not, as the same request without a stop does."""
    ref = engine_runs["spec"]
    assert ref.thinking_tokens > 0 and ref.answer
    ids = srv.gen.encode_prompt(PROMPT)  # the chat template's ids, sent raw: thinking is open
    end = ref.text.index("</think>")
    stop = next(
        ref.answer[i : i + 2] for i in range(len(ref.answer) // 3, len(ref.answer) - 1)
        if ref.text.find(ref.answer[i : i + 2]) > end and ref.answer[i : i + 2].strip()
    )  # fmt: skip
    expected = ref.text[: ref.text.find(stop)]
    base = {"model": MODEL, "prompt": ids, "max_tokens": 64, "extra_body": {"specexit": {"mode": "spec"}}}
    kw = {**base, "stop": stop}
    plain = srv.client.completions.create(**base)
    assert plain.choices[0].text == ref.text
    assert plain.usage.completion_tokens_details.reasoning_tokens == ref.thinking_tokens
    r = srv.client.completions.create(**kw)
    assert (r.choices[0].text, r.choices[0].finish_reason) == (expected, "stop")
    assert r.usage.completion_tokens_details.reasoning_tokens == ref.thinking_tokens
    assert 0 < r.usage.completion_tokens <= ref.new_tokens
    text, usage, finish = [], None, None
    for chunk in srv.client.completions.create(**kw, stream=True, stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices:
            text.append(chunk.choices[0].text)
            finish = chunk.choices[0].finish_reason or finish
    assert ("".join(text), finish) == (expected, "stop")
    assert usage is not None and usage.completion_tokens_details.reasoning_tokens == ref.thinking_tokens
    assert usage.specexit["exited_early"] is False  # the partial engine result, as in the non-streamed body


def test_text_router_counts_reasoning_tokens_without_an_engine_result(srv):
    """Where the engine gives no result (a scripted stream), a cut completion's reasoning tokens are
    those the text router saw inside the thinking span (markers and stop ids not counted)."""
    gen, tok = srv.gen, srv.gen.tokenizer
    reasoning = tok.encode("Let me think. 2 + 3 = 5.\n\nCheck: 5.", add_special_tokens=False)
    answer = tok.encode("The answer is 5. Done. Extra text.", add_special_tokens=False)
    output = [*reasoning, gen.think_end_id, *answer, tok.get_vocab()["<|im_end|>"]]
    plan = GenerationPlan("spec", len(output), SamplingParams(), ExitConfig(), TreeConfig(), stops=("Done",))
    for prompt, want in [(gen.encode_prompt(PROMPT), len(reasoning)), (tok.encode("Once upon"), 0)]:
        events = list(run_generation(_ScriptedGenerator(gen, output), plan, TextPrompt(ids=prompt)))
        outcome = events[-1]
        assert isinstance(outcome, Outcome) and outcome.result is None and outcome.finish_reason == "stop"
        assert outcome.reasoning_tokens == want, prompt  # a prompt that does not open thinking: none
        assert outcome.texts["text"].endswith("The answer is 5. ")


def test_models_health_metrics(srv, engine_runs):
    models = srv.client.models.list().data
    assert [m.id for m in models] == [MODEL] and models[0].specexit["default_mode"] == "specexit"
    health = httpx.get(srv.url + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"

    before = srv.metrics()
    srv.client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=64, extra_body={"specexit": {"thresholds": EXITS}}
    )
    after = srv.metrics()
    ref = engine_runs["exit"]

    def grew(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew('specexit_requests_total{endpoint="/v1/chat/completions",status="200"}') == 1
    assert grew('specexit_generations_total{finish_reason="length",mode="specexit"}') == 1
    assert grew("specexit_generated_tokens_total") == ref.new_tokens
    assert grew("specexit_thinking_tokens_total") == ref.thinking_tokens
    assert grew("specexit_early_exits_total") == 1
    assert grew("specexit_exit_thinking_tokens_total") == ref.exit["thinking_tokens"]
    assert grew("specexit_accept_length_count") == len(ref.accept_lengths)
    assert grew('specexit_request_latency_seconds_count{endpoint="/v1/chat/completions"}') == 1
    assert 0 < after["specexit_exit_rate"] <= 1 and after["specexit_queue_depth"] == 0
    assert after["process_resident_memory_bytes"] > 0


BAD = [
    # (body or raw bytes, status, code, param)
    (b"{not json", 400, "invalid_json", None),
    (b"[1, 2]", 400, "invalid_type", None),
    ({"model": "gpt-4", "messages": MESSAGES}, 404, "model_not_found", "model"),
    ({"messages": MESSAGES, "max_tokens": "12"}, 400, "invalid_type", "max_tokens"),
    ({"messages": MESSAGES, "temperature": "hot"}, 400, "invalid_type", "temperature"),
    ({"messages": "hello"}, 400, "invalid_type", "messages"),
    ({"messages": MESSAGES, "max_tokens": 0}, 400, "invalid_value", "max_tokens"),
    ({"messages": MESSAGES, "max_tokens": -5}, 400, "invalid_value", "max_tokens"),
    ({"messages": MESSAGES, "max_tokens": 4001}, 400, "invalid_value", "max_tokens"),
    ({"messages": MESSAGES, "max_completion_tokens": 0}, 400, "invalid_value", "max_completion_tokens"),
    ({"messages": []}, 400, "invalid_value", "messages"),
    ({}, 400, "invalid_value", "messages"),
    ({"messages": MESSAGES, "n": 2}, 400, "unsupported_value", "n"),
    ({"messages": MESSAGES, "specexit": {"colour": "red"}}, 400, "unknown_field", "specexit.colour"),
    ({"messages": MESSAGES, "specexit": {"thresholds": {"confidnce": 0.5}}}, 400, "unknown_field",
     "specexit.thresholds.confidnce"),
    ({"messages": MESSAGES, "specexit": {"mode": "turbo"}}, 400, "invalid_type", "specexit.mode"),
    ({"messages": MESSAGES, "specexit": {"alpha": 3.0}}, 400, "invalid_value", "specexit"),
    ({"messages": MESSAGES, "specexit": {"smoothing": "ewma", "window": 0}}, 400, "invalid_value", "specexit"),
    ({"messages": MESSAGES, "specexit": {"thresholds": {"confidence": None, "progress": None, "remain": None}}},
     400, "invalid_value", "specexit"),
    ({"messages": MESSAGES, "temperature": -1}, 400, "invalid_value", "temperature"),
    ({"messages": MESSAGES, "top_p": 0}, 400, "invalid_value", "top_p"),
    ({"messages": MESSAGES, "stop": 7}, 400, "invalid_type", "stop"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "invalid_type", "messages.0.role"),
    ({"messages": MESSAGES, "chat_template_kwargs": {"tokenize": True}}, 400, "invalid_value", "chat_template_kwargs"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "unsupported_value",
     "messages.0.content"),
]  # fmt: skip


def test_bad_input_gets_openai_errors(srv):
    url = srv.url + "/v1/chat/completions"
    for body, status, code, param in BAD:
        r = httpx.post(url, content=body) if isinstance(body, bytes) else httpx.post(url, json=body)
        assert r.status_code == status, (body, r.text)
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"], body
        assert (err["code"], err["param"]) == (code, param), (body, err)
    # the engine's own checks (ConfigError) also come back as 400s
    long_prompt = [{"role": "user", "content": "2 + 3 = 5. " * 100}]
    r = httpx.post(url, json={"messages": long_prompt, "max_tokens": 4000})
    assert r.status_code == 400 and "context length" in r.json()["error"]["message"]
    comp = srv.url + "/v1/completions"
    for body in ({"prompt": ""}, {"prompt": ["a", "b"]}, {"prompt": [10**6]}, {"prompt": "x", "echo": True}):
        r = httpx.post(comp, json=body)
        assert r.status_code == 400 and r.json()["error"]["message"], (body, r.text)
    assert httpx.get(srv.url + "/v1/nothing").json()["error"]["code"] == "not_found"
    assert httpx.get(srv.url + "/v1/models/gpt-4").status_code == 404
    # still serving
    ok = srv.client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4)
    assert ok.usage.completion_tokens == 4


def test_concurrent_requests_all_complete(srv):
    def one(i: int):
        return srv.client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=16, extra_body={"specexit": {"mode": "spec"}}
        )

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    assert len({r.choices[0].message.reasoning_content for r in results}) == 1  # served one at a time: identical
    assert all(r.usage.completion_tokens == 16 for r in results)


def _start_long_stream(url: str) -> tuple[httpx.Client, httpx.Response, Iterator[str]]:
    """A streamed request that would run for many seconds, read until its first text delta.  The line
    iterator is returned too: dropping it would close the response (a disconnect)."""
    client = httpx.Client(timeout=60)
    body = {"messages": MESSAGES, "max_tokens": LONG, "stream": True, "specexit": {"mode": "vanilla"}}
    resp = client.send(client.build_request("POST", url + "/v1/chat/completions", json=body), stream=True)
    assert resp.status_code == 200
    lines = resp.iter_lines()
    while "reasoning_content" not in next(lines):
        pass
    return client, resp, lines


def test_client_disconnect_frees_the_worker(srv):
    before = srv.metrics()
    client, resp, _lines = _start_long_stream(srv.url)  # streamed: closed after the first delta
    assert httpx.get(srv.url + "/health").json()["busy"]
    resp.close()
    client.close()
    long_body = {"messages": MESSAGES, "max_tokens": LONG, "specexit": {"mode": "vanilla"}}
    with pytest.raises(httpx.ReadTimeout):  # not streamed: the client gives up waiting
        httpx.post(srv.url + "/v1/chat/completions", json=long_body, timeout=1.0)
    t0 = time.monotonic()
    r = srv.client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=8, extra_body={"specexit": {"mode": "vanilla"}}
    )
    assert r.usage.completion_tokens == 8
    assert time.monotonic() - t0 < 10
    srv.wait_idle()
    after = srv.metrics()
    key = 'specexit_requests_cancelled_total{endpoint="/v1/chat/completions"}'
    assert after[key] == before.get(key, 0) + 2
    # the worker stopped both abandoned 3000-token generations (neither ran to its end first)
    assert after["specexit_generations_stopped_total"] == before["specexit_generations_stopped_total"] + 2


@pytest.fixture(scope="module")
def small(tiny):
    s = _Served(
        SpecExitGenerator.from_pretrained(*tiny), ServeConfig(model_name=MODEL, max_queue=1, max_tokens_cap=4000)
    )
    yield s
    s.close()


def test_full_queue_answers_503(small):
    client, running, _lines = _start_long_stream(small.url)  # holds the worker
    quick = {"model": MODEL, "messages": MESSAGES, "max_tokens": 4}
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(httpx.post, small.url + "/v1/chat/completions", json=quick, timeout=60)
        deadline = time.monotonic() + 20
        while httpx.get(small.url + "/health").json()["queue_depth"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        full = httpx.post(small.url + "/v1/chat/completions", json=quick)
        assert full.status_code == 503 and full.json()["error"]["code"] == "queue_full"
        running.close()  # disconnect: the waiting request runs next
        client.close()
        done = waiting.result(timeout=30)
    assert done.status_code == 200 and done.json()["usage"]["completion_tokens"] == 4
    m = small.metrics()
    assert m['specexit_requests_total{endpoint="/v1/chat/completions",status="503"}'] == 1
