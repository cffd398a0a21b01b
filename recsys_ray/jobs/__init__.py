"""Command-line entry points (`recsys-ray ...`, `python -m recsys_ray.jobs.build`)."""
