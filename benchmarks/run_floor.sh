#!/usr/bin/env bash
# The floor benchmark of docs/performance.md (issue #22): 40-50 minutes on 2 cores, nothing else running.
# Needs: specexit models get qwen2.5-coder-0.5b --install; specexit models get smollm2-135m --install;
# specexit models get qwen2.5-coder-0.5b-think
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/floor}
mkdir -p "$out"
run() { name=$1; shift; python benchmarks/floor.py "$@" --out "$out/$name.json" > /dev/null; echo "wrote $out/$name.json"; }
run testbed --model testbed --trees "chain:4;16,5,4;60,6,10" --prompts 4 --new-tokens 192 --repeats 3
# a 2M-parameter model runs faster on one thread (no sync per tiny matmul): the demo's setting
run testbed-1thread --model testbed --threads 1 --trees "chain:4;16,5,4;60,6,10" --prompts 4 --new-tokens 192 --repeats 3
run qwen0.5b-bf16 --model qwen2.5-coder-0.5b --dtype bfloat16 --prompts 3 --new-tokens 128
run qwen0.5b-bf16-forced --model qwen2.5-coder-0.5b --dtype bfloat16 --accept forced --prompts 3 --new-tokens 128
run smollm2-bf16 --model smollm2-135m --dtype bfloat16 --prompts 3 --new-tokens 128
run smollm2-bf16-forced --model smollm2-135m --dtype bfloat16 --accept forced --prompts 3 --new-tokens 128
run smollm2-bf16-forced-ctx2k --model smollm2-135m --dtype bfloat16 --accept forced --context 2048 --prompts 2 --new-tokens 96
run qwen0.5b-bf16-forced-ctx2k --model qwen2.5-coder-0.5b --dtype bfloat16 --accept forced --context 2048 --prompts 2 --new-tokens 96
# SmolLM2 ships no draft: its stand-in has the shipped drafts' 4,096-token draft vocabulary; with EAGLE-3's usual
# 32,000 the draft head alone reads 37 MB a step (what that costs the round)
run smollm2-bf16-forced-ctx2k-vocab32k --model smollm2-135m --dtype bfloat16 --accept forced --context 2048 --prompts 2 \
    --new-tokens 96 --draft-vocab 32000
# ... and with a draft MLP sized as the shipped Qwen2.5-0.5B drafts' (1,024 wide for a hidden size of 896; the
# target's 1,536 by default): what a narrower draft saves of the round at 2k
run smollm2-bf16-forced-ctx2k-mlp640 --model smollm2-135m --dtype bfloat16 --accept forced --context 2048 --prompts 2 \
    --new-tokens 96 --draft-intermediate 640
# the thinking model of docs/reasoner.md with its shipped draft (needs specexit models get qwen2.5-coder-0.5b-think)
run qwen0.5b-think-bf16 --model "$(specexit models get qwen2.5-coder-0.5b-think | tail -1)" --dtype bfloat16 --prompts 3 \
    --new-tokens 128 --repeats 1
# ... and on the held-out problems its draft was made for (the prompt file of benchmarks/reasoner/evaluate.sh)
run qwen0.5b-think-bf16-heldout --model "$(specexit models get qwen2.5-coder-0.5b-think | tail -1)" --dtype bfloat16 \
    --dataset runs/think-eval/heldout.jsonl --prompts 3 --new-tokens 128 --repeats 1
python benchmarks/summarize_floor.py "$out"
