"""The house style of the PNG charts in artifacts and reports (matplotlib, Agg backend: no display,
imported only when a chart is drawn): a 6.4 x 2.6 in figure at 80 dpi, a small left-aligned title,
a light grid, the legend top left, dates slanted."""

from __future__ import annotations

import io


def figure():
    """A new figure and its one axes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 2.6), dpi=80)
    return fig, fig.add_subplot()


def finish(fig, ax, title: str, unit: str = "") -> bytes:
    """Title, axis label, grid and legend applied; the PNG's bytes."""
    ax.set_title(title, fontsize=9, loc="left")
    if unit:
        ax.set_ylabel(unit, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
