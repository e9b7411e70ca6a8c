"""CLI commands for pipelines (run, status, resume, ...): added as the workflows land."""

from __future__ import annotations

import json


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


def add_commands(sub) -> None:
    """Register the workflow subcommands on the ``frugalcv`` parser."""
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
