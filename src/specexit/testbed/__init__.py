"""The testbed "overthinker": a small Qwen3 trained here on synthetic arithmetic reasoning traces.

No real ``<think>``-emitting reasoning model can be installed offline, so SpecExit's claims are measured
on this one, which is honestly a testbed: it imitates how reasoning models overthink (a first pass, then
redundant "Wait, let me double-check." re-checks that sometimes fix a slip) on problems it can learn.

Modules: ``problems`` (seeded problems and traces), ``tokenizer`` (BPE + chat template), ``train``
(resumable training to a Hugging Face folder), ``evaluate`` (accuracy, re-checks, forced-exit probes),
``cli`` (``specexit testbed data | train | eval``).
"""
