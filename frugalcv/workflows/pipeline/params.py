"""Which pipeline settings become a tracking run's params.

A pipeline run's params are what a user set or what changes results: each stage appears under
``stages.<name>.`` (its ``uses``, ``inputs``, ``params`` and whatever it sets apart from the
stage defaults), and unset values (None, empty) are left out by the Tracker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from frugalcv.workflows.pipeline.config import StageConfig


def _stage_defaults() -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(StageConfig):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def pipeline_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` (a pipeline's ``to_dict()``) with its stage list keyed by stage name and each
    stage's settings that equal the defaults dropped; any other mapping is returned as is."""
    stages = config.get("stages")
    if not isinstance(stages, list) or not all(isinstance(s, Mapping) and "name" in s for s in stages):
        return dict(config)
    defaults = _stage_defaults()
    keyed = {}
    for stage in stages:
        keep = ("uses", "inputs", "params")
        keyed[stage["name"]] = {k: v for k, v in stage.items()
                                if k != "name" and (k in keep or defaults.get(k, object()) != v)}
    return {**config, "stages": keyed}
