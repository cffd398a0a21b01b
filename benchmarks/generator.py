"""What the synthetic generator costs, and whether its structure is learnable.

  * speed: CPU seconds to generate --interactions events (no writing), best of
    three, with the default taste groups and with --taste-groups 0;
  * structure: on --demo-interactions events (the demo's size), a 10% time
    split, the evaluation set, and full-ranking metrics of popularity, of a
    plain per-user profile model (popularity x the user's training shares of
    categories and brands, recent events weighted up) and of the generator's
    own law (each user's late-profile tilt), next to the random model.
All of it in one process with the pure stages, no Ray.

    ./run bench generator --interactions 10000000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

POSITIVE = ("click", "like", "add_to_cart", "purchase")
SHOWN = ("recall@10", "ndcg@10", "hit@10", "recall@20", "coverage@10")


def generation_seconds(cfg) -> float:
    from recsys_ray import synthetic

    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _table, _plan in synthetic.interaction_chunks(cfg):
            pass
        best = min(best, time.process_time() - started)
    return best


def structure(cfg) -> dict[str, dict]:
    from recsys_ray import synthetic
    from recsys_ray.config import ValidationConfig
    from recsys_ray.evaluation import metrics, ranking
    from recsys_ray.stages import eval_set, examples, split, vocab
    from recsys_ray.validation import deduplicate_events, validate

    events, _ = deduplicate_events(validate(synthetic.generate_interactions(cfg), "interactions",
                                            ValidationConfig()).valid)
    catalog = synthetic.generate_items(cfg)
    times = np.sort(split.timestamp_micros(events))
    cutoff = int(times[split.quantile_rank(len(times), 0.1)])
    events = split.split_events(events, cutoff, "time", POSITIVE)
    train = events.filter(pc.equal(events.column("split"), "train"))
    items = vocab.make_vocabulary(vocab.column_counts(vocab.vocab_partials(train, vocab.item_attributes(catalog)),
                                                      "item_id"))
    cardinality = vocab.vocabulary_cardinality(items)
    candidates = examples.make_candidates(catalog.column("item_id"), None, "uniform", 0.75)
    evaluation = eval_set.eval_rows(events, positive_types=POSITIVE, candidates=candidates, negatives=100, seed=1)
    relevant = vocab.lookup_list_indices(evaluation.column("relevant_item_ids"), items)
    seen = vocab.lookup_list_indices(evaluation.column("seen_item_ids"), items)
    users = evaluation.num_rows

    pairs = train.select(["user_id", "item_id"]).group_by(["user_id", "item_id"], use_threads=False).aggregate([])
    distinct_users = np.bincount(vocab.lookup_indices(pairs.column("item_id"), items).to_numpy(),
                                 minlength=cardinality)
    # Catalog codes of each vocabulary index (0 and 1 get item 0's: never ranked).
    item_number = np.zeros(cardinality, dtype=np.int64)
    item_number[2:] = pc.cast(pc.utf8_slice_codeunits(items.column("value"), 1), pa.int64()).to_numpy()
    category_codes, brand_codes = synthetic.catalog_codes(cfg)
    category, brand = category_codes[item_number], brand_codes[item_number]

    row = pc.fill_null(pc.index_in(train.column("user_id"), value_set=evaluation.column("user_id")), -1)
    row = row.to_numpy().astype(np.int64)
    known = row >= 0
    train_items = vocab.lookup_indices(train.column("item_id"), items).to_numpy()
    recency = (split.timestamp_micros(train) - times[0]) / max(cutoff - times[0], 1)
    weight = 0.2 + 2 * recency[known]
    category_share = np.ones((users, len(synthetic.CATEGORIES)))
    brand_share = np.ones((users, len(synthetic.BRANDS)))
    np.add.at(category_share, (row[known], category[train_items[known]]), weight)
    np.add.at(brand_share, (row[known], brand[train_items[known]]), weight)
    category_share /= category_share.sum(axis=1, keepdims=True)
    brand_share /= brand_share.sum(axis=1, keepdims=True)
    popularity = np.log(distinct_users + 1.0)[None, :]
    profile = (popularity + np.log(category_share[:, category]) + np.log(brand_share[:, brand])).astype(np.float32)

    def scored(top):
        return metrics.finalize_metrics(metrics.metric_partials(top, relevant), cardinality - 2)

    results = {
        "popularity": scored(ranking.popularity_top_k(ranking.popularity_order(distinct_users), seen, 20)),
        "profile": scored(ranking.top_k_from_scores(profile, seen, 20)),
        "random": scored(ranking.top_k_from_scores(ranking.random_scores(evaluation.column("user_id"),
                                                                         cardinality, 1), seen, 20)),
    }
    tastes = synthetic.taste_model(cfg)
    if tastes is not None:
        group = tastes.group_of_user[pc.cast(pc.utf8_slice_codeunits(evaluation.column("user_id"), 1),
                                             pa.int64()).to_numpy()]
        preferred_category = (category[None, None, :] == tastes.categories[group, 1][:, :, None]).any(axis=1)
        preferred_brand = (brand[None, None, :] == tastes.brands[group, 1][:, :, None]).any(axis=1)
        tilt = np.where(preferred_category, tastes.strength, 1.0) * np.where(preferred_brand, tastes.strength, 1.0)
        law = (np.log(tastes.item_weight[item_number])[None, :] + np.log(tilt)).astype(np.float32)
        results["generator's law"] = scored(ranking.top_k_from_scores(law, seen, 20))
    results["_sizes"] = {"users": users, "items": cardinality - 2}
    return results


def main() -> None:
    from recsys_ray import synthetic

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--demo-interactions", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    n = args.interactions
    sized = synthetic.SyntheticConfig(interactions=n, users=max(1000, n // 10), items=max(500, n // 50),
                                      seed=args.seed)
    with_tastes = generation_seconds(sized)
    without = generation_seconds(sized.model_copy(update={"taste_groups": 0}))
    print(f"generate {n:,} events ({sized.users:,} users, {sized.items:,} items), CPU seconds, best of 3: "
          f"taste groups {with_tastes:.2f}s, --taste-groups 0 {without:.2f}s")

    demo = synthetic.SyntheticConfig(interactions=args.demo_interactions, seed=args.seed)
    for label, cfg in (("default", demo), ("--taste-groups 0", demo.model_copy(update={"taste_groups": 0}))):
        results = structure(cfg)
        sizes = results.pop("_sizes")
        print(f"{label}: {args.demo_interactions:,} events, {sizes['users']:,} evaluation users, "
              f"{sizes['items']:,} items")
        for name, values in results.items():
            print(f"  {name:16s} " + "  ".join(f"{k} {values[k]:.4f}" for k in SHOWN))


if __name__ == "__main__":
    main()
