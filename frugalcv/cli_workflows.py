"""CLI commands for pipelines: run, status, resume, cancel, sweep, sync, and the dev ``cluster``.

Commands that take a RUN (an id, or ``latest``) find the runs folder this way: ``--root ROOT``
(the pipeline's ``storage.root``), else ``--pipeline FILE`` (its ``storage.root`` after any
``-o``), else ``$FRUGALCV_ROOT``, else ``./frugalcv-runs`` — the shipped pipelines' default
root, so ``frugalcv status latest`` works from the folder the pipeline was run from.
"""

from __future__ import annotations

import json
import os


def cmd_cluster(args) -> int:
    from frugalcv.slurm import cluster

    if args.cluster_command == "up":
        st = cluster.cluster_up(nodes=args.nodes, root=args.root, auth=args.auth)
        print(f"Slurm cluster up in {st['root']}: " + ", ".join(f"{n} {s}" for n, s in st["nodes"].items()))
        print(f"clients need: export SLURM_CONF={st['conf']}")
        return 0
    if args.cluster_command == "down":
        cluster.cluster_down(root=args.root)
        print("Slurm cluster stopped")
        return 0
    st = cluster.cluster_status(root=args.root)
    if args.json:
        print(json.dumps(st, indent=1))
    elif not st["running"]:
        print(f"no Slurm cluster running in {st['root']}")
    else:
        print(f"Slurm cluster in {st['root']} (SLURM_CONF={st['conf']})")
        for name, state in st["nodes"].items():
            print(f"  {name:6s} {state}")
        print(f"  {len(st['jobs'])} job(s) in the queue")
    return 0 if st["running"] else 1


def _root(args) -> str:
    from frugalcv.workflows.pipeline.config import DEFAULT_ROOT, StorageConfig, load_pipeline

    if getattr(args, "root", None):
        return StorageConfig(root=args.root).root  # s3://KEY:SECRET@bucket: credentials become options
    if getattr(args, "pipeline", None):
        return load_pipeline(args.pipeline, args.override or []).storage.root
    return os.path.abspath(os.environ.get("FRUGALCV_ROOT") or DEFAULT_ROOT)


def _dry_run(cfg) -> None:
    from frugalcv.workflows.pipeline.plan import (
        check_executor_storage,
        render_plan,
        render_sbatch,
        run_folder,
    )
    from frugalcv.workflows.pipeline.redact import redact

    check_executor_storage(cfg, cfg.executor.kind)
    print(redact(render_plan(cfg)), end="")
    if not cfg.storage.is_local:
        print(f"\n(no sbatch scripts: the slurm executor needs storage.root on a shared filesystem, "
              f"and {redact(cfg.storage.root)} is not one)")
        return
    folder = run_folder(cfg, "<run-id>")
    for stage in cfg.stages:
        print(f"\n--- sbatch for stage {stage.name} ---")
        print(render_sbatch(cfg, stage.name, folder), end="")


def cmd_run(args) -> int:
    from frugalcv.workflows.pipeline.config import load_pipeline
    from frugalcv.workflows.pipeline.runner import run_pipeline

    overrides = list(args.override or [])
    if args.smoke:
        overrides.append(f"smoke_steps={args.smoke}")
    cfg = load_pipeline(args.pipeline, overrides)
    if args.executor:
        cfg.executor.kind = args.executor
    if args.dry_run:
        _dry_run(cfg)
        return 0
    run_pipeline(cfg, args.executor, track=not args.no_track, printer=_printer)
    return 0


def _printer(text: str) -> None:
    from frugalcv.workflows.pipeline.redact import redact

    print(redact(text), flush=True)


def _dry_run_sweep_slurm(configs) -> None:
    """Each value's plan, then the sbatch scripts once: a stage that differs between values as one job array."""
    from frugalcv.workflows.pipeline.plan import (
        array_tasks,
        check_executor_storage,
        render_plan,
        render_sbatch,
        run_folder,
        sbatch_parameters,
    )
    from frugalcv.workflows.pipeline.redact import redact
    from frugalcv.workflows.pipeline.sweep import sweep_stages

    for combo, cfg in configs:
        check_executor_storage(cfg, "slurm")
        print(f"\n=== {redact(' '.join(combo))}")
        print(redact(render_plan(cfg)), end="")
    cfgs = [cfg for _, cfg in configs]
    folder = run_folder(cfgs[0], "<run-id>")
    varying = sweep_stages(cfgs)
    for stage in cfgs[0].stages:
        if stage.name not in varying:
            print(f"\n--- sbatch for stage {stage.name} (once, shared by every value) ---")
            print(render_sbatch(cfgs[0], stage.name, folder), end="")
            continue
        groups: dict[str, list] = {}  # values with other resources go to another array
        for cfg in cfgs:
            groups.setdefault(json.dumps(sbatch_parameters(cfg, stage.name), sort_keys=True, default=str), []).append(cfg)
        for group in groups.values():
            tasks = sum(array_tasks(cfg, stage.name) for cfg in group)
            print(f"\n--- sbatch for stage {stage.name} (job array: {len(group)} value(s), {tasks} task(s)) ---")
            print(render_sbatch(group[0], stage.name, folder, array=tasks), end="")


