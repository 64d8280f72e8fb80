"""The usefulness table as Markdown and as a plot, from :class:`~synthgen.evaluation.utility_stats.UtilityStats`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from synthgen.evaluation.utility_stats import Estimate, UtilityStats


def _ci(e: Estimate, sign: bool = False) -> str:
    f = "{:+.4f}" if sign else "{:.3f}"
    return f"{f.format(e.mean)} [{f.format(e.low)}, {f.format(e.high)}]"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def utility_table(stats: UtilityStats, meta: Mapping[str, Mapping[str, Any]], seeds: Sequence[int]) -> str:
    """Markdown: one row per arm, Dice per class and over classes with 95% intervals and the paired
    difference from the reference arm; under shift, a second table of Dice per shift and the drops.
    ``meta[arm]`` gives its ``augment`` level and ``real_train_samples``."""
    ref = stats.reference
    head = ["arm", "augmentation", "real train samples"]
    head += [f"{c} Dice [95% CI]" for c in (*stats.classes, "mean")]
    head += [f"mean - {ref} [95% CI]"] if ref else []
    lines = [_row(head), "|" + " --- |" * len(head)]
    for arm, s in stats.arms.items():
        cells = [arm, str(meta[arm]["augment"]), str(meta[arm]["real_train_samples"])]
        cells += [_ci(s.dice[c]) for c in (*stats.classes, "mean")]
        if ref:
            cells.append("" if s.diff is None else _ci(s.diff["mean"], sign=True))
        lines.append(_row(cells))
    seeds_text = ", ".join(map(str, seeds))
    lines.append(
        f"\nTest store: {stats.images} images; seeds {seeds_text}. Mean Dice over test images and seeds, 95% "
        f"bootstrap interval ({stats.resamples} resamples of seeds and images); differences paired by seed "
        "and image."
    )
    if stats.shifts:
        head = ["arm", "unshifted", *stats.shifts, "mean drop [95% CI]"]
        head += [f"mean drop - {ref}'s [95% CI]"] if ref else []
        lines += ["", _row(head), "|" + " --- |" * len(head)]
        for arm, s in stats.arms.items():
            cells = [arm, _ci(s.dice["mean"])]
            cells += [f"{_ci(s.shifts[n].dice)} (drop {s.shifts[n].drop.mean:+.3f})" for n in stats.shifts]
            cells.append(_ci(s.mean_drop, sign=True))
            if ref:
                cells.append("" if s.mean_drop_diff is None else _ci(s.mean_drop_diff, sign=True))
            lines.append(_row(cells))
        lines.append(
            "\nUnder acquisition shift: Dice (mean over classes) of the same test images shifted alike for "
            "every arm; drop = unshifted - shifted, paired by seed and image."
        )
    return "\n".join(lines)


def utility_plot(stats: UtilityStats, path: str | Path) -> None:
    """A PNG: Dice per arm (each class and the mean over classes) with 95% intervals; under shift, a second
    panel with each arm's mean drop and its interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(stats.arms)
    series = [*stats.classes, "mean"]
    panels = 2 if stats.shifts else 1
    fig, axes = plt.subplots(1, panels, figsize=(4 + 1.1 * len(arms) * panels, 4.5), squeeze=False)
    ax = axes[0, 0]
    width = 0.8 / len(series)
    for k, name in enumerate(series):
        est = [stats.arms[a].dice[name] for a in arms]
        x = [i - 0.4 + width * (k + 0.5) for i in range(len(arms))]
        ax.errorbar(
            x,
            [e.mean for e in est],
            yerr=[[e.mean - e.low for e in est], [e.high - e.mean for e in est]],
            fmt="o" if name != "mean" else "s",
            capsize=3,
            label=name,
        )
    ax.set(ylabel="Dice", title=f"Dice on {stats.images} test images, {stats.seeds} seeds (95% CI)")
    ax.legend(fontsize=8)
    panel_axes = [ax]
    if stats.shifts:
        drop_ax = axes[0, 1]
        est = [stats.arms[a].mean_drop for a in arms]
        drop_ax.errorbar(
            range(len(arms)),
            [e.mean for e in est],
            yerr=[[e.mean - e.low for e in est], [e.high - e.mean for e in est]],
            fmt="o",
            capsize=3,
        )
        drop_ax.set(ylabel="Dice drop", title=f"mean drop under {len(stats.shifts)} shifts (95% CI)")
        panel_axes.append(drop_ax)
    for a in panel_axes:
        a.set_xticks(range(len(arms)), arms, rotation=30, ha="right", fontsize=8)
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
