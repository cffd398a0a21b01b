"""The training-data build on Ray Data.

    plan.py      what the build reads and where it writes (no Ray: mistakes are reported at once)
    inputs.py    how input files are cut into read tasks and read
    dataflow.py  the Ray Data wiring of the pure stages in `recsys_ray.stages`
    writer.py    a version's files and the order it becomes visible (start, parts, manifest last)
    manifest.py  the `Manifest` model every reader reads
    run.py       `build_training_data`: one build, start to commit

`build_training_data` is imported lazily, so that `recsys_ray.build.plan` can be
used without importing Ray.
"""

from __future__ import annotations

from typing import Any

from recsys_ray.build.plan import BuildError, BuildPlan, plan_build

__all__ = ["BuildError", "BuildPlan", "build_training_data", "plan_build"]


def __getattr__(name: str) -> Any:
    if name == "build_training_data":
        from recsys_ray.build.run import build_training_data

        return build_training_data
    raise AttributeError(name)
