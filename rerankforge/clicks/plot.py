"""Propensity-curve plot (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rerankforge.utils.io import save_figure


def plot_propensities(path: str | Path, estimated: Sequence[float],
                      ci: tuple[Sequence[float], Sequence[float]] | None = None,
                      true: Sequence[float] | None = None, extra: dict[str, Sequence[float]] | None = None,
                      title: str = "Position bias", confidence: float | None = None,
                      label: str = "PBM (EM)") -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    ranks = list(range(1, len(estimated) + 1))
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    try:
        if ci is not None:
            ci_label = f"{round(100 * confidence)}% bootstrap CI" if confidence else "bootstrap CI"
            ax.fill_between(ranks, ci[0], ci[1], alpha=0.25, color="C0", label=ci_label)
        ax.plot(ranks, estimated, "o-", color="C0", label=label)
        if true is not None:
            ax.plot(ranks[: len(true)], list(true)[: len(ranks)], "k--", label="true (simulated)")
        for i, (name, values) in enumerate((extra or {}).items(), start=1):
            ax.plot(ranks[: len(values)], list(values)[: len(ranks)], "s:", color=f"C{i}", label=name)
        ax.set_xlabel("rank")
        ax.set_ylabel("propensity (rank 1 = 1)")
        ax.set_xticks(ranks)
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
