"""The report's charts: pure functions from summaries to inline SVG markup.

Each function takes summary values (from `recsys_ray.report.summaries`) and
returns one `<svg>` element sized by a viewBox; the page's style sheet gives
the classes (`axis`, `grid`, `label`, ...) their look.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa

from recsys_ray import schemas
from recsys_ray.report import summaries as s
from recsys_ray.report.svg import (Linear, Log10, compact, element, escape, grouped, nice_ticks, percent, svg, text,
                                   text_width, titled)

TYPE_COLORS = {"view": "#9aa9c2", "click": "#3b73d9", "like": "#9b5de5", "add_to_cart": "#f2a541",
               "purchase": "#2a9d6f"}
OTHER_COLOR = "#c2c2c2"
TRAIN_COLOR = "#3b73d9"
TEST_COLOR = "#e8743b"
NEGATIVE_COLOR = "#a9bfe8"
ACCENT = "#3b73d9"
MUTED = "#b8c0cc"
FLAG_COLORS = {"ok": "#2a9d6f", "moderate": "#f2a541", "major": "#d6453d"}

WIDTH = 760
_EPOCH = date(1970, 1, 1)


def _frame(height: int, left: float, right: float = 16, top: float = 16, bottom: float = 36):
    return left, WIDTH - right, top, height - bottom


def _y_axis(ticks: list[float], y, x0: float, x1: float, fmt=compact) -> str:
    parts = []
    for tick in ticks:
        yy = y(tick)
        parts.append(element("line", x1=x0, x2=x1, y1=yy, y2=yy, class_="grid"))
        parts.append(text(x0 - 6, yy + 4, fmt(tick), class_="tick", text_anchor="end"))
    return "".join(parts)


def _legend(entries: list[tuple[str, str]], x: float, y: float) -> str:
    parts = []
    for label, color in entries:
        parts.append(element("rect", x=x, y=y - 9, width=10, height=10, rx=2, fill=color))
        parts.append(text(x + 14, y, label, class_="legend"))
        x += 14 + text_width(label, 11) + 16
    return "".join(parts)


def _empty(message: str, label: str, height: int = 120) -> str:
    return svg(WIDTH, height, text(WIDTH / 2, height / 2, message, class_="empty", text_anchor="middle"), label)


# ------------------------------------------------------------- 1 activity


def daily_activity(daily: pa.Table | None, cutoff: datetime | None, split_strategy: str) -> str:
    """Events per day, stacked by interaction type, with train/test shading and the cutoff line."""
    label = "Events per day by interaction type"
    if daily is None or daily.num_rows == 0:
        return _empty("No daily counts in this version (summaries/daily.parquet is written by newer builds).", label)
    days = np.asarray([(d - _EPOCH).days for d in daily.column("day").to_pylist()], dtype=np.int64)
    first, last = int(days.min()), int(days.max())
    span = last - first + 1
    present = sorted(set(daily.column("interaction_type").to_pylist()))
    types = [t for t in schemas.INTERACTION_TYPES if t in present] + [t for t in present
                                                                       if t not in schemas.INTERACTION_TYPES]
    counts = np.zeros((len(types), span), dtype=np.int64)
    type_index = {t: i for i, t in enumerate(types)}
    rows = np.asarray([type_index[t] for t in daily.column("interaction_type").to_pylist()])
    np.add.at(counts, (rows, days - first), daily.column("count").to_numpy())
    stacked = np.cumsum(counts, axis=0)
    height = 300
    x0, x1, y0, y1 = _frame(height, left=56, top=34, bottom=40)
    x = Linear(first, last + 1, x0, x1)
    y_ticks = nice_ticks(0, float(stacked[-1].max() or 1), 5)
    y = Linear(0, y_ticks[-1], y1, y0)
    parts = []
    if cutoff is not None and split_strategy == "time":
        cut_day = (cutoff - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(days=1)
        cx = min(max(x(cut_day), x0), x1)
        parts.append(element("rect", x=x0, y=y0, width=cx - x0, height=y1 - y0, fill=TRAIN_COLOR, opacity=0.06))
        parts.append(element("rect", x=cx, y=y0, width=x1 - cx, height=y1 - y0, fill=TEST_COLOR, opacity=0.09))
        parts.append(text(x0 + 6, y0 + 14, "train", class_="region", fill=TRAIN_COLOR))
        parts.append(text(x1 - 6, y0 + 14, "test", class_="region", fill=TEST_COLOR, text_anchor="end"))
    parts.append(_y_axis(y_ticks, y, x0, x1))
    centres = [x(first + i + 0.5) for i in range(span)]
    for i in range(len(types) - 1, -1, -1):
        top = [(cx, y(v)) for cx, v in zip(centres, stacked[i])]
        below = stacked[i - 1] if i else np.zeros(span)
        bottom = [(cx, y(v)) for cx, v in zip(centres, below)][::-1]
        if span == 1:  # one day: a bar instead of an area
            top = [(x0, top[0][1]), (x1, top[0][1])]
            bottom = [(x1, bottom[0][1]), (x0, bottom[0][1])]
        points = " ".join(f"{px:.1f},{py:.1f}" for px, py in top + bottom)
        color = TYPE_COLORS.get(types[i], OTHER_COLOR)
        parts.append(titled(element("polygon", points=points, fill=color, class_="area"),
                            f"{types[i]}: {grouped(int(counts[i].sum()))} events"))
    for tick_day in _date_ticks(first, last + 1):
        tx = x(tick_day)
        parts.append(element("line", x1=tx, x2=tx, y1=y1, y2=y1 + 4, class_="axis"))
        parts.append(text(tx, y1 + 17, (_EPOCH + timedelta(days=tick_day)).isoformat(), class_="tick",
                          text_anchor="middle"))
    parts.append(element("line", x1=x0, x2=x1, y1=y1, y2=y1, class_="axis"))
    if cutoff is not None and split_strategy == "time":
        parts.append(element("line", x1=cx, x2=cx, y1=y0 - 4, y2=y1, class_="cutoff"))
        label_text = f"cutoff {cutoff.strftime('%Y-%m-%d %H:%M')} UTC"
        anchor = "end" if cx > x0 + (x1 - x0) * 0.6 else "start"
        parts.append(text(cx + (-6 if anchor == "end" else 6), y0 + 30, label_text, class_="cutoff-label",
                          text_anchor=anchor))
    totals = counts.sum(axis=1)
    parts.append(_legend([(f"{t} {compact(int(n))}", TYPE_COLORS.get(t, OTHER_COLOR)) for t, n in zip(types, totals)],
                         x0, 16))
    return svg(WIDTH, height, "".join(parts), label)


def _date_ticks(first: int, end: int) -> list[int]:
    """Day numbers of round dates across [first, end): every day or two, Mondays, or month starts."""
    span = end - first
    for step in (1, 2, 7, 14):
        if span / step <= 8:
            start = first if step < 7 else first + (4 - first) % 7  # day 4 (1970-01-05) was a Monday
            return list(range(start, end, step))
    months = next((m for m in (1, 2, 3, 6, 12, 24, 60) if span / (30.4 * m) <= 8), 120)
    start = _EPOCH + timedelta(days=first)
    index = start.year * 12 + start.month - 1 + (start.day > 1)
    index += -index % months
    ticks = []
    while True:
        year, month = divmod(index, 12)
        day = (date(year, month + 1, 1) - _EPOCH).days
        if day >= end:
            return ticks
        ticks.append(day)
        index += months


# ------------------------------------------------ horizontal bars (shared)


def _horizontal_bars(rows: list[tuple[str, list[tuple[float, str, str]]]], label: str, fmt=compact,
                     domain_max: float | None = None, markers: list[tuple[float, str, str]] = (),
                     value_labels: list[str] | None = None, bar_height: int = 20, tick_fmt=None) -> str:
    """One bar per row, made of stacked segments (value, color, tooltip); optional vertical markers."""
    left = max([text_width(name, 12) for name, _ in rows] + [40]) + 18
    right = max([text_width(v, 11.5) for v in (value_labels or [])] + [60]) + 24
    height = 28 + len(rows) * (bar_height + 10) + 26
    x0, x1, y0, y1 = left, WIDTH - right, 12, height - 26
    largest = domain_max if domain_max is not None else max([sum(v for v, *_ in segs) for _, segs in rows] + [0])
    ticks = nice_ticks(0, float(largest) or 1.0, 5) if domain_max is None else nice_ticks(0, domain_max, 4)
    x = Linear(0, ticks[-1], x0, x1)
    parts = []
    for tick in ticks:
        parts.append(element("line", x1=x(tick), x2=x(tick), y1=y0, y2=y1, class_="grid"))
        parts.append(text(x(tick), y1 + 16, (tick_fmt or fmt)(tick), class_="tick", text_anchor="middle"))
    for i, (name, segments) in enumerate(rows):
        top = y0 + 8 + i * (bar_height + 10)
        parts.append(text(x0 - 10, top + bar_height / 2 + 4, name, class_="label", text_anchor="end"))
        start = 0.0
        for value, color, title in segments:
            if value > 0 and start < ticks[-1]:
                width = max(x(min(start + value, ticks[-1])) - x(start), 1.0)
                parts.append(titled(element("rect", x=x(start), y=top, width=width, height=bar_height,
                                            fill=color, rx=2), title))
            start += value
        shown = value_labels[i] if value_labels else fmt(start)
        parts.append(text(x(min(start, ticks[-1])) + 6, top + bar_height / 2 + 4, shown, class_="value"))
    for value, color, title in markers:
        parts.append(titled(element("line", x1=x(value), x2=x(value), y1=y0, y2=y1, stroke=color,
                                    class_="marker"), title))
    parts.append(element("line", x1=x0, x2=x0, y1=y0, y2=y1, class_="axis"))
    return svg(WIDTH, height, "".join(parts), label)


# ------------------------------------------------------------- 2 rejected


def rejected_rows(rejected: dict[str, dict[str, int]]) -> str:
    """Rejected rows by reason, one bar per (dataset, reason)."""
    label = "Rejected rows by reason"
    rows = [(f"{reason} ({dataset})" if len(rejected) > 1 else reason,
             [(count, "#d6453d" if dataset == "interactions" else "#f2a541", f"{dataset}: {reason} {count:,}")])
            for dataset, reasons in rejected.items()
            for reason, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])) if count]
    if not rows:
        return _empty("No rejected rows.", label, 60)
    return _horizontal_bars(rows, label, value_labels=[grouped(int(r[1][0][0])) for r in rows])


# ------------------------------------------------------------ 3 long tail


def long_tail(tail: s.LongTail) -> str:
    """Cumulative share of interactions held by the top-ranked items, rank on a log scale."""
    label = "Share of interactions by item rank"
    if tail.keys == 0:
        return _empty("No items with training events.", label)
    height = 300
    x0, x1, y0, y1 = _frame(height, left=56, top=16, bottom=42)
    x = Log10(1, max(tail.keys, 2), x0, x1)
    y = Linear(0, 1, y1, y0)
    parts = [_y_axis([0, 0.25, 0.5, 0.75, 1.0], y, x0, x1, fmt=lambda v: percent(v, 0))]
    power = 1
    while power <= tail.keys:
        parts.append(element("line", x1=x(power), x2=x(power), y1=y0, y2=y1, class_="grid"))
        parts.append(text(x(power), y1 + 16, compact(power), class_="tick", text_anchor="middle"))
        power *= 10
    uniform = np.unique(np.round(np.geomspace(1, tail.keys, 120)))
    parts.append(element("polyline", points=" ".join(f"{x(r):.1f},{y(r / tail.keys):.1f}" for r in uniform),
                         class_="reference"))
    curve = " ".join(f"{x(r):.1f},{y(v):.1f}" for r, v in zip(tail.curve_ranks, tail.curve_shares))
    parts.append(element("polyline", points=curve, class_="curve", stroke=ACCENT))
    for percent_of_items, share in ((1, tail.top_1pct_share), (10, tail.top_10pct_share)):
        rank = max(1, -(-percent_of_items * tail.keys // 100))
        px, py = x(rank), y(share)
        parts.append(element("line", x1=px, x2=px, y1=py, y2=y1, class_="guide"))
        parts.append(titled(element("circle", cx=px, cy=py, r=4.5, fill=ACCENT, class_="dot"),
                            f"top {percent_of_items}% of items ({rank:,}) hold {percent(share)}"))
        parts.append(text(px + 8, py + 14, f"top {percent_of_items}%: {percent(share)}", class_="annotation"))
    parts.append(element("line", x1=x0, x2=x1, y1=y1, y2=y1, class_="axis"))
    parts.append(text((x0 + x1) / 2, height - 6, "item rank (log scale)", class_="axis-title", text_anchor="middle"))
    parts.append(_legend([("top-ranked items", ACCENT), ("if every item were equally popular", MUTED)], x0 + 12, y0 + 12))
    return svg(WIDTH, height, "".join(parts), label)


# ------------------------------------------------------ vertical bars (shared)


def _vertical_bars(categories: list[str], series: list[tuple[str, str, list[float]]], label: str, width: int,
                   height: int, fmt=compact, tick_fmt=compact, axis_title: str | None = None,
                   title: str | None = None) -> str:
    """Grouped vertical bars: one group per category, one bar per series (name, color, values)."""
    top = 30 if title else 12
    x0, x1, y0, y1 = 48, width - 10, top, height - (44 if axis_title else 28)
    largest = max([v for _, _, values in series for v in values] + [0])
    ticks = nice_ticks(0, float(largest) or 1.0, 4)
    y = Linear(0, ticks[-1], y1, y0)
    parts = []
    if title:
        parts.append(text(x0, 18, title, class_="facet-title"))
    for tick in ticks:
        parts.append(element("line", x1=x0, x2=x1, y1=y(tick), y2=y(tick), class_="grid"))
        parts.append(text(x0 - 6, y(tick) + 4, tick_fmt(tick), class_="tick", text_anchor="end"))
    slot = (x1 - x0) / max(len(categories), 1)
    bar = slot * 0.8 / max(len(series), 1)
    font = min(11, slot / max(max((len(c) for c in categories), default=1) * 0.6, 1))
    for i, category in enumerate(categories):
        for j, (name, color, values) in enumerate(series):
            bx = x0 + i * slot + slot * 0.1 + j * bar
            value = values[i]
            parts.append(titled(element("rect", x=bx, y=y(value), width=max(bar - 1, 1), height=y1 - y(value),
                                        fill=color, rx=1.5), f"{category}: {name} {fmt(value)}"))
        parts.append(text(x0 + (i + 0.5) * slot, y1 + 14, category, class_="tick", text_anchor="middle",
                          style=f"font-size:{font:.1f}px"))
    parts.append(element("line", x1=x0, x2=x1, y1=y1, y2=y1, class_="axis"))
    if axis_title:
        parts.append(text((x0 + x1) / 2, height - 8, axis_title, class_="axis-title", text_anchor="middle"))
    return svg(width, height, "".join(parts), label)


# --------------------------------------------------------- 4 user activity


def activity_histogram(histogram: s.Histogram) -> str:
    """Users per bin of their training-window event count (bins double in width)."""
    label = "Users by number of training-window events"
    if len(histogram.counts) == 0:
        return _empty("No users with training events.", label)
    categories = [compact(int(hi)) if hi - lo <= 1 else f"{compact(int(lo) + 1)}–{compact(int(hi))}"
                  for lo, hi in zip(histogram.lows, histogram.highs)]
    categories[0] = "≤1"
    counts = [float(c) for c in histogram.counts]
    return _vertical_bars(categories, [("users", ACCENT, counts)], label, WIDTH, 280,
                          fmt=lambda v: f"{int(v):,} users", axis_title="training-window events per user")


# ------------------------------------------------------------ 5 cold start


def cold_start(cold: s.ColdStart) -> str:
    """Shares of test users, test items and test positives that have no training event."""
    share = s.ColdStart.share
    rows = [
        ("test users with no training event", cold.cold_users, cold.test_users),
        ("test items with no training event", cold.cold_items, cold.test_items),
        ("test positives on cold users", cold.positives_on_cold_users, cold.test_positives),
        ("test positives on cold items", cold.positives_on_cold_items, cold.test_positives),
    ]
    bars = [(name, [(share(part, whole), TEST_COLOR, f"{part:,} of {whole:,}"),
                    (1 - share(part, whole), "#f3f4f7", f"{whole - part:,} of {whole:,} warm")])
            for name, part, whole in rows]
    values = [f"{percent(share(part, whole))}  ({part:,} / {whole:,})" for _, part, whole in rows]
    return _horizontal_bars(bars, "Cold start in the test split", domain_max=1.0, value_labels=values,
                            tick_fmt=lambda v: percent(v, 0))


# ---------------------------------------------------------------- 6 labels


def labels(counts: dict, negatives_per_positive: int) -> str:
    """Positives and negatives per split, with the negatives that could not be drawn."""
    rows, values = [], []
    for split in ("train", "test"):
        positives, negatives = counts.get(f"{split}_positives", 0), counts.get(f"{split}_negatives", 0)
        shortfall = max(positives * negatives_per_positive - negatives, 0)
        rows.append((split, [(positives, TRAIN_COLOR if split == "train" else TEST_COLOR,
                              f"{split} positives {positives:,}"),
                             (negatives, NEGATIVE_COLOR if split == "train" else "#f6c3a8",
                              f"{split} negatives {negatives:,}"),
                             (shortfall, "#d6453d", f"{split} negative shortfall {shortfall:,}")]))
        values.append(f"{positives:,} + {negatives:,}" + (f"  (short {shortfall:,})" if shortfall else ""))
    return _horizontal_bars(rows, "Positives and negatives per split", value_labels=values, bar_height=26)


# -------------------------------------------------------------- 7 features


def _edge_label(value: float) -> str:
    return f"{value:.2g}" if abs(value) < 1000 else compact(float(value))


def feature_bins(shift: s.FeatureShift, reference: str = "train", compared: str = "test",
                 width: int = 372) -> str:
    """One feature's share of rows per reference-quantile bin on both sides (nulls last)."""
    edges = list(shift.edges)
    categories = ([f"≤{_edge_label(e)}" for e in edges] + [f">{_edge_label(edges[-1])}"]) if edges else ["all"]
    categories.append("null")
    ref_total, cmp_total = max(int(shift.reference_counts.sum()), 1), max(int(shift.compared_counts.sum()), 1)
    series = [(reference, TRAIN_COLOR, [c / ref_total for c in shift.reference_counts]),
              (compared, TEST_COLOR, [c / cmp_total for c in shift.compared_counts])]
    return _vertical_bars(categories, series, f"{shift.name}: {reference} vs {compared}", width, 190,
                          fmt=percent, tick_fmt=lambda v: percent(v, 0))


