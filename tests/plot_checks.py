"""Reading a drawn matplotlib figure: which texts it shows and whether any two of them overlap."""

from __future__ import annotations

import itertools

from matplotlib.text import Text


def drawn_texts(figure) -> list[Text]:
    """Every non-empty visible text the figure draws: tick labels (major and minor, in view) and the rest."""
    tick_labels, shown = set(), []
    for axes in figure.axes:
        for axis in (axes.xaxis, axes.yaxis):
            low, high = sorted(axis.get_view_interval())
            slack = 1e-9 * (high - low)
            for ticks, locations in ((axis.get_major_ticks(), axis.get_majorticklocs()),
                                     (axis.get_minor_ticks(), axis.get_minorticklocs())):
                for tick, location in zip(ticks, locations):
                    for label in (tick.label1, tick.label2):
                        tick_labels.add(id(label))
                        if (axes.get_visible() and tick.get_visible() and label.get_visible()
                                and label.get_text().strip() and low - slack <= location <= high + slack):
                            shown.append(label)
    for text in figure.findobj(Text):
        if id(text) in tick_labels or not text.get_visible() or not text.get_text().strip():
            continue
        if text.axes is None or text.axes.get_visible():
            shown.append(text)
    return shown


def overlapping_texts(figure) -> list[tuple[str, str]]:
    """Pairs of drawn texts whose boxes overlap (by more than touching), by their strings."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    placed = [(text.get_text(), text.get_window_extent(renderer)) for text in drawn_texts(figure)]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(placed, 2) if _overlap(box_a, box_b) > 0.5]


def _overlap(box_a, box_b) -> float:
    """Shared area in square pixels."""
    width = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
    height = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
    return max(width, 0.0) * max(height, 0.0)
