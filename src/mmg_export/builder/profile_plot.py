"""``mmg-export profile --plot``: the latency of every row as a PNG (needs matplotlib)."""
from __future__ import annotations

from pathlib import Path

from .profile_harness import Measurement


def plot_latency(measurements: list[Measurement], path: Path, title: str) -> Path:
    """PNG: a box per row (whiskers min to p99); with several ratios, the pruner and prefill against ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_ratio = {c: [m for m in measurements if m.component == c and m.ratio is not None] for c in ("pruner", "prefill")}
    several = len(by_ratio["pruner"]) > 1
    widths = [max(6.0, 0.5 * len(measurements))] + ([6.0] if several else [])
    figure, axes = plt.subplots(1, len(widths), figsize=(sum(widths), 5), squeeze=False,
                                gridspec_kw={"width_ratios": widths})
    spread = axes[0][0]
    spread.boxplot([m.times_ms for m in measurements], whis=(0, 99))
    spread.set_xticks(range(1, len(measurements) + 1), [m.label() for m in measurements], rotation=45,
                      ha="right", fontsize=8)
    spread.set_yscale("log")
    spread.set_ylabel("latency (ms), log scale")
    spread.set_title("spread per component (box: quartiles, whiskers: min to p99)", fontsize=9)
    if several:
        against = axes[0][1]
        for component, rows in by_ratio.items():
            if rows:
                medians = [m.statistics()["median"] for m in rows]
                low = [median - m.statistics()["min"] for m, median in zip(rows, medians)]
                high = [m.statistics()["p99"] - median for m, median in zip(rows, medians)]
                against.errorbar([m.ratio for m in rows], medians, yerr=[low, high], marker="o", capsize=3,
                                 label=f"{component} (median, min to p99)")
        against.set_yscale("log")
        against.set_xlabel("kept ratio")
        against.set_ylabel("latency (ms), log scale")
        against.set_title("against the pruning ratio", fontsize=9)
        against.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
