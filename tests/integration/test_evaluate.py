"""`recsys-ray evaluate` on a real local Ray, checked against a brute-force recomputation.

The popularity model's metrics are recomputed per user with pandas and NumPy
from the raw generated events (de-duplicated, split at the manifest's cutoff):
distinct training users per item, the item vocabulary's order, each user's
seen and relevant items, every rankable item ranked; only the sampled
candidates are taken from the version's `eval/` (their hash-keyed draws are
the build's, tested there).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_ray import cli
from recsys_ray.build.manifest import read_manifest
from recsys_ray.evaluation.run import evaluate
from recsys_ray.io import storage

POSITIVE = {"click", "like", "add_to_cart", "purchase"}
KS = (5, 10, 20)


def unique_events(inputs) -> pd.DataFrame:
    raw = pq.read_table(inputs / "interactions.parquet").to_pandas()
    e = raw.drop_duplicates(["user_id", "item_id", "interaction_type", "timestamp"]).copy()
    e["ts_us"] = (pd.to_datetime(e.timestamp, utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "us")
    return e


def per_user(ranked: list[list[str]], relevant: list[set[str]], all_relevant_sizes: list[int], k: int) -> dict:
    values = {"recall": [], "ndcg": [], "hit": [], "mrr": []}
    for top, rel, size in zip(ranked, relevant, all_relevant_sizes):
        hits = [r for r, item in enumerate(top[:k], 1) if item in rel]
        idcg = sum(1 / math.log2(r + 1) for r in range(1, min(size, k) + 1))
        values["recall"].append(len(hits) / size)
        values["ndcg"].append(sum(1 / math.log2(r + 1) for r in hits) / idcg)
        values["hit"].append(1.0 if hits else 0.0)
        values["mrr"].append(1 / hits[0] if hits else 0.0)
    return {name: float(np.mean(v)) for name, v in values.items()}


def brute_force_popularity(inputs, manifest, eval_table: pd.DataFrame) -> dict:
    e = unique_events(inputs)
    cut = int(pd.Timestamp(manifest.cutoff).value // 1000)
    train, test = e[e.ts_us < cut], e[e.ts_us >= cut]
    # Item vocabulary: training events per item descending, then id ascending (byte order); index from 2.
    counts = train.groupby("item_id").size()
    vocab_order = sorted(counts.index, key=lambda item: (-counts[item], item.encode()))
    index = {item: i + 2 for i, item in enumerate(vocab_order)}
    # Popularity: training-window distinct users descending, ties by vocabulary index.
    users_per_item = train.groupby("item_id").user_id.nunique()
    popular = sorted(vocab_order, key=lambda item: (-users_per_item[item], index[item]))
    seen = train.groupby("user_id").item_id.agg(set).to_dict()
    positives = test[test.interaction_type.isin(POSITIVE)]
    relevant = {u: set(g.item_id) - seen.get(u, set()) for u, g in positives.groupby("user_id")}
    relevant = {u: r for u, r in relevant.items() if r}
    users = sorted(relevant, key=str.encode)
    assert eval_table.user_id.tolist() == users

    sizes = [len(relevant[u]) for u in users]
    known = [{i for i in relevant[u] if i in index} for u in users]
    k_max = max(KS)
    ranked = []
    for u in users:
        mine = seen.get(u, set())
        ranked.append([item for item in popular if item not in mine][:k_max])
    # Sampled: the eval set's candidates plus the relevant items in the vocabulary, by distinct
    # users (an item outside the vocabulary has none), ties by vocabulary index (outside: 1).
    sampled_ranked = []
    for u, candidates, rel in zip(users, eval_table.sampled_candidate_ids, known):
        pool = [(item if item in index else None) for item in candidates] + sorted(rel)
        pool.sort(key=lambda item: (-users_per_item[item], index[item]) if item is not None else (0, 1))
        sampled_ranked.append(pool[:k_max])
    out = {}
    for k in KS:
        out |= {f"{name}@{k}": v for name, v in per_user(ranked, known, sizes, k).items()}
        out[f"coverage@{k}"] = len({item for top in ranked for item in top[:k]}) / len(index)
        out |= {f"sampled_{name}@{k}": v for name, v in per_user(sampled_ranked, known, sizes, k).items()}
    out["users"] = len(users)
    return out


@pytest.fixture(scope="module")
def evaluated(demo_build):
    version = demo_build["out"]
    code = cli.main(["evaluate", "--manifest", str(version), "--model", "popularity", "--k", "20,5,10"])
    assert code == 0
    manifest = read_manifest(str(version))
    written = json.loads((version / "eval" / "metrics-popularity.json").read_text())
    return demo_build, manifest, written


def test_popularity_matches_brute_force(evaluated):
    demo_build, manifest, written = evaluated
    # eval/ holds the set's Parquet files and now metrics-popularity.json too.
    files = sorted((demo_build["out"] / "eval").glob("*.parquet"))
    eval_table = pa.concat_tables([pq.read_table(f) for f in files]).to_pandas().sort_values(
        "user_id", key=lambda s: s.map(str.encode)).reset_index(drop=True)
    expected = brute_force_popularity(demo_build["inputs"], manifest, eval_table)
    assert set(written) == set(expected)
    assert written["users"] == expected["users"] == manifest.eval.users > 20
    for key, value in expected.items():
        assert written[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert 0 < written["recall@20"] < 1


def test_same_result_at_any_block_count_or_chunking(evaluated, ray_session):
    demo_build, manifest, written = evaluated
    for blocks, chunk in ((1, None), (7, 3), (13, 1000)):
        assert evaluate(manifest, "popularity", ks=KS, blocks=blocks, chunk_users=chunk) == written
    random = [evaluate(manifest, "random", ks=(10,), blocks=blocks, chunk_users=chunk)
              for blocks, chunk in ((1, None), (5, 7))]
    assert random[0] == random[1] and random[0]["users"] == written["users"]
    assert evaluate(manifest, "random", ks=(10,), seed=99) != random[0]


def test_model_scorer_on_ray(evaluated):
    demo_build, manifest, _ = evaluated
    cardinality = manifest.column("item_idx").cardinality

    def tail_first(batch):
        """Every user scores items by index descending (the tail first)."""
        assert {"user_idx", "seen_item_idx", "relevant_item_idx", "sampled_candidate_idx"} <= set(batch.column_names)
        return np.broadcast_to(np.arange(cardinality, dtype=np.float32), (batch.num_rows, cardinality)).copy()

    result = evaluate(manifest, tail_first, ks=(10,), blocks=3)
    assert result["users"] == manifest.eval.users and 0 < result["coverage@10"] < 1
    # The tail's items have the fewest training events, so the tail-first model does worse.
    assert result["recall@10"] < evaluated[2]["recall@10"]


def test_version_on_s3(evaluated, s3_bucket):
    demo_build, _, written = evaluated
    local = demo_build["out"]
    root = f"s3://{s3_bucket}/shop/v1"
    for path in local.rglob("*"):
        relative = path.relative_to(local).as_posix()
        if path.is_file() and relative.split("/")[0] in ("manifest.json", "vocab", "features", "eval"):
            if not relative.startswith("eval/metrics-"):
                storage.upload_file(str(path), f"{root}/{relative}")
    assert cli.main(["evaluate", "--manifest", f"{root}/manifest.json", "--model", "popularity",
                     "--k", "5,10,20"]) == 0
    assert json.loads(storage.read_bytes(f"{root}/eval/metrics-popularity.json")) == written
