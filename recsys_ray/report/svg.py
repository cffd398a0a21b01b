"""A few SVG building blocks for the report's charts: scales, ticks, number formats, elements.

The charts are inline SVG styled by the page's style sheet (class names), so
they reference no fonts, images or scripts. Every text goes through `escape`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape as _escape


def escape(text: object) -> str:
    """Text safe inside SVG/HTML elements and quoted attributes."""
    return _escape(str(text), quote=True)


def attrs(**values: object) -> str:
    """Attributes from keyword arguments (`class_` -> `class`, `_` -> `-`); None values are left out."""
    parts = []
    for key, value in values.items():
        if value is None:
            continue
        name = key.rstrip("_").replace("_", "-")
        parts.append(f'{name}="{escape(_number(value) if isinstance(value, float) else value)}"')
    return " ".join(parts)


def element(tag: str, content: str = "", **values: object) -> str:
    """One element; `content` is markup (escape text before passing it)."""
    attributes = attrs(**values)
    opening = f"<{tag} {attributes}" if attributes else f"<{tag}"
    return f"{opening}>{content}</{tag}>" if content else f"{opening}/>"


def text(x: float, y: float, label: object, **values: object) -> str:
    return element("text", escape(label), x=float(x), y=float(y), **values)


def titled(markup: str, title: str) -> str:
    """Wrap markup in a group whose tooltip is `title`."""
    return f"<g><title>{escape(title)}</title>{markup}</g>"


def svg(width: int, height: int, content: str, label: str) -> str:
    """An inline SVG that scales to its container's width (no namespace needed inside HTML)."""
    return (f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" '
            f'preserveAspectRatio="xMidYMid meet">{content}</svg>')


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if math.isfinite(value) else "0"


@dataclass(frozen=True)
class Linear:
    """Maps [d0, d1] onto [r0, r1]."""

    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, value: float) -> float:
        span = self.d1 - self.d0
        return self.r0 + (value - self.d0) / span * (self.r1 - self.r0) if span else (self.r0 + self.r1) / 2


@dataclass(frozen=True)
class Log10:
    """Maps [d0, d1] (both > 0) onto [r0, r1] on a log scale."""

    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, value: float) -> float:
        lo, hi = math.log10(self.d0), math.log10(self.d1)
        return self.r0 + (math.log10(value) - lo) / (hi - lo) * (self.r1 - self.r0) if hi > lo else self.r0


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 2.5 or 5 times a power of ten apart)."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def compact(value: float) -> str:
    """A short number for axes: 950, 1.2k, 3.4M, 0.25, 1e-05."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.3g}{suffix}"
    if magnitude >= 1:
        return f"{value:.3g}" if magnitude < 1000 else f"{value:.0f}"
    if magnitude >= 1e-3:
        return f"{value:.3g}"
    return f"{value:.0e}"


def grouped(value: int | float) -> str:
    """An exact count with thousands separators."""
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def percent(share: float, digits: int = 1) -> str:
    """A share as a percentage; a share that rounds to 0 but is not 0 shows as "<0.1%"."""
    if 0 < share < 0.5 * 10 ** -(digits + 2):
        return f"<{10 ** -digits:g}%"
    return f"{share * 100:.{digits}f}%"


def text_width(label: str, size: float = 11) -> float:
    """Rough rendered width of `label` in a sans-serif font of `size` px."""
    return len(label) * size * 0.58
