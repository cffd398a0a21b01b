"""The report page: one self-contained HTML document from a version's summary.

No scripts, no external styles, fonts or images: the style sheet is inline,
charts are inline SVG, tooltips are SVG titles. Every value that comes from the
data (ids, quarantined originals, paths) is HTML-escaped.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from recsys_ray.config import ReportConfig
from recsys_ray.report import charts
from recsys_ray.report import summaries as s
from recsys_ray.report.svg import escape, grouped, percent

ORIGINAL_CHARS = 160

STYLE = """
:root { --ink:#1d2433; --muted:#5d6778; --faint:#8a93a3; --line:#e3e7ee; --bg:#f4f6f9; --card:#fff;
        --accent:#3b73d9; --train:#3b73d9; --test:#e8743b; --ok:#2a9d6f; --moderate:#c98410; --major:#d6453d; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Liberation Sans",
       "DejaVu Sans", sans-serif; }
main { max-width: 1040px; margin: 0 auto; padding: 28px 24px 48px; }
header.top { margin-bottom: 18px; }
.eyebrow { text-transform: uppercase; letter-spacing: .08em; font-size: 11px; color: var(--faint); font-weight: 600; }
h1 { font-size: 26px; margin: 2px 0 8px; font-weight: 650; }
h1 .tenant { font-size: 15px; color: var(--muted); font-weight: 500; margin-left: 8px; }
dl.meta { display:flex; flex-wrap:wrap; gap: 4px 22px; margin:0; color:var(--muted); font-size:13px; }
dl.meta div { display:flex; gap:6px; } dl.meta dt { color:var(--faint); } dl.meta dd { margin:0; }
dl.meta code { font-size: 12px; }
nav.toc { display:flex; flex-wrap:wrap; gap:6px; margin: 14px 0 18px; }
nav.toc a { font-size:12px; color:var(--muted); text-decoration:none; padding:3px 9px; border:1px solid var(--line);
            border-radius: 999px; background: var(--card); }
.tiles { display:grid; grid-template-columns: repeat(6, 1fr); gap: 10px; margin-bottom: 18px; }
.tile { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:10px 12px; }
.tile-label { font-size:11px; color:var(--faint); text-transform:uppercase; letter-spacing:.05em; font-weight:600; }
.tile-value { font-size:20px; font-weight:650; font-variant-numeric: tabular-nums; white-space:nowrap; }
.tile-value.small { font-size:15px; padding-top:4px; }
.tile-note { font-size:12px; color:var(--muted); }
.tile.train { border-top: 3px solid var(--train); } .tile.test { border-top: 3px solid var(--test); }
.tile.bad { border-top: 3px solid var(--major); }
.notes { background:var(--card); border:1px solid var(--line); border-left:4px solid var(--moderate);
         border-radius:10px; padding:10px 16px; margin-bottom:18px; }
.notes.clear { border-left-color: var(--ok); }
.notes h2 { font-size:14px; margin:0 0 4px; } .notes ul { margin:0; padding-left:18px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:12px; padding:18px 22px 16px;
        margin-bottom:18px; }
.card h2 { font-size:17px; margin:0 0 2px; font-weight:650; }
.card h2 .num { color:var(--faint); font-weight:600; margin-right:6px; }
.card h3 { font-size:14px; margin:14px 0 6px; }
.lede { color:var(--muted); margin: 0 0 10px; font-size:13px; }
.chart svg { width:100%; max-width: 880px; height:auto; display:block; margin: 4px auto 0; }
.facets { display:grid; grid-template-columns: 1fr 1fr; gap: 6px 18px; }
.facets svg { max-width: none; }
.facet-head { display:flex; justify-content:space-between; align-items:baseline; font-size:13px; margin-top:8px;
              padding: 0 4px 0 48px; color: var(--muted); }
.facet-head > b { color: var(--ink); font-weight:650; }
.key { display:flex; gap:18px; font-size:12px; color:var(--muted); }
.key i { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:6px; }
.stats { display:flex; flex-wrap:wrap; gap: 6px 26px; margin-top: 8px; font-size:13px; color:var(--muted); }
.stats b { color:var(--ink); font-variant-numeric: tabular-nums; font-weight:600; }
table { border-collapse: collapse; width:100%; font-size:12.5px; margin-top:6px; }
th { text-align:left; color:var(--faint); font-weight:600; font-size:11px; text-transform:uppercase;
     letter-spacing:.04em; border-bottom:1px solid var(--line); padding:6px 8px; }
