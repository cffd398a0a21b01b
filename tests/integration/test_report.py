"""The build report on a real local Ray and in a real headless browser.

Two builds of one tenant (v1, then v2 from other data) with planted rows whose
ids are HTML; every figure checked here is recomputed independently with
pandas from the raw inputs or the version's files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from recsys_ray import cli
from recsys_ray.config import RecsysConfig, ReportConfig
from recsys_ray.io.storage import StorageOptions
from recsys_ray.build import build_training_data
from recsys_ray.report import summaries as s
from recsys_ray.report.collect import summarize_version
from recsys_ray.report.html import HEADLINE

from tests.integration.browser_support import dump_dom, screenshot
from tests.unit.report.page_support import external_references

POSITIVE = {"click", "like", "add_to_cart", "purchase"}
SCRIPT_USER = "<script>document.title='owned'</script>"
IMG_ITEM = "<img src=x onerror=alert(1)>"
MICROS_PER_DAY = 86_400_000_000


def write_raw(directory: Path, seed: int, interactions: int) -> pd.DataFrame:
    """Generated interactions (b.parquet) and two planted rejected rows with HTML ids (a.parquet)."""
    generated = directory.parent / f"gen-{seed}"
    assert cli.main(["generate", "--out", str(generated), "--users", "300", "--items", "200", "--interactions",
                     str(interactions), "--seed", str(seed), "--duplicate-fraction", "0.03"]) == 0
    directory.mkdir(parents=True)
    shutil.copy(generated / "interactions.parquet", directory / "b.parquet")
    shutil.copy(generated / "items.parquet", directory.parent / f"items-{seed}.parquet")
    pq.write_table(pa.table({"user_id": [SCRIPT_USER, "u1"], "item_id": ["i000001", IMG_ITEM],
                             "interaction_type": ["teleport", "dislike"],
                             "timestamp": ["2026-09-01T00:00:00Z", "2026-09-01T00:00:00Z"],
                             "rating": pa.array([None, None], pa.string())}), directory / "a.parquet")
    return pq.read_table(directory / "b.parquet").to_pandas()


@pytest.fixture(scope="module")
def versions(ray_session, tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    root = base / "store"
    out = {}
    for version, seed, n in (("v1", 3, 5000), ("v2", 4, 7000)):
        raw = write_raw(base / f"raw-{version}", seed, n)
        manifest = build_training_data(RecsysConfig.load(storage={"root": str(root)}, build={
            "interactions": str(base / f"raw-{version}"), "items": str(base / f"items-{seed}.parquet"),
            "tenant": "shop", "version": version, "seed": 5, "shards": 2}))
        out[version] = {"raw": raw, "manifest": {**manifest.model_dump(mode="json"), "uri": manifest.uri},
                        "dir": Path(manifest.uri)}
    return out


def unique_events(raw: pd.DataFrame) -> pd.DataFrame:
    e = raw.drop_duplicates(["user_id", "item_id", "interaction_type", "timestamp"]).copy()
    e["ts_us"] = (pd.to_datetime(e.timestamp, utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "us")
    return e


def cutoff_us(manifest) -> int:
    return int(pd.Timestamp(manifest["cutoff"]).value // 1000)


def test_build_writes_the_report_and_daily_counts_before_the_manifest(versions):
    v = versions["v1"]
    report, manifest = v["dir"] / "report.html", v["dir"] / "manifest.json"
    assert report.exists() and report.stat().st_mtime_ns <= manifest.stat().st_mtime_ns
    assert "report" in json.loads(manifest.read_text())["timings_s"]
    daily = pq.read_table(v["dir"] / "summaries" / "daily.parquet").to_pandas()
    e = unique_events(v["raw"])
    expected = (e.assign(day=e.ts_us // MICROS_PER_DAY).groupby(["day", "interaction_type"]).size()
                .rename("count").reset_index())
    got = daily.assign(day=(pd.to_datetime(daily.day) - pd.Timestamp("1970-01-01")).dt.days)
    assert got[["day", "interaction_type", "count"]].values.tolist() == expected.values.tolist()
    assert daily["count"].sum() == v["manifest"]["counts"]["events"]


def brute_gini(x: np.ndarray) -> float:
    x = x.astype(float)
    return np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) ** 2 * x.mean())


def test_summaries_equal_an_independent_recomputation(versions):
    v = versions["v1"]
    summary = summarize_version(str(v["dir"]), json.loads((v["dir"] / "manifest.json").read_text()),
                                StorageOptions(), ReportConfig())
    e = unique_events(v["raw"])
    cut = cutoff_us(v["manifest"])
    train, test = e[e.ts_us < cut], e[e.ts_us >= cut]
    # long tail over training-window events per item
    per_item = train.groupby("item_id").size().sort_values(ascending=False).to_numpy()
    n = len(per_item)
    assert summary.long_tail.keys == n and summary.long_tail.total == len(train)
    assert summary.long_tail.top_1pct_share == pytest.approx(per_item[: -(-n // 100)].sum() / len(train))
    assert summary.long_tail.top_10pct_share == pytest.approx(per_item[: -(-n // 10)].sum() / len(train))
    assert summary.long_tail.gini == pytest.approx(brute_gini(per_item), rel=1e-9)
    # users with training events and their event counts
    per_user = train.groupby("user_id").size()
    assert summary.users.count == len(per_user) and summary.users.quantile(0.5) == int(
        np.sort(per_user.to_numpy())[(len(per_user) - 1) // 2])
    # cold start over test positives
    positives = test[test.interaction_type.isin(POSITIVE)].drop_duplicates(["user_id", "item_id"])
    cold_users = ~positives.user_id.isin(set(train.user_id))
    cold_items = ~positives.item_id.isin(set(train.item_id))
    c = summary.cold_start
    assert (c.test_users, c.test_items, c.test_positives) == (positives.user_id.nunique(),
                                                              positives.item_id.nunique(), len(positives))
    assert c.cold_users == positives[cold_users].user_id.nunique()
    assert c.cold_items == positives[cold_items].item_id.nunique()
    assert (c.positives_on_cold_users, c.positives_on_cold_items) == (int(cold_users.sum()), int(cold_items.sum()))
    # feature PSI: fewer rows than the sample size, so every row counts
    rows = {split: pd.concat([pq.read_table(v["dir"] / sh["path"]).to_pandas()
                              for sh in v["manifest"]["shards"][split]]) for split in ("train", "test")}
    for shift in summary.feature_shifts:
        ref = rows["train"][shift.name].astype(float).to_numpy()
        cmp = rows["test"][shift.name].astype(float).to_numpy()
        values = np.sort(ref[~np.isnan(ref)])
        edges = np.unique(values[[(k * (len(values) - 1)) // 10 for k in range(1, 10)]])
        bins = lambda x: np.append(np.bincount(np.searchsorted(edges, x[~np.isnan(x)], side="left"),
                                               minlength=len(edges) + 1), np.isnan(x).sum())
        p = np.maximum(bins(ref) / len(ref), 1e-4)
        q = np.maximum(bins(cmp) / len(cmp), 1e-4)
        assert shift.psi == pytest.approx(float(np.sum((q - p) * np.log(q / p)))), shift.name


class Dom(HTMLParser):
    """Headline tiles, script elements and text of a dumped DOM."""

    def __init__(self):
        super().__init__()
        self.tiles: dict[str, dict] = {}
        self.scripts = 0
        self.text: list[str] = []
        self._tile = None
        self._in_value = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if "data-metric" in a:
            self._tile = a["data-metric"]
            self.tiles[self._tile] = {"value": a["data-value"], "shown": ""}
        self._in_value = self._tile is not None and "tile-value" in (a.get("class") or "")

    def handle_endtag(self, tag):
        self._in_value = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_value:
            self.tiles[self._tile]["shown"] += data


def test_report_renders_offline_in_a_browser_with_the_manifest_numbers(versions, tmp_path):
    v = versions["v2"]
    page = v["dir"] / "report.html"
    assert external_references(page.read_text()) == []
    png = screenshot(page, tmp_path / "report.png")
    if os.environ.get("RECSYS_SCREENSHOT_DIR"):  # to look at the page after the run
        shutil.copy(png, Path(os.environ["RECSYS_SCREENSHOT_DIR"]) / "report.png")
    image = np.asarray(Image.open(png).convert("RGB"))
    colours = np.unique(image.reshape(-1, 3), axis=0)
    background = np.all(image == image[0, 0], axis=2).mean()
    assert len(colours) > 200 and background < 0.9  # charts and text, not a blank page
    dom = Dom()
    dom.feed(dump_dom(page))
    assert dom.scripts == 0
    assert any(SCRIPT_USER in t for t in dom.text) and any(IMG_ITEM in t for t in dom.text)
    counts = v["manifest"]["counts"]
    e = unique_events(v["raw"])
    train = e[e.ts_us < cutoff_us(v["manifest"])]
    expected = {"input_rows": counts["input_rows"], "valid": counts["valid"],
                "rejected": sum(counts["rejected"].values()), "duplicates": counts["duplicates"],
                "events": counts["events"], "users": train.user_id.nunique(), "items": train.item_id.nunique(),
                **{k: counts[k] for k in ("train_positives", "train_negatives", "test_positives", "test_negatives")}}
    assert set(dom.tiles) == set(HEADLINE)
    for key, value in expected.items():
        assert int(dom.tiles[key]["value"]) == value, key
        assert int(dom.tiles[key]["shown"].replace(",", "")) == value, key
    assert dom.tiles["cutoff"]["value"] == v["manifest"]["cutoff"]
    assert counts["rejected"] == {"unknown_interaction_type": 2} and counts["input_rows"] == len(v["raw"]) + 2


def test_report_command_adds_drift_against_the_latest_previous_version(versions, tmp_path, capsys):
    v1, v2 = versions["v1"], versions["v2"]
    out = tmp_path / "again.html"
    assert cli.main(["report", "--manifest", str(v2["dir"]), "--previous", "latest", "--out", str(out)]) == 0
    page = out.read_text()
    assert external_references(page) == []
    assert f"against <b>v1</b>" in page and 'id="drift-counts"' in page
    rows = dict(re.findall(r"<tr><td>([a-z ]+)</td><td class='num'>([\d,]+)</td>", page))
    assert int(rows["input rows"].replace(",", "")) == v1["manifest"]["counts"]["input_rows"]
    assert int(rows["events"].replace(",", "")) == v1["manifest"]["counts"]["events"]
    # v1 has nothing before it
    first = tmp_path / "first.html"
    assert cli.main(["report", "--manifest", str(v1["dir"]), "--previous", "latest", "--out", str(first)]) == 0
    assert "No earlier version of tenant shop" in first.read_text()
    assert "note: No earlier version" in capsys.readouterr().err


def test_report_command_on_an_incomplete_version_says_so(versions, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(versions["v1"]["dir"], broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    (broken / manifest["shards"]["test"][0]["path"]).unlink()
    assert cli.main(["report", "--manifest", str(broken)]) == 1
    err = capsys.readouterr().err
    assert f"error: the version at {broken} is incomplete" in err and "part-00000.parquet" in err
    assert "Traceback" not in err
