"""Cluster verbs: `submit`, `jobs list|status|logs|stop`, `cluster up|down|status`."""

from __future__ import annotations

import argparse
import sys

from lmstack.cli.common import add_verb, print_json


def cmd_submit(args: argparse.Namespace) -> None:
    from lmstack.cluster import jobs

    rest = list(args.overrides)
    verb = rest.pop(0) if rest and "=" not in rest[0] else "train"
    if bad := [kv for kv in args.env if "=" not in kv]:
        raise SystemExit(f"lmstack submit: error: --env {bad[0]!r}: expected KEY=VALUE")
    env = dict(kv.split("=", 1) for kv in args.env)
    try:
        jobs.check_env(env)  # before anything is uploaded or submitted
    except ValueError as err:
        raise SystemExit(f"lmstack submit: error: {err}") from None
    job_id = jobs.submit(args.recipe, verb, rest, address=args.address, run_dir=args.run_dir, env_vars=env,
                         submission_id=args.submission_id)
    print(f"submitted {job_id}: lmstack {verb} {args.recipe}", file=sys.stderr)
    if args.no_wait:
        print(job_id)
        return
    status = jobs.follow(job_id, args.address)
    print(f"job {job_id}: {status}", file=sys.stderr)
    if status != "SUCCEEDED":
        raise SystemExit(1)


def cmd_jobs(args: argparse.Namespace) -> None:
    from lmstack.cluster import jobs

    if args.jobs_verb == "list":
        for row in jobs.list_jobs(args.address):
            print(f"{row['submission_id']}\t{row['status']}\t{row['entrypoint']}")
    elif args.jobs_verb == "status":
        print_json(jobs.job_status(args.job_id, args.address))
    elif args.jobs_verb == "logs":
        if args.follow:
            jobs.follow(args.job_id, args.address)
        else:
            print(jobs.logs(args.job_id, args.address), end="")
    elif args.jobs_verb == "stop":
        print(f"{args.job_id}: {'stop requested' if jobs.stop(args.job_id, args.address) else 'already ended'}")


def cmd_cluster(args: argparse.Namespace) -> None:
    from lmstack.cluster import local

    if args.cluster_verb == "up":
        autoscaling = None
        if args.autoscale_max:
            autoscaling = local.Autoscaling(worker_cpus=args.worker_cpus, max_workers=args.autoscale_max,
                                            idle_timeout_s=args.idle_timeout_s, object_store_mb=args.object_store_mb)
        c = local.up(args.workers, args.state_dir, head_cpus=args.head_cpus, worker_cpus=args.worker_cpus,
                     object_store_mb=args.object_store_mb, autoscaling=autoscaling)
        print_json(local.status(c.state_dir))
        env = " ".join(f"{k}={v}" for k, v in c.env().items())
        print(f"# ray.init: RAY_ADDRESS={c.address} {env}\n"
              f"# jobs:     lmstack submit RECIPE train --address {c.dashboard_url}", file=sys.stderr)
    elif args.cluster_verb == "down":
        c = local.down(args.state_dir)
        print(f"stopped the local cluster at {c.gcs_address}", file=sys.stderr)
    else:
        print_json(local.status(args.state_dir))


def register(verbs) -> None:
    p = add_verb(verbs, "submit", cmd_submit,
                 "submit `lmstack VERB RECIPE` to a Ray cluster as a job and stream its logs")
    p.set_defaults(run_dir=None)
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment for the job (not for secrets: the Jobs API shows it; credentials come from "
                        "the cluster's roles, service accounts or Secrets)")
    p.add_argument("--submission-id", help="the job's id (default: Ray's)")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")
    p.usage = "lmstack submit RECIPE [VERB] [k=v ...] --address http://HEAD:8265"

    jobs = verbs.add_parser("jobs", help="Ray jobs on a cluster: list, status, logs, stop")
    sub = jobs.add_subparsers(dest="jobs_verb", required=True)
    for name, help_ in [("list", "every job"), ("status", "one job's status"), ("logs", "one job's logs"),
                        ("stop", "stop a running job")]:
        q = sub.add_parser(name, help=help_)
        if name != "list":
            q.add_argument("job_id")
        if name == "logs":
            q.add_argument("--follow", "-f", action="store_true")
        q.add_argument("--address", help="the dashboard, http://HEAD:8265 (default: RAY_ADDRESS)")
        q.set_defaults(fn=cmd_jobs)

    cluster = verbs.add_parser("cluster", help="a multi-node Ray cluster on this machine (development, tests)")
    sub = cluster.add_subparsers(dest="cluster_verb", required=True)
    for name, help_ in [("up", "start a head and N worker nodes"), ("down", "stop exactly what `up` started"),
                        ("status", "nodes, addresses, PIDs")]:
        q = sub.add_parser(name, help=help_)
        q.add_argument("--state-dir", help="where the cluster's state file, token and logs live "
                       "(default: LMSTACK_CLUSTER_DIR, else runs/.cluster)")
        if name == "up":
            q.add_argument("--workers", type=int, default=2)
            q.add_argument("--head-cpus", type=float, default=1)
            q.add_argument("--worker-cpus", type=float, default=1, help="logical CPUs per worker node")
            q.add_argument("--object-store-mb", type=int, default=150)
            q.add_argument("--autoscale-max", type=int, default=0, metavar="N",
                           help="also let Ray's autoscaler add up to N worker nodes on demand (fake provider)")
            q.add_argument("--idle-timeout-s", type=float, default=60, help="autoscaled nodes idle this long go")
        q.set_defaults(fn=cmd_cluster)
