"""Ranking evaluation without Ray: models' top-K lists and the metrics over them."""
