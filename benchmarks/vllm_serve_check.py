"""`specexit serve --backend vllm` end to end (docs/vllm.md): start vLLM's OpenAI server with the SpecExit
plugin on loopback, query it with the official `openai` client, check, stop.  Run with the vLLM venv:

    OMP_NUM_THREADS=1 /work/vllm-venv/bin/python benchmarks/vllm_serve_check.py [--port 8123]

Checks (greedy, one held-out testbed problem): the server's default exit rule ends thinking early
(fewer completion tokens than with exit opted out); `vllm_xargs` opts a request out and sets a thinking
budget; `reasoning_content` and `content` are split by vLLM's qwen3 reasoning parser, also when streamed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
from openai import OpenAI

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "src" / "specexit" / "assets"


def _reasoning(obj) -> str:
    extra = obj.model_extra or {}
    return extra.get("reasoning_content") or extra.get("reasoning") or ""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8123)
    a = ap.parse_args()
    cmd = [sys.executable, "-m", "specexit", "serve", "--backend", "vllm", "--target", str(ASSETS / "testbed"),
           "--draft", str(ASSETS / "testbed-draft"), "--port", str(a.port), "--readout", "boundary",
           "--smoothing", "none", "--thresholds", "confidence=0.5", "--vllm-arg=--max-model-len=1024"]  # fmt: skip
    url = f"http://127.0.0.1:{a.port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - t0 < 300:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}; run the command by hand: {' '.join(cmd)}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        startup = time.perf_counter() - t0
        from specexit.testbed.problems import make_problems

        problem = make_problems(1, seed=0, split="test")[0]
        client = OpenAI(base_url=url + "/v1", api_key="unused")
        msgs = [{"role": "user", "content": problem.question}]

        def ask(**extra):
            r = client.chat.completions.create(model="testbed", messages=msgs, max_tokens=600, temperature=0,
                                               extra_body=extra)  # fmt: skip
            m = r.choices[0].message
            return {"completion_tokens": r.usage.completion_tokens, "reasoning_chars": len(_reasoning(m)),
                    "content": m.content.strip()}  # fmt: skip

        out = {
            "startup_s": round(startup, 1),
            "default_specexit": ask(),
            "opted_out": ask(vllm_xargs={"specexit": json.dumps({"enabled": False})}),
            "budget_24": ask(vllm_xargs={"specexit": json.dumps({"enabled": False, "thinking_budget": 24})}),
        }
        reasoning, content = "", ""
        for ch in client.chat.completions.create(model="testbed", messages=msgs, max_tokens=600, temperature=0,
                                                 stream=True):  # fmt: skip
            if ch.choices:
                reasoning += _reasoning(ch.choices[0].delta)
                content += ch.choices[0].delta.content or ""
        out["stream"] = {"reasoning_chars": len(reasoning), "content": content.strip()}
        d, o, b = out["default_specexit"], out["opted_out"], out["budget_24"]
        checks = {
            "exit shortens the completion": d["completion_tokens"] < o["completion_tokens"],
            "budget shortens it further": b["completion_tokens"] < d["completion_tokens"],
            "answers in content, thinking in reasoning_content": all(
                "\\boxed" in x["content"] and x["reasoning_chars"] > 0 for x in (d, o, b)
            ),
            "stream equals non-stream": out["stream"] == {k: d[k] for k in ("reasoning_chars", "content")},
        }
        out["checks"] = checks
        print(json.dumps(out, indent=2))
        return 0 if all(checks.values()) else 1
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    raise SystemExit(main())
