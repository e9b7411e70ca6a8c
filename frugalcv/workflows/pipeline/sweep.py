"""Sweeps on Slurm: one pipeline run per value, and ONE job array per stage that differs between values.

The runs advance stage by stage together. Where a stage has the same fingerprint in several runs
(the stages upstream of the swept one) the first of them runs it and the others reuse its outputs
through the fingerprint cache (state ``cached``). The runs whose stage differs (the swept stage and
everything downstream of it) submit it together with ``executor.run_array``: one Slurm job array,
one task per value (times the stage's own array tasks, e.g. a ``shard`` stage's ``tasks``). Each
value stays its own pipeline run: run id, ``frugalcv status``, lineage, MLflow parent run.

    results = run_sweep([cfg_gamma2, cfg_gamma5, cfg_gamma10])   # [(run id, error or None), ...]
"""

from __future__ import annotations

from frugalcv.slurm.executors import make_stage_executor
from frugalcv.workflows.pipeline import lineage as L
from frugalcv.workflows.pipeline.config import PipelineConfig, config_hash
from frugalcv.workflows.pipeline.runner import (
    PipelineFailed,
    _begin,
    _create_run,
    _end,
    _prepare,
    _Run,
    _run_started,
    _step,
)
from frugalcv.workflows.pipeline.schema import to_plain


def run_sweep(cfgs: list[PipelineConfig], executor: str | None = None, *, track: bool = True,
              printer=print) -> list[tuple[str, str | None]]:
    """Run every config of a sweep (same stage names, different values); ``[(run id, error or None)]``."""
    names = [st.name for st in cfgs[0].stages]
    for cfg in cfgs[1:]:
        if [st.name for st in cfg.stages] != names:
            raise ValueError("the configs of a sweep must have the same stages")
    kind = executor or cfgs[0].executor.kind
    runner = make_stage_executor(kind, cfgs[0])
    runs = [_begin(cfg, _create_run(cfg, runner.kind, track, printer), runner.kind, track) for cfg in cfgs]
    for stage in names:
        for r in runs:
            if not r.failed and r.store.read_meta().get("status") == "cancelled":
                r.failed = "cancelled"
        active = [r for r in runs if not r.failed]
        if not active:
            break
        leaders: dict[str, _Run] = {}
        followers: list[tuple[_Run, _Run]] = []
        for r in active:
            fp = L.stage_fingerprint(r.cfg, stage, r.store)
            if fp in leaders:
                followers.append((r, leaders[fp]))
            else:
                leaders[fp] = r
        started = []
        for r in leaders.values():
            prepared = _prepare(r.cfg, stage, r.store, runner, r.tracker, r.parent, r.track, printer)
            if isinstance(prepared, L.StageRecord):
                if prepared.state not in L.DONE:
                    r.failed = prepared.state
            else:
                started.append((r, prepared))
        if started:
            records = _run_started([p for _, p in started], runner, printer)
            for (r, _), rec in zip(started, records, strict=True):
                if rec.state not in L.DONE:
                    r.failed = rec.state
        for r, leader in followers:
            if leader.failed:
                r.store.update(stage, state="failed", error=f"not run: the same stage failed in run {leader.run_id} "
                               f"(frugalcv status {leader.run_id})")
                r.failed = "failed"
            else:
                _step(r, stage, runner, printer)  # cached from the leader's run
    results: list[tuple[str, str | None]] = []
    for r in runs:
        try:
            _end(r, printer)
            results.append((r.run_id, None))
        except PipelineFailed as e:
            results.append((r.run_id, str(e)))
    return results


def sweep_stages(cfgs: list[PipelineConfig]) -> list[str]:
    """The stages that differ between the configs of a sweep: their own settings (resources aside,
    as in the fingerprint) differ, or they reference a stage that does (the swept stage and what
    depends on it)."""
    varying: list[str] = []
    for st in cfgs[0].stages:
        own = {config_hash({**to_plain(cfg.stage(st.name)), "resources": None}) for cfg in cfgs}
        refs = {other for other, _ in st.references().values()}
        if len(own) > 1 or refs & set(varying):
            varying.append(st.name)
    return varying
