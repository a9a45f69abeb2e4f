"""Charts as inline SVG: a panel's series as polylines on a shared time axis. Pure.

Drawn on the server, so a page shows its charts without JavaScript; the page's script
only swaps in fresh ones. Every text is escaped; sizes are fixed (the CSS scales them).
"""

from __future__ import annotations

import html

from modelport.console.series import Panel

WIDTH, HEIGHT = 420, 150
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 22
COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c")


def chart(panel: Panel) -> str:
    """An ``<svg>`` of ``panel`` (a note instead when it has no points)."""
    points = [p for s in panel.series for p in s.points]
    title = html.escape(panel.title)
    if not points:
        return (
            f'<figure class="chart" data-panel="{html.escape(panel.key)}"><figcaption>{title}'
            '</figcaption><p class="empty">no data yet</p></figure>'
        )
    t0 = min(t for t, _ in points)
    t1 = max(t for t, _ in points)
    top = max(v for _, v in points)
    top = top * 1.1 if top > 0 else 1.0
    span = max(t1 - t0, 1e-9)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + (t - t0) / span * plot_w if t1 > t0 else LEFT + plot_w

    def y(v: float) -> float:
        return TOP + plot_h - v / top * plot_h

    lines = []
    legend = []
    for i, series in enumerate(panel.series):
        color = COLORS[i % len(COLORS)]
        if series.points:
            coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in series.points)
            shape = "polyline" if len(series.points) > 1 else "circle"
            if shape == "polyline":
                lines.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>'
                )
            else:
                cx, cy = coords.split(",")
                lines.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{color}"/>')
        legend.append(
            f'<span class="key"><i style="background:{color}"></i>{html.escape(series.name)}</span>'
        )
    seconds = t1 - t0
    since = f"-{round(seconds / 60)} min" if seconds >= 120 else f"-{round(seconds)} s"
    axis = (
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" '
        'stroke="#9ca3af"/>'
        f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">{_number(top)}</text>'
        f'<text x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end">0</text>'
        f'<text x="{LEFT}" y="{HEIGHT - 6}">{since}</text>'
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end">now</text>'
    )
    return (
        f'<figure class="chart" data-panel="{html.escape(panel.key)}"><figcaption>{title} '
        f"<small>({html.escape(panel.unit)})</small></figcaption>"
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{title}">'
        f"{axis}{''.join(lines)}</svg>"
        f'<div class="legend">{"".join(legend)}</div></figure>'
    )


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return f"{value:.3g}"