td { border-bottom:1px solid var(--line); padding:6px 8px; vertical-align:top; }
table.samples { table-layout: fixed; } tr.group td { background:#f8f9fb; padding-top:8px; }
td.num, th.num { text-align:right; font-variant-numeric: tabular-nums; white-space:nowrap; }
td code, .original { font: 12px/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono",
                      "DejaVu Sans Mono", monospace; word-break: break-all; }
.original { color:#3a4356; background:#f6f7fa; border-radius:4px; padding:2px 5px; display:inline-block; }
.reason { font-weight:600; white-space:nowrap; }
.flag { font-size:11px; font-weight:650; padding:1px 7px; border-radius:999px; white-space:nowrap; }
.flag.ok { color:var(--ok); background:#e6f4ee; } .flag.moderate { color:var(--moderate); background:#fbf1dd; }
.flag.major { color:var(--major); background:#fbe7e5; }
.muted { color:var(--faint); }
footer { color:var(--faint); font-size:12px; margin-top:24px; }
svg text { font-family: inherit; fill: var(--ink); }
svg .tick { font-size:11px; fill: var(--muted); } svg .label { font-size:12px; }
svg .value { font-size:11.5px; fill: var(--muted); font-variant-numeric: tabular-nums; }
svg .legend { font-size:11.5px; fill: var(--muted); } svg .region { font-size:12px; font-weight:650; }
svg .facet-title { font-size:12.5px; font-weight:650; } svg .axis-title { font-size:11.5px; fill: var(--faint); }
svg .annotation { font-size:12px; font-weight:600; fill: var(--accent); }
svg .empty { font-size:13px; fill: var(--faint); }
svg .grid { stroke:#edf0f4; stroke-width:1; } svg .axis { stroke:#9aa3b2; stroke-width:1; }
svg .area { stroke:#fff; stroke-width:.6; }
svg .cutoff { stroke: var(--ink); stroke-width:1.5; stroke-dasharray: 5 4; }
svg .cutoff-label { font-size:12px; font-weight:600; }
svg .curve { fill:none; stroke-width:2.5; } svg .reference { fill:none; stroke:#b8c0cc; stroke-width:1.5;
             stroke-dasharray: 4 4; }
svg .guide { stroke: var(--accent); stroke-width:1; stroke-dasharray: 2 3; opacity:.7; }
svg .dot { stroke:#fff; stroke-width:1.5; } svg .marker { stroke-width:1.5; stroke-dasharray: 4 3; }
@media (max-width: 900px) { .tiles { grid-template-columns: repeat(3, 1fr); } .facets { grid-template-columns: 1fr; } }
"""

HEADLINE: tuple[str, ...] = ("input_rows", "valid", "rejected", "duplicates", "events", "users", "items", "cutoff",
                             "train_positives", "train_negatives", "test_positives", "test_negatives")


def headline_values(summary: s.VersionSummary) -> dict[str, Any]:
    """The numbers at the top of the page, by the key each tile carries in `data-metric`."""
    c = summary.counts
    return {
        "input_rows": c.get("input_rows", 0), "valid": c.get("valid", 0),
        "rejected": int(sum(c.get("rejected", {}).values())), "duplicates": c.get("duplicates", 0),
        "events": c.get("events", 0), "users": summary.users.count, "items": summary.items.num_rows,
        "cutoff": summary.manifest.get("cutoff"),
        **{f"{split}_{label}": c.get(f"{split}_{label}", 0) for split in ("train", "test")
           for label in ("positives", "negatives")},
    }


def render_page(summary: s.VersionSummary, settings: ReportConfig, drift: s.Drift | None = None,
                previous_note: str | None = None, generated_at: datetime | None = None) -> str:
    """The whole report page as a string."""
    m = summary.manifest
    generated_at = generated_at or datetime.now(timezone.utc)
    sections = [
        ("activity", "Activity over time", _activity(summary)),
        ("quality", "Rejected rows", _quality(summary)),
        ("long-tail", "Item popularity", _long_tail(summary)),
        ("users", "User activity", _users(summary)),
        ("cold-start", "Cold start", _cold_start(summary)),
        ("labels", "Labels", _labels(summary)),
        ("features", "Features, train vs test", _features(summary, settings)),
        ("timings", "Stage timings", _timings(summary)),
        ("drift", "Drift against the previous version", _drift(drift, settings, previous_note)),
    ]
    toc = "".join(f'<a href="#{key}">{i}. {escape(title)}</a>' for i, (key, title, _) in enumerate(sections, 1))
    cards = "".join(f'<section class="card" id="{key}"><h2><span class="num">{i}</span>{escape(title)}</h2>{body}'
                    f"</section>" for i, (key, title, body) in enumerate(sections, 1))
    title = f"Training data report · {m.get('version', '')}"
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, '
        f'initial-scale=1"><title>{escape(title)}</title><style>{STYLE}</style></head>'
        f'<body><main>{_header(summary)}<nav class="toc">{toc}</nav>{_tiles(summary)}'
        f"{_notes(summary, settings, drift)}{cards}"
        f"<footer>Generated {escape(generated_at.strftime('%Y-%m-%d %H:%M:%S UTC'))} by recsys_ray "
        f"{escape(m.get('recsys_ray_version', ''))} from <code>{escape(summary.uri)}</code>. Definitions of every "
        "figure (bins, ties, nulls) are in the project's docs/report.md.</footer></main></body></html>\n"
    )


def _header(summary: s.VersionSummary) -> str:
    m = summary.manifest
    meta = [("created", _when(m.get("created_at"))), ("cutoff", _when(m.get("cutoff"))),
            ("split", m.get("split_strategy", "")), ("negatives per positive", m.get("config", {}).get("negatives", "")),
            ("seed", m.get("config", {}).get("seed", ""))]
    items = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in meta)
    items += f"<div><dt>location</dt><dd><code>{escape(summary.uri)}</code></dd></div>"
    return (f'<header class="top"><div class="eyebrow">recsys_ray · training-data report</div>'
            f'<h1 id="version">{escape(m.get("version", ""))}<span class="tenant">tenant '
            f'{escape(m.get("tenant", ""))}</span></h1><dl class="meta">{items}</dl></header>')


def _when(iso: str | None) -> str:
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return iso


def _tiles(summary: s.VersionSummary) -> str:
    values = headline_values(summary)
    c = summary.counts
    inputs = max(values["input_rows"], 1)
    catalog = c.get("items", {}).get("unique") if c.get("items", {}).get("catalog") else None
    notes = {
        "input_rows": "interaction rows read",
        "valid": percent(values["valid"] / inputs) + " of input",
        "rejected": percent(values["rejected"] / inputs) + " of input",
        "duplicates": "repeated events dropped",
        "events": "unique valid events",
        "users": "with training events",
        "items": "with training events" + (f" · catalog {catalog:,}" if catalog is not None else ""),
        "cutoff": summary.manifest.get("split_strategy", "") + " split",
        "train_positives": "train split", "train_negatives": "train split",
        "test_positives": "test split", "test_negatives": "test split",
    }
    tiles = []
    for key in HEADLINE:
        value = values[key]
        classes = "tile" + (" train" if key.startswith("train") else " test" if key.startswith("test") else "")
        if key == "rejected" and value:
            classes += " bad"
        if key == "cutoff":
            shown, data, size = _when(value), value or "", " small"
        else:
            shown, data, size = grouped(int(value)), str(int(value)), ""
        tiles.append(f'<div class="{classes}" id="metric-{key}" data-metric="{key}" data-value="{escape(data)}">'
                     f'<div class="tile-label">{escape(key.replace("_", " "))}</div>'
                     f'<div class="tile-value{size}">{escape(shown)}</div>'
                     f'<div class="tile-note">{escape(notes[key])}</div></div>')
    return f'<section class="tiles" id="headline">{"".join(tiles)}</section>'


def flagged_notes(summary: s.VersionSummary, settings: ReportConfig, drift: s.Drift | None) -> list[str]:
    """Plain-text findings that cross a threshold (listed at the top of the page), one line per kind."""
    notes = []
    c = summary.counts
    rejected = int(sum(c.get("rejected", {}).values()))
    if rejected:
        notes.append(f"{rejected:,} interaction rows rejected ({percent(rejected / max(c.get('input_rows', 1), 1))} "
                     "of input); samples in section 2.")
    if c.get("negative_shortfall"):
        notes.append(f"Negative shortfall of {c['negative_shortfall']:,}: some users have seen almost every item.")
    notes += _psi_notes(summary.feature_shifts, settings, "train vs test")
    if drift is not None:
        changed = [f"{change.name} {_relative(change)}" for change in drift.counts
                   if change.exceeds(settings.count_change)]
        if changed:
            notes.append(f"Counts changed by more than {percent(settings.count_change, 0)} since "
                         f"{drift.previous_version}: {', '.join(changed)}.")
        notes += _psi_notes([drift.popularity, *drift.feature_shifts], settings, f"against {drift.previous_version}")
        for kind, count in (("new", drift.items.new_items), ("vanished", drift.items.vanished_items)):
            if count > settings.item_turnover * max(drift.items.previous_items, 1):
                notes.append(f"{count:,} {kind} items since {drift.previous_version} "
                             f"({percent(count / max(drift.items.previous_items, 1))} of its items).")
    return notes


def _psi_notes(shifts: list[s.FeatureShift], settings: ReportConfig, where: str) -> list[str]:
    notes = []
    for flag in ("major", "moderate"):
        named = [f"{f.name} ({f.psi:.2f})" for f in shifts
                 if charts.psi_flag(f.psi, settings.psi_moderate, settings.psi_major) == flag]
        if named:
            notes.append(f"PSI {where}, {flag} shift: {', '.join(named)}.")
    return notes


def _notes(summary: s.VersionSummary, settings: ReportConfig, drift: s.Drift | None) -> str:
    notes = flagged_notes(summary, settings, drift)
    if not notes:
        return ('<section class="notes clear" id="findings"><h2>Nothing crosses a threshold</h2>'
                '<span class="muted">No rejected rows, no negative shortfall, no feature shift.</span></section>')
    items = "".join(f"<li>{escape(n)}</li>" for n in notes)
    return f'<section class="notes" id="findings"><h2>Worth a look</h2><ul>{items}</ul></section>'


def _stats(pairs: list[tuple[str, str]]) -> str:
    return '<div class="stats">' + "".join(f"<span>{escape(k)} <b>{escape(v)}</b></span>" for k, v in pairs) + "</div>"


def _chart(markup: str) -> str:
    return f'<div class="chart">{markup}</div>'


def _activity(summary: s.VersionSummary) -> str:
    m = summary.manifest
    cutoff = datetime.fromisoformat(m["cutoff"]) if m.get("cutoff") else None
    body = ('<p class="lede">Unique valid events per UTC day, stacked by interaction type. The shaded areas are '
            "the training window and the test window either side of the cutoff.</p>")
    body += _chart(charts.daily_activity(summary.daily, cutoff, m.get("split_strategy", "time")))
    if summary.daily is not None and summary.daily.num_rows:
        days = summary.daily.column("day").to_pylist()
        total = int(sum(summary.daily.column("count").to_pylist()))
        body += _stats([("first day", str(min(days))), ("last day", str(max(days))),
                        ("days", f"{(max(days) - min(days)).days + 1:,}"), ("events", f"{total:,}")])
    return body


def _quality(summary: s.VersionSummary) -> str:
    c = summary.counts
    rejected = {"interactions": dict(c.get("rejected", {}))}
    if c.get("items", {}).get("rejected"):
        rejected["items"] = dict(c["items"]["rejected"])
    body = ('<p class="lede">Rows that failed validation, by reason; each is kept in <code>quarantine/</code> with '
            "its original values. A few samples per reason (first by source file and row).</p>")
    body += _chart(charts.rejected_rows(rejected))
    samples = summary.quarantine_samples
    if samples.num_rows:
        body += '<h3>Sample quarantined rows</h3>' + _quarantine_table(samples, rejected)
    return body


def _quarantine_table(samples, rejected: dict[str, dict[str, int]]) -> str:
    """Sample rows grouped by (dataset, reason), values escaped and long originals cut short."""
    rows, group = [], None
    for r in samples.to_pylist():
        if (r["dataset"], r["reason"]) != group:
            group = (r["dataset"], r["reason"])
            total = rejected.get(r["dataset"], {}).get(r["reason"], 0)
            rows.append(f'<tr class="group"><td colspan="5"><span class="reason">{escape(r["reason"])}</span> '
                        f'<span class="muted">{escape(r["dataset"])} · {total:,} rows</span></td></tr>')
        original = r["original"] or ""
        if len(original) > ORIGINAL_CHARS:
            original = original[:ORIGINAL_CHARS] + "…"
        source = r["source"] or ""
        rows.append(f'<tr><td><code title="{escape(source)}">{escape(source.rsplit("/", 1)[-1])}</code></td>'
                    f'<td class="num">{escape(r["row"])}</td><td>{escape(r["field"] or "")}</td>'
                    f'<td>{escape(r["message"] or "")}</td><td><span class="original">{escape(original)}</span></td></tr>')
    return ('<table id="quarantine-samples" class="samples"><colgroup><col style="width:15%"><col style="width:6%">'
            '<col style="width:11%"><col style="width:24%"><col style="width:44%"></colgroup><thead><tr><th>source</th>'
            '<th class="num">row</th><th>field</th>'
            f'<th>message</th><th>original values</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _long_tail(summary: s.VersionSummary) -> str:
    tail = summary.long_tail
    body = ('<p class="lede">Share of training-window events held by the most popular items: items ranked by their '
            "event count, rank on a log scale. The dashed line is what equal popularity would look like.</p>")
    body += _chart(charts.long_tail(tail))
    body += _stats([("items", f"{tail.keys:,}"), ("events", f"{tail.total:,}"),
                    ("top 1% of items", percent(tail.top_1pct_share)),
                    ("top 10% of items", percent(tail.top_10pct_share)), ("Gini index", f"{tail.gini:.3f}")])
    return body


def _users(summary: s.VersionSummary) -> str:
    d = summary.users
    body = ('<p class="lede">Users by their number of training-window events; each bar covers twice the range '
            "of the one before.</p>")
    body += _chart(charts.activity_histogram(summary.activity))
    if d.count:
        body += _stats([("users", f"{d.count:,}"), ("mean", f"{d.total / d.count:,.1f}"),
                        ("median", f"{d.quantile(0.5):,}"), ("90th percentile", f"{d.quantile(0.9):,}"),
                        ("most active", f"{int(d.values.max()):,}")])
    return body


def _cold_start(summary: s.VersionSummary) -> str:
    cold = summary.cold_start
    body = ('<p class="lede">Test users and items (those of test positives) with no event in the training window: '
            "a model has learned nothing about them. Cold test positives are what a cold-start evaluation "
            "measures.</p>")
    body += _chart(charts.cold_start(cold))
    body += _stats([("test users", f"{cold.test_users:,}"), ("test items", f"{cold.test_items:,}"),
                    ("test positives", f"{cold.test_positives:,}")])
    return body


def _labels(summary: s.VersionSummary) -> str:
    c = summary.counts
    k = int(summary.manifest.get("config", {}).get("negatives", 0))
    body = (f'<p class="lede">Positives and sampled negatives per split ({k} negatives per positive). The shortfall '
            "is negatives that could not be drawn because the user had seen (almost) every item.</p>")
    body += _chart(charts.labels(c, k))
    body += _stats([("train rows", f"{c.get('train_rows', 0):,}"), ("test rows", f"{c.get('test_rows', 0):,}"),
                    ("negative shortfall", f"{c.get('negative_shortfall', 0):,}")])
    return body


def _features(summary: s.VersionSummary, settings: ReportConfig) -> str:
    train_n = len(next(iter(summary.train_sample.values()), []))
    test_n = len(next(iter(summary.test_sample.values()), []))
    body = ('<p class="lede">Each feature binned at the deciles of its train values (nulls in their own bin); bars '
            "are the share of rows per bin in train and in test. Population stability index (PSI) "
            f"above {settings.psi_moderate:g} is a moderate shift, above {settings.psi_major:g} a major one. "
            f"Computed on {train_n:,} train and {test_n:,} test rows "
            f"(up to {settings.sample_rows:,} per split, spread over the shards).</p>")
    shifts = {f.name: f for f in summary.feature_shifts}
    main = [shifts[name] for name in s.MAIN_FEATURES if name in shifts]
    if main:
        body += ('<div class="key"><span><i style="background:var(--train)"></i>train rows</span>'
                 '<span><i style="background:var(--test)"></i>test rows</span></div>')
        facets = "".join(f"<div>{_facet(shift, settings)}</div>" for shift in main)
        body += f'<div class="chart facets">{facets}</div>'
    body += "<h3>PSI of every feature, train vs test</h3>"
    body += _chart(charts.psi_bars(summary.feature_shifts, settings.psi_moderate, settings.psi_major))
    return body


def _facet(shift: s.FeatureShift, settings: ReportConfig) -> str:
    flag = charts.psi_flag(shift.psi, settings.psi_moderate, settings.psi_major)
    return (f'<div class="facet-head"><b>{escape(shift.name)}</b><span>PSI <b>{shift.psi:.3f}</b> '
            f'<span class="flag {flag}">{flag}</span></span></div>{charts.feature_bins(shift)}')


def _timings(summary: s.VersionSummary) -> str:
    timings = {k: float(v) for k, v in summary.manifest.get("timings_s", {}).items()}
    body = '<p class="lede">Wall time of each build stage as recorded in the manifest.</p>'
    body += _chart(charts.stage_timings(timings))
    body += _stats([("total", f"{sum(timings.values()):.2f} s")])
    return body


def _relative(change: s.CountChange) -> str:
    if change.relative is None:
        return "new" if change.current else "–"
    return f"{change.relative * 100:+.1f}%"


def _drift(drift: s.Drift | None, settings: ReportConfig, note: str | None) -> str:
    if drift is None:
        message = escape(note) if note else ("No previous version was compared. <code>recsys-ray report --manifest URI --previous "
                           "latest</code> adds this section.")
        return f'<p class="lede">{message}</p>'
    rows = []
    for change in drift.counts:
        flagged = change.exceeds(settings.count_change)
        flag = '<span class="flag major">changed</span>' if flagged else '<span class="flag ok">ok</span>'
        rows.append(f"<tr><td>{escape(change.name)}</td><td class='num'>{change.previous:,}</td>"
                    f"<td class='num'>{change.current:,}</td><td class='num'>{change.change:+,}</td>"
                    f"<td class='num'>{escape(_relative(change))}</td><td>{flag}</td></tr>")
    body = (f'<p class="lede">This version against <b>{escape(drift.previous_version)}</b> '
            f"(<code>{escape(drift.previous_uri)}</code>). A count is flagged when it changes by more than "
            f"{percent(settings.count_change, 0)}; a PSI above {settings.psi_moderate:g} is a moderate shift and above "
            f"{settings.psi_major:g} a major one; new or vanished items are flagged above "
            f"{percent(settings.item_turnover, 0)} of the previous version's items.</p>")
    body += ('<table id="drift-counts"><thead><tr><th>count</th><th class="num">previous</th><th class="num">this</th>'
             f'<th class="num">change</th><th class="num">relative</th><th></th></tr></thead><tbody>{"".join(rows)}'
             "</tbody></table>")
    body += "<h3>PSI against the previous version (train rows; item popularity over previous ranks)</h3>"
    body += _chart(charts.psi_bars([drift.popularity, *drift.feature_shifts], settings.psi_moderate,
                                   settings.psi_major))
    t = drift.items
    body += "<h3>Items</h3>" + _stats([
        ("items with training events", f"{t.previous_items:,} → {t.current_items:,}"),
        ("new", f"{t.new_items:,}"), ("vanished", f"{t.vanished_items:,}"),
        ("new, e.g.", ", ".join(t.new_examples) or "–"), ("vanished, e.g.", ", ".join(t.vanished_examples) or "–")])
    return body
