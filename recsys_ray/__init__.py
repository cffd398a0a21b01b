"""recsys_ray: raw recommender events in, leakage-free training data out, on Ray."""

__version__ = "0.1.0"
