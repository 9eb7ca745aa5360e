"""The throughput chart as SVG geometry (rendered server-side: no chart library to ship)."""

from __future__ import annotations

from typing import Any

#: colour-blind-safe palette (Okabe-Ito), cycled over job types
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000")
WIDTH, HEIGHT, LEFT, BOTTOM = 900, 200, 30, 18


def stacked_bars(throughput: dict[str, Any], labels: list[str] | None = None) -> dict[str, Any]:
    """Bars of jobs finished per slot (a minute, or a day with `labels`, one per slot), stacked
    by job type: ``{width, height, bars: [{x, y, w, h, color, title}], legend: [{name, color,
    total}], max, empty}``."""
    minutes = throughput["minutes"]
    series = throughput["series"]
    per_minute = [sum(s[i] for s in series.values()) for i in range(minutes)]
    peak = max(per_minute, default=0) or 1
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - BOTTOM
    slot = plot_w / minutes
    bars = []
    colors = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(series)}
    for i in range(minutes):
        y = plot_h
        when = labels[i] if labels else f"{minutes - i - 1} min ago"
        for name, counts in series.items():
            n = counts[i]
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            bars.append(
                {
                    "x": round(LEFT + i * slot + 0.5, 2),
                    "y": round(y, 2),
                    "w": round(max(slot - 1, 1), 2),
                    "h": round(h, 2),
                    "color": colors[name],
                    "title": f"{name}: {n} finished, {when}",
                }
            )
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "plot_h": plot_h,
        "bars": bars,
        "max": max(per_minute, default=0),
        "legend": [
            {"name": n, "color": colors[n], "total": sum(counts)} for n, counts in series.items()
        ],
        "empty": not any(per_minute),
    }