def cmd_sweep(args) -> int:
    from frugalcv.errors import FrugalError
    from frugalcv.workflows.pipeline.config import load_pipeline
    from frugalcv.workflows.pipeline.overrides import parse_sweep
    from frugalcv.workflows.pipeline.runner import key_metrics, run_pipeline, status

    combos = parse_sweep(args.override or [])
    configs = [(combo, load_pipeline(args.pipeline, combo)) for combo in combos]  # validate all first
    for _, cfg in configs:
        if args.executor:
            cfg.executor.kind = args.executor
    slurm = configs[0][1].executor.kind == "slurm"
    how = ("stages that differ between values run as one Slurm job array each" if slurm else "sequential")
    print(f"sweep: {len(configs)} run(s), one pipeline run each ({how})")
    if args.dry_run:
        if slurm:
            _dry_run_sweep_slurm(configs)
            return 0
        for combo, cfg in configs:
            print(f"\n=== {' '.join(combo)}")
            _dry_run(cfg)
        return 0
    swept = [" ".join(c for c in combo if c not in (args.override or [])) for combo, _ in configs]
    if slurm:
        from frugalcv.workflows.pipeline.sweep import run_sweep

        outcomes = run_sweep([cfg for _, cfg in configs], args.executor, track=not args.no_track)
    else:
        outcomes = []
        for _, cfg in configs:
            try:
                outcomes.append((run_pipeline(cfg, args.executor, track=not args.no_track), None))
            except FrugalError as e:
                outcomes.append(("-", str(e)))
    rows, failed = [], 0
    for values, (_, cfg), (rid, error) in zip(swept, configs, outcomes, strict=True):
        if error is None:
            last = status(rid, cfg.storage.root)["stages"][-1]
            rows.append((rid, values, "finished", key_metrics(last["metrics"], 3)))
        else:
            failed += 1
            rows.append((rid, values, "failed", {}))
            print(f"error: {error}")
    print("\nsweep results")
    for rid, values, state, metrics in rows:
        print(f"  {rid:22s} {values:40s} {state:9s} " + "  ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return 1 if failed else 0


def cmd_status(args) -> int:
    from frugalcv.workflows.pipeline.redact import scrub
    from frugalcv.workflows.pipeline.runner import results_table, status

    st = scrub(status(args.run, _root(args)))
    if args.json:
        print(json.dumps(st, indent=1))
    else:
        print(f"pipeline {st['pipeline']} run {st['run_id']}: {st['status']} (executor {st['executor']})")
        print(results_table(st))
        _print_mlflow(st)
        for s in st["stages"]:
            if s["error"]:
                print(f"\n[{s['stage']}] {s['state']}:\n{s['error']}")
    return 0 if st["status"] in ("finished", "running") else 1


def _print_mlflow(st: dict) -> None:
    """Where the run is tracked; a run still queued in the outbox says how to send it."""
    from frugalcv.sharding.storage import redact
    from frugalcv.workflows.pipeline.outbox import is_placeholder

    parent = st["mlflow"]["parent_run_id"]
    if not parent:
        return
    where = f"experiment {st['mlflow']['experiment']} at {redact(st['mlflow']['uri'])}"
    if any(is_placeholder(i) for i in [parent] + [s["mlflow_run_id"] for s in st["stages"]]):
        print(f"mlflow: not all sent yet ({where} could not be used); send the rest with: "
              f"frugalcv sync {st['run_id']} --root {st['root']}")
    else:
        print(f"mlflow: run {parent}, {where}")


def cmd_resume(args) -> int:
    from frugalcv.workflows.pipeline.runner import resume_run

    resume_run(args.run, _root(args), args.executor, printer=_printer)
    return 0


def cmd_cancel(args) -> int:
    from frugalcv.workflows.pipeline.runner import cancel

    st = cancel(args.run, _root(args))
    print(f"run {st['run_id']}: {st['status']}")
    return 0


def cmd_sync(args) -> int:
    from frugalcv.workflows.pipeline.lineage import run_url
    from frugalcv.workflows.pipeline.runner import load_run, local_experiment
    from frugalcv.workflows.pipeline.tracking import sync_run

    root = _root(args)
    rid, cfg, _ = load_run(args.run, root)
    target = args.uri or cfg.tracking.uri
    if target.startswith("sqlite:") and cfg.storage.is_local:  # artifacts beside the runs, not in ./mlruns
        local_experiment(target, cfg.tracking.experiment, cfg.storage.root)
    report = sync_run(run_url(root, rid), uri=args.uri)
    from frugalcv.workflows.pipeline.redact import redact

    print(f"run {rid}: {report.sent} record(s) sent, {report.already_sent} already sent, "
          f"{len(report.failed)} rejected, {report.remaining} left (store unreachable)")
    for line in report.failed:
        print(f"  rejected: {redact(line)}")
    return 0 if not report.failed and not report.remaining else 1


def _run_locator(p) -> None:
    p.add_argument("run", help="run id, or 'latest'")
    p.add_argument("--root", help="the pipeline's storage.root (default: see --pipeline)")
    p.add_argument("--pipeline", help="take storage.root from this pipeline file (else $FRUGALCV_ROOT, "
                   "else ./frugalcv-runs)")
    p.add_argument("-o", "--override", action="append", metavar="KEY=VALUE", help="override for --pipeline")


#: optimizer steps per training stage (and batches per evaluation) of ``frugalcv run --smoke``
SMOKE_STEPS = 2


def add_commands(sub) -> None:
    """Register the workflow subcommands on the ``frugalcv`` parser."""
    executors = ("inline", "local", "slurm")
    r = sub.add_parser("run", help="run a pipeline (prints the run id, then a results table)")
    r.add_argument("pipeline", help="pipeline YAML file")
    r.add_argument("-o", "--override", action="append", metavar="KEY=VALUE",
                   help="e.g. -o stages.pretrain.epochs=2 (repeatable)")
    r.add_argument("--executor", choices=executors, help="default: the file's executor.kind")
    r.add_argument("--dry-run", action="store_true", help="print the plan and each stage's sbatch script")
    r.add_argument("--no-track", action="store_true", help="no MLflow tracking (lineage and cache still work)")
    r.add_argument("--smoke", nargs="?", type=int, const=SMOKE_STEPS, default=0, metavar="STEPS",
                   help=f"a smoke run: each training stage takes STEPS (default {SMOKE_STEPS}) optimizer steps on "
                        "small batches and each evaluation STEPS batches; try a recipe in minutes")
    r.set_defaults(fn=cmd_run)

    sw = sub.add_parser("sweep", help="one pipeline run per value of comma-list overrides (-o k=2,5,10); "
                        "on slurm, a stage that differs between values is one job array")
    sw.add_argument("pipeline")
    sw.add_argument("-o", "--override", action="append", metavar="KEY=V1,V2,...")
    sw.add_argument("--executor", choices=executors)
    sw.add_argument("--dry-run", action="store_true")
    sw.add_argument("--no-track", action="store_true")
    sw.set_defaults(fn=cmd_sweep)

    st = sub.add_parser("status", help="a run's stages, states, metrics (exit 1 when failed/cancelled)")
    _run_locator(st)
    st.add_argument("--json", action="store_true", help="the schema of frugalcv.workflows.pipeline.runner.status")
    st.set_defaults(fn=cmd_status)

    rs = sub.add_parser("resume", help="continue a run: done stages stay, the interrupted one resumes")
    _run_locator(rs)
    rs.add_argument("--executor", choices=executors, help="default: the executor the run used")
    rs.set_defaults(fn=cmd_resume)

    ca = sub.add_parser("cancel", help="scancel the run's Slurm jobs / stop its local stages; mark it cancelled")
    _run_locator(ca)
    ca.set_defaults(fn=cmd_cancel)

    sy = sub.add_parser("sync", help="replay the run's MLflow outbox (records queued while the store was down)")
    _run_locator(sy)
    sy.add_argument("--uri", help="send to this tracking URI instead of the one each record was made for")
    sy.set_defaults(fn=cmd_sync)

    c = sub.add_parser(
        "cluster", help="a real single-host Slurm cluster for trying the Slurm executor (root)"
    )
    cs = c.add_subparsers(dest="cluster_command", required=True)
    up = cs.add_parser("up", help="start slurmctld and N slurmd nodes n1..nN; wait until all are idle")
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--auth", choices=("none", "munge"), default="none")
    down = cs.add_parser("down", help="cancel jobs, stop the daemons, restore /etc/hosts")
    st = cs.add_parser("status", help="nodes, jobs and SLURM_CONF; exit 1 when not running")
    st.add_argument("--json", action="store_true")
    for p in (up, down, st):
        p.add_argument(
            "--root",
            default=None,
            help="state folder (default $FRUGALCV_SLURM_HOME or ~/.cache/frugalcv/slurm)",
        )
    c.set_defaults(fn=cmd_cluster)
