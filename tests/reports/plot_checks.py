"""What a legible plot is, as a test can check it: the texts a figure draws, and which of them overlap."""

from __future__ import annotations

import matplotlib.text


def drawn_texts(fig) -> list[matplotlib.text.Text]:
    """The texts a figure draws: every visible non-empty Text, tick labels only for ticks inside the view."""
    fig.canvas.draw()
    tick_labels, out = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            tol = 1e-9 * max(abs(lo), abs(hi), 1e-300)
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                for label in (tick.label1, tick.label2):
                    tick_labels.add(id(label))
                    if tick.get_visible() and label.get_visible() and label.get_text() and lo - tol <= tick.get_loc() <= hi + tol:
                        out.append(label)
    out += [t for t in fig.findobj(matplotlib.text.Text)
            if id(t) not in tick_labels and t.get_visible() and t.get_text().strip()]
    return out


def overlapping_texts(fig) -> list[tuple[str, str]]:
    """Pairs of drawn texts whose boxes overlap by more than a pixel (a legible plot has none)."""
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer).padded(-1)) for t in drawn_texts(fig)]
    return [(a, b) for i, (a, ba) in enumerate(boxes) for (b, bb) in boxes[i + 1:] if ba.overlaps(bb)]
