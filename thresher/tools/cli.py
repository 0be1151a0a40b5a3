"""The `thresher` command: run the embedded stack, deploy APIs, submit and follow jobs."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from thresher.core import auth
from thresher.core.config import load_config
from thresher.core.errors import ThresherError
from thresher.core.names import ENV_API_KEY, GRPC_AUTHORIZATION_KEY
from thresher.core.queue.registry import QUEUE_BACKENDS
from thresher.core.yamlfile import load_yaml
from thresher.tools.job import Job
from thresher.tools.progress import batches_done
from thresher.tools.sdk import Client


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ThresherError as e:
        print(f"error ({e.kind}): {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thresher", description=__doc__)
    parser.add_argument("--url", help="the gateway (default: $THRESHER_URL or http://127.0.0.1:8888)")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="run the embedded stack until Ctrl-C")
    up.add_argument("--data-dir", default=None, help="where state and logs live (default ./.thresher)")
    up.add_argument("--port", type=int, default=8888, help="the gateway's port on 127.0.0.1 (0: any free port)")
    up.add_argument("--apis", help="a YAML file of Batch APIs to deploy at start")
    up.add_argument("--config", help="a thresher.yaml settings file")
    # AWS credentials come from the usual AWS_* variables or the settings file: a command line is visible to all.
    backends = up.add_argument_group("backends (default: SQLite queues and local files)")
    backends.add_argument("--queue-backend", choices=list(QUEUE_BACKENDS), help="where job queues live (queue.backend)")
    backends.add_argument("--sqs-endpoint-url", help="an SQS-compatible endpoint instead of AWS's")
    backends.add_argument("--sqs-region", help="the SQS region (else AWS_DEFAULT_REGION)")
    backends.add_argument("--s3-endpoint-url", help="an S3-compatible endpoint for s3:// inputs instead of AWS's")
    backends.add_argument("--s3-region", help="the S3 region (else AWS_DEFAULT_REGION)")
    backends.add_argument(
        "--local-roots", help="directories (':'-separated) that local inputs may read (default: none; '/': any)"
    )
    up.set_defaults(run=_up)

    add_key = commands.add_parser("add-key", help="make an API key and add it to the keys file; prints it once")
    add_key.add_argument("name", help="the key's name, recorded as the owner of the jobs it submits")
    add_key.add_argument("--scopes", default=auth.SUBMIT, help="comma-separated: submit, read, admin (default submit)")
    add_key.add_argument("--keys-file", help="default: auth.keys_file, else <data dir>/api_keys (thresher up's)")
    add_key.set_defaults(run=_add_key)

    deploy = commands.add_parser("deploy", help="deploy (or update) the Batch APIs of a YAML file")
    deploy.add_argument("file")
    deploy.set_defaults(run=_deploy)

    delete = commands.add_parser("delete", help="delete a Batch API: its jobs in progress end stopped")
    delete.add_argument("api")
    delete.add_argument("--delete-jobs", action="store_true", help="also forget its jobs (by default they are kept)")
    delete.set_defaults(run=_delete)

    submit = commands.add_parser("submit", help="submit a job (a JSON file, or - for standard input)")
    submit.add_argument("api")
    submit.add_argument("file")
    submit.add_argument("--wait", action="store_true", help="follow progress; exit 1 unless the job succeeds")
    submit.set_defaults(run=_submit)

    get = commands.add_parser("get", help="show a job")
    get.add_argument("job_id")
    get.add_argument("-o", "--output", choices=["text", "json"], default="text")
    get.set_defaults(run=_get)

    listing = commands.add_parser("list", help="list jobs, newest first")
    listing.add_argument("api", nargs="?", default="")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(run=_list)

    stop = commands.add_parser("stop", help="stop a job")
    stop.add_argument("job_id")
    stop.set_defaults(run=_stop)

    logs = commands.add_parser("logs", help="a job's worker and dequeuer logs")
    logs.add_argument("job_id")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the job ends")
    logs.set_defaults(run=_logs)

    results = commands.add_parser("results", help="a job's results as JSON Lines, in batch order")
    results.add_argument("job_id")
    results.add_argument("-o", "--output", metavar="FILE", help="write them to FILE (default: standard output)")
    results.add_argument("-f", "--follow", action="store_true", help="keep writing new ones until the job ends")
    results.add_argument("--items", action="store_true", help="each with its batch's items")
    results.set_defaults(run=_results)

    failed = commands.add_parser("failed", help="list a job's dead-lettered batches with their errors")
    failed.add_argument("job_id")
    failed.add_argument("-o", "--output", choices=["text", "json"], default="text")
    failed.set_defaults(run=_failed)

    retry = commands.add_parser("retry", help="submit a new job made of a finished job's failed batches")
    retry.add_argument("job_id")
    retry.add_argument("--wait", action="store_true", help="follow progress; exit 1 unless the new job succeeds")
    retry.set_defaults(run=_retry)
    return parser


def _up(args: argparse.Namespace) -> int:
    from thresher.tools.services import GATEWAY
    from thresher.tools.supervisor import Stack, make_data_dir_private, run_stack
    from thresher.v1 import jobs_pb2, jobs_pb2_grpc

    config = load_config(args.config)
    if args.data_dir:
        config.data_dir = Path(args.data_dir)
    config.addresses.gateway = f"127.0.0.1:{args.port}"
    for value, section, name in [
        (args.queue_backend, config.queue, "backend"),
        (args.sqs_endpoint_url, config.queue, "sqs_endpoint_url"),
        (args.sqs_region, config.queue, "sqs_region"),
        (args.s3_endpoint_url, config.inputs, "s3_endpoint_url"),
        (args.s3_region, config.inputs, "s3_region"),
        (args.local_roots, config.inputs, "local_roots"),
    ]:
        if value is not None:
            setattr(section, name, value)
    data_dir = Path(config.data_dir).resolve()
    make_data_dir_private(data_dir)
    own_keys = not config.auth.keys_file  # else the keys file is the operator's, and so are its keys
    if own_keys:
        config.auth.keys_file = str(auth.ensure_local_key(data_dir))
    api_key = auth.read_api_key(data_dir) if own_keys else os.environ.get(ENV_API_KEY)

    async def on_ready(stack: Stack) -> None:
        if args.apis:
            from thresher.core import rpc, trust
            from thresher.core.apis import load_api_file

            credentials = ((GRPC_AUTHORIZATION_KEY, auth.authorization(api_key)),) if api_key else ()
            token = trust.load(stack.config).token(trust.GATEWAY)  # it deploys as the gateway would, with the API key
            async with rpc.channel(stack.config.addresses.scheduler, stack.config.tls) as channel:
                jobs = rpc.Client(jobs_pb2_grpc.JobsStub(channel), token)
                for spec in load_api_file(args.apis):
                    await jobs.DeployApi(jobs_pb2.DeployApiRequest(api=spec), metadata=credentials)
                    print(f"deployed API {spec.name}")
        print(f"Thresher is up: {GATEWAY.endpoint(stack.config)}  (Ctrl-C stops it)")
        for service, where in stack.endpoints().items():
            print(f"  {service:<10} " + "  ".join(f"{kind} {address}" for kind, address in where.items()))
        print(
            f"  data: {stack.data_dir}  logs: {stack.data_dir / 'logs'}  endpoints: {stack.data_dir / 'endpoints.json'}"
        )
        if own_keys:
            print(f"  API key: {data_dir / auth.API_KEY_FILE}  (the CLI reads <THRESHER_DATA_DIR>/api_key)")
        else:
            print(f"  API keys: {config.auth.keys_file}")
        print(f"  local inputs: {_local_inputs(config.inputs.local_roots, data_dir)}")
        sys.stdout.flush()

    asyncio.run(run_stack(config, on_ready))
    return 0


def _local_inputs(local_roots: str, data_dir: Path) -> str:
    """What file sources may read, said plainly, with a warning when that includes the data dir (the admin key)."""
    roots = [Path(root).resolve() for root in local_roots.split(os.pathsep) if root]
    if not roots:
        return "none (--local-roots DIR lets file sources read DIR)"
    exposed = any(data_dir == root or root in data_dir.parents for root in roots)
    warning = f"  WARNING: {data_dir} is inside: a submit key can read its files, the admin key too" if exposed else ""
    return local_roots + warning


def _add_key(args: argparse.Namespace) -> int:
    config = load_config()
    keys_file = Path(args.keys_file or config.auth.keys_file or Path(config.data_dir) / auth.KEYS_FILE)
    key = auth.generate_key()
    auth.add_key(keys_file, args.name, args.scopes.split(","), key)
    # The key alone on stdout, so that scripts can take it: `export THRESHER_API_KEY=$(thresher add-key ...)`.
    print(f"added API key {args.name!r} ({args.scopes}) to {keys_file}; it is shown only now:", file=sys.stderr)
    print(key)
    return 0


def _deploy(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        print(f"error: cannot read {path}: {e}", file=sys.stderr)
        return 2
    definitions = load_yaml(text, str(path))
    for api in Client(args.url).deploy(definitions, path.resolve().parent):
        print(f"deployed API {api['name']}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    reply = Client(args.url).delete_api(args.api, args.delete_jobs)
    stopped = reply["stopped_jobs"]
    print(f"deleted API {args.api}; jobs stopped: {', '.join(stopped) if stopped else 'none'}")
    if args.delete_jobs:
        print(f"jobs forgotten: {reply['deleted_jobs']}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    body = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    job = Client(args.url).submit_text(args.api, body)  # as written: the gateway checks it, items reach workers as is
    print(f"submitted job {job.id} to {args.api}")
    return _wait(job) if args.wait else 0


def _get(args: argparse.Namespace) -> int:
    status = Client(args.url).job(args.job_id).status()
    print(json.dumps(status, indent=2) if args.output == "json" else describe(status))
    return 0


def _list(args: argparse.Namespace) -> int:
    print(f"{'job id':<22} {'api':<16} {'status':<24} {'progress':>14}  start time")
    for status in Client(args.url).jobs(args.api, args.limit):
        js = status["job_status"]
        done = batches_done(status)
        total = js.get("total_batch_count", "?")
        print(f"{js['job_id']:<22} {js['api_name']:<16} {js['status']:<24} {f'{done}/{total}':>14}  {js['start_time']}")
    return 0


def _stop(args: argparse.Namespace) -> int:
    status = Client(args.url).job(args.job_id).stop()
    print(f"stopped job {args.job_id} ({status['job_status']['status']})")
    return 0


def _logs(args: argparse.Namespace) -> int:
    for line in Client(args.url).job(args.job_id).logs(args.follow):
        print(line, flush=True)
    return 0


def _results(args: argparse.Namespace) -> int:
    lines = Client(args.url).job(args.job_id).result_lines(follow=args.follow, items=args.items)
    if args.output is None:
        for line in lines:
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
        return 0
    count = 0
    with open(args.output, "wb") as out:
        for line in lines:
            out.write(line)
            count += 1
    print(f"wrote {count} results of job {args.job_id} to {args.output}", file=sys.stderr)
    return 0


def _failed(args: argparse.Namespace) -> int:
    gateway = Client(args.url).gateway
    if args.output == "json":  # as the gateway wrote it: the items byte for byte as submitted
        sys.stdout.buffer.write(gateway.failed_json(args.job_id) + b"\n")
        return 0
    batches = gateway.failed(args.job_id)
    print(f"{len(batches)} failed batches of job {args.job_id}")
    for batch in batches:
        items = json.dumps(batch["items"])
        print(f"- {batch['batch_id']}  attempts {batch['attempts']}  items {items[:80]}")
        print(f"    {batch['error']}")
    return 0


def _retry(args: argparse.Namespace) -> int:
    job = Client(args.url).job(args.job_id).retry()
    print(f"submitted job {job.id} to {job.api_name}: the failed batches of {args.job_id}")
    return _wait(job) if args.wait else 0


def _wait(job: Job) -> int:
    """Follow the job's progress on standard output; 0 if it succeeds, else 1."""
    final = job.wait(out=sys.stdout)
    return 0 if final["job_status"]["status"] == "succeeded" else 1


def describe(status: dict[str, Any]) -> str:
    js, metrics = status["job_status"], status.get("metrics", {})
    counts = js.get("batch_counts") or {}
    average = metrics.get("average_time_per_batch")
    lines = [
        f"job id:     {js['job_id']}  ({js['api_name']})",
        f"status:     {js['status']}" + (f"  ({js['status_reason']})" if js.get("status_reason") else ""),
        f"start time: {js['start_time']}" + (f"   end time: {js['end_time']}" if js.get("end_time") else ""),
        f"batches:    {js.get('total_batch_count', '?')} total, {metrics.get('succeeded', 0)} succeeded, "
        f"{metrics.get('dead_lettered', 0)} dead-lettered, {metrics.get('failed', 0)} failed attempts, "
        f"{js.get('batches_in_queue', 0)} in queue",
        f"items:      {counts.get('items_succeeded', 0)} succeeded, {counts.get('items_dead_lettered', 0)} "
        f"dead-lettered, {counts.get('split', 0)} batches split",
        f"avg time per batch: {f'{average * 1000:.1f} ms' if average is not None else '-'}",
        f"workers:    {js.get('workers')} requested, {json.dumps(js.get('worker_counts', {}))}",
        f"endpoint:   {status.get('endpoint', '')}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
