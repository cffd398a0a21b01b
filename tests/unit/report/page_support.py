"""A small version summary built from hand-made tables, and a checker for external references."""

from __future__ import annotations

from datetime import date
from html.parser import HTMLParser

import numpy as np
import pyarrow as pa

from recsys_ray.config import ReportConfig
from recsys_ray.report import summaries as s

SCRIPT_USER = "<script>alert('owned')</script>"

MANIFEST = {
    "version": "v7", "created_at": "2026-11-02T10:00:00+00:00", "recsys_ray_version": "0.1.0", "tenant": "acme",
    "config": {"negatives": 4, "seed": 1}, "cutoff": "2026-10-20T12:00:00+00:00", "split_strategy": "time",
    "counts": {"input_rows": 1010, "valid": 1000, "rejected": {"unknown_interaction_type": 7, "bad_timestamp": 3},
               "duplicates": 20, "events": 980, "items": {"catalog": True, "unique": 12, "rejected": {}},
               "train_positives": 300, "train_negatives": 1190, "train_rows": 1490, "test_positives": 40,
               "test_negatives": 160, "test_rows": 200, "negative_shortfall": 10},
    "shards": {"train": [{"path": "train/part-00000.parquet", "rows": 1490}],
               "test": [{"path": "test/part-00000.parquet", "rows": 200}]},
    "timings_s": {"validate": 1.5, "features": 0.5},
}


def version_summary(manifest=MANIFEST, seed: int = 0, items: int = 10) -> s.VersionSummary:
    rng = np.random.default_rng(seed)
    daily = pa.table({"day": pa.array([date(2026, 10, d) for d in (1, 1, 2, 25)], pa.date32()),
                      "interaction_type": ["view", "click", "view", "purchase"], "count": [5, 2, 4, 1]})
    quarantine = pa.table({"dataset": ["interactions"] * 2, "source": ["/in/a.parquet"] * 2, "row": [3, 4],
                           "reason": ["unknown_interaction_type", "bad_timestamp"], "field": ["interaction_type",
                                                                                              "timestamp"],
                           "message": ["unknown", "bad"],
                           "original": ['{"user_id": "%s", "x": "<b>bold</b>"}' % SCRIPT_USER, "{}"]})
    users = pa.table({"user_id": [f"u{i}" for i in range(20)], "user_total_interactions": rng.integers(1, 40, 20)})
    item_table = pa.table({"item_id": [f"i{i}" for i in range(items)],
                           "item_total_interactions": rng.integers(1, 90, items)})
    keys = pa.table({"kind": ["user", "user", "item", "item"], "key": ["u1", "new-user", "i1", "new-item"],
                     "positives": [3, 1, 2, 2]})
    train = {"user_total_interactions": rng.integers(1, 40, 500).astype(float),
             "item_ctr": np.where(rng.random(500) < 0.1, np.nan, rng.random(500))}
    test = {"user_total_interactions": rng.integers(1, 60, 100).astype(float),
            "item_ctr": np.where(rng.random(100) < 0.3, np.nan, rng.random(100))}
    return s.summarize(manifest, "s3://bucket/tenants/acme/training/v7", ReportConfig(), daily=daily, users=users,
                       items=item_table, test_keys=keys, quarantine_samples=quarantine, train_sample=train,
                       test_sample=test)


class References(HTMLParser):
    """Collects what a page would load: resource elements, attribute URLs, CSS imports and url()."""

    RESOURCE_TAGS = {"script", "link", "img", "iframe", "object", "embed", "image", "use", "source", "video",
                     "audio", "track", "base", "form"}

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self.text: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        if tag in self.RESOURCE_TAGS:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            value = (value or "").strip().lower()
            if name in ("src", "href", "xlink:href", "srcset", "poster", "action", "data") and not value.startswith("#"):
                self.found.append(f"{tag}[{name}={value}]")
            if value.startswith(("http:", "https:", "//", "javascript:")) or "url(" in value:
                self.found.append(f"{tag}[{name}={value}]")
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style and ("url(" in data or "@import" in data or "//" in data):
            self.found.append("style: url(), @import or //")
        self.text.append(data)


def external_references(page: str) -> list[str]:
    parser = References()
    parser.feed(page)
    return parser.found