def psi_bars(shifts: list[s.FeatureShift], moderate: float, major: float) -> str:
    """PSI per feature as bars, coloured by the thresholds, with the threshold lines."""
    label = "Population stability index per feature"
    if not shifts:
        return _empty("No features to compare.", label, 60)
    rows = [(f.name, [(f.psi, FLAG_COLORS[psi_flag(f.psi, moderate, major)], f"PSI {f.psi:.4f}")]) for f in shifts]
    # Past 1 every shift is plainly major; longer bars are cut at the axis end (the value label tells).
    largest = max(min(max(f.psi for f in shifts), 1.0), major * 1.2)
    markers = [(moderate, FLAG_COLORS["moderate"], f"moderate shift above {moderate}"),
               (major, FLAG_COLORS["major"], f"major shift above {major}")]
    return _horizontal_bars(rows, label, fmt=lambda v: f"{v:.3f}", domain_max=largest, markers=markers,
                            bar_height=14, tick_fmt=lambda v: f"{v:.2g}")


def psi_flag(value: float, moderate: float, major: float) -> str:
    """"major" above `major`, "moderate" above `moderate`, else "ok"."""
    return "major" if value > major else "moderate" if value > moderate else "ok"


# --------------------------------------------------------------- 8 timings


def stage_timings(timings: dict[str, float]) -> str:
    """Wall time of each build stage, in the order they ran."""
    label = "Build stage timings"
    if not timings:
        return _empty("No stage timings in the manifest.", label, 60)
    rows = [(name, [(float(seconds), ACCENT, f"{name}: {seconds:.2f} s")]) for name, seconds in timings.items()]
    return _horizontal_bars(rows, label, fmt=lambda v: f"{v:.2f} s", bar_height=16,
                            tick_fmt=lambda v: f"{v:g} s")


__all__ = ["daily_activity", "rejected_rows", "long_tail", "activity_histogram", "cold_start", "labels",
           "feature_bins", "psi_bars", "psi_flag", "stage_timings", "escape"]
