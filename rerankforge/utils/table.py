"""Readable terminal tables (rich) for metric reports."""

from __future__ import annotations

from collections.abc import Mapping


def metrics_table(rows: Mapping[str, Mapping[str, float]], title: str | None = None) -> None:
    """Print ``{row name: {metric: value}}`` with one column per metric, best value in bold."""
    from rich.console import Console
    from rich.table import Table

    metrics: list[str] = []
    for values in rows.values():
        metrics += [m for m in values if m not in metrics]
    table = Table(title=title)
    table.add_column("run")
    for m in metrics:
        table.add_column(m, justify="right")
    best = {m: max((v[m] for v in rows.values() if m in v), default=None) for m in metrics}
    for name, values in rows.items():
        cells = []
        for m in metrics:
            v = values.get(m)
            if v is None:
                cells.append("-")
            else:
                text = f"{v:.4f}" if isinstance(v, float) else str(v)
                cells.append(f"[bold]{text}[/bold]" if len(rows) > 1 and v == best[m] else text)
        table.add_row(name, *cells)
    Console().print(table)
