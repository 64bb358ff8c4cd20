"""Plots of the testbed's overthinking from a ``specexit testbed eval --report FILE`` JSON report.

    python benchmarks/plot_testbed.py REPORT.json OUT_DIR

Writes ``thinking_length.png`` (thinking tokens per completion, greedy and sampled) and
``first_right.png`` (on greedy traces: the share of the thinking written before a forced answer is
first correct — everything after it is what a perfect exit policy saves).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(report_path: str, out_dir: str) -> None:
    r = json.loads(Path(report_path).read_text())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, label in (("think_greedy", "greedy"), ("think_sampled", f"sampled, T={r['temperature']}")):
        each = r.get(name, {}).get("thinking_tokens_each")
        if each:
            ax.hist(each, bins=30, alpha=0.6, label=f"{label} (mean {sum(each) / len(each):.0f})")
    ax.set_xlabel("thinking tokens per completion")
    ax.set_ylabel("completions")
    ax.set_title(f"Testbed thinking length ({r['n']} held-out problems)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "thinking_length.png", dpi=110)
    plt.close(fig)

    probes = r.get("exit_probes", {})
    fracs = [f for f in probes.get("first_right_fraction_each", []) if f is not None]
    if fracs:
        never = sum(f is None for f in probes["first_right_fraction_each"])
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist(fracs, bins=20, range=(0, 1), color="tab:green")
        ax.set_xlabel("share of the thinking written before the forced answer is first right")
        ax.set_ylabel("greedy traces")
        mean = sum(fracs) / len(fracs)
        ax.set_title(f"Where the answer first becomes right (mean {mean:.2f}; never right: {never})")
        fig.tight_layout()
        fig.savefig(out / "first_right.png", dpi=110)
        plt.close(fig)
    print(f"wrote plots to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
