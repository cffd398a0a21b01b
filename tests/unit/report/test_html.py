"""The report page is self-contained, escapes data and carries the manifest's headline numbers."""

from __future__ import annotations

import re

from recsys_ray.config import ReportConfig
from recsys_ray.report import charts
from recsys_ray.report import summaries as s
from recsys_ray.report.html import HEADLINE, headline_values, render_page

from tests.unit.report.page_support import MANIFEST, SCRIPT_USER, References, external_references, version_summary


def test_page_references_nothing_outside_itself():
    current, previous = version_summary(), version_summary(seed=1, items=14)
    page = render_page(current, ReportConfig(), s.drift(current, previous, ReportConfig()))
    assert external_references(page) == []
    assert "http://" not in page and "https://" not in page
    assert page.count("<svg") >= 10  # every chart drew


def test_reference_checker_catches_what_a_page_could_load():
    for bad in ('<script src="x.js"></script>', '<link rel="stylesheet" href="a.css">', '<img src="//cdn/x.png">',
                "<style>@import 'a.css';</style>", '<div style="background:url(x.png)"></div>',
                '<a href="https://example.org">x</a>'):
        assert external_references(bad), bad


def test_quarantined_values_are_escaped():
    page = render_page(version_summary(), ReportConfig())
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;" in page
    assert "<b>bold</b>" not in page
    parser = References()
    parser.feed(page)
    assert any(SCRIPT_USER in chunk for chunk in parser.text)  # shown as text


def test_headline_tiles_carry_the_manifest_counts():
    summary = version_summary()
    page = render_page(summary, ReportConfig())
    tiles = dict(re.findall(r'data-metric="([a-z_]+)" data-value="([^"]*)"', page))
    assert list(tiles) == list(HEADLINE)
    c = MANIFEST["counts"]
    assert tiles["rejected"] == "10" and tiles["input_rows"] == str(c["input_rows"])
    assert tiles["users"] == "20" and tiles["items"] == "10" and tiles["cutoff"] == MANIFEST["cutoff"]
    for key in ("valid", "duplicates", "events", "train_positives", "train_negatives", "test_positives",
                "test_negatives"):
        assert tiles[key] == str(c[key])
    assert headline_values(summary)["test_negatives"] == 160


def test_drift_flags_use_the_thresholds():
    current, previous = version_summary(), version_summary(seed=1, items=14)
    drift = s.drift(current, previous, ReportConfig())
    page = render_page(current, ReportConfig(), drift)
    assert 'id="drift-counts"' in page
    # the previous version had items i0..i13, this one i0..i9: 4 of 14 vanished (28.6 % > 20 %)
    assert "vanished items since v7" in page
    relaxed = render_page(current, ReportConfig(item_turnover=0.5), drift)
    assert "vanished items since" not in relaxed
    assert "No previous version was compared" in render_page(current, ReportConfig())


def test_charts_are_svg_without_links():
    summary = version_summary()
    for markup in (charts.long_tail(summary.long_tail), charts.activity_histogram(summary.activity),
                   charts.cold_start(summary.cold_start), charts.labels(MANIFEST["counts"], 4),
                   charts.stage_timings(MANIFEST["timings_s"]), charts.rejected_rows({"interactions": {"a": 1}}),
                   charts.feature_bins(summary.feature_shifts[0]),
                   charts.psi_bars(summary.feature_shifts, 0.1, 0.25), charts.daily_activity(None, None, "time")):
        assert markup.startswith("<svg") and markup.endswith("</svg>")
        assert "href" not in markup and "xmlns" not in markup


def test_psi_flag_thresholds():
    assert charts.psi_flag(0.1, 0.1, 0.25) == "ok"
    assert charts.psi_flag(0.11, 0.1, 0.25) == "moderate"
    assert charts.psi_flag(0.26, 0.1, 0.25) == "major"
