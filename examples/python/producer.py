#!/usr/bin/env python3
"""Submit an import job the way a producer in any language does, and watch it finish.

Stubs are generated from the repository's .proto files with grpcio-tools at start (into a
temporary directory), so this script always speaks the current contract:

  1. publish one protobuf `ImportJob` (or its protobuf-JSON form, with --json) to the jobs
     exchange with routing key `import.job`, persistent, mandatory, with publisher confirms
     and the job id as message_id (the queue contract: proto/src/queue.rs);
  2. follow it with `ImportService.WatchJob` over gRPC until the stream ends;
  3. exit 0 when the job COMPLETED, 3 when it ended any other way, 2 on bad usage.

Requirements: `pip install grpcio-tools pika` (examples/python/requirements.txt).

Example:
  CLIO_CONNECT_TOKEN=<job_submitter and reader credential> \\
  python3 examples/python/producer.py --import-addr 127.0.0.1:50052 \\
      --connection <connection id> --resources contacts matters
"""

import argparse
import importlib
import os
import pathlib
import sys
import tempfile
import time
import uuid

import grpc
import pika
from google.protobuf import json_format
from grpc_tools import protoc

REPO = pathlib.Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto" / "proto"
JOB_ROUTING_KEY = "import.job"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
FINAL = {"JOB_STATUS_COMPLETED", "JOB_STATUS_FAILED", "JOB_STATUS_CANCELLED", "JOB_STATUS_DEAD_LETTERED"}


def generate_stubs(out: pathlib.Path):
    """Compiles every contract into `out` and returns the imports module pair."""
    well_known = pathlib.Path(importlib.import_module("grpc_tools").__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    status = protoc.main([
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *sources,
    ])
    if status != 0:
        sys.exit(f"protoc failed ({status}) on {PROTO_ROOT}")
    sys.path.insert(0, str(out))
    messages = importlib.import_module("clio_connect.imports.v1.imports_pb2")
    services = importlib.import_module("clio_connect.imports.v1.imports_pb2_grpc")
    return messages, services


def publish(args, job, messages) -> None:
    body, content_type = (
        (json_format.MessageToJson(job).encode(), JSON)
        if args.json
        else (job.SerializeToString(), PROTOBUF)
    )
    connection = pika.BlockingConnection(pika.URLParameters(args.amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            exchange=args.exchange,
            routing_key=JOB_ROUTING_KEY,
            body=body,
            properties=pika.BasicProperties(
                content_type=content_type, delivery_mode=2, message_id=job.job_id
            ),
            mandatory=True,
        )
    finally:
        connection.close()
    print(f"published job {job.job_id} ({content_type})", flush=True)


def watch(args, job_id, messages, services) -> str:
    """Follows the job until its stream ends; returns its final status name."""
    metadata = [("authorization", f"Bearer {args.token}")]
    stub = services.ImportServiceStub(grpc.insecure_channel(args.import_addr))
    deadline = time.monotonic() + args.timeout
    status = "JOB_STATUS_UNSPECIFIED"
    while time.monotonic() < deadline:
        try:
            for progress in stub.WatchJob(
                messages.WatchJobRequest(job_id=job_id), metadata=metadata, timeout=args.timeout
            ):
                status = messages.JobStatus.Name(progress.job.status)
                fetched = sum(r.records_fetched for r in progress.job.progress)
                print(f"{status} fetched={fetched}", flush=True)
            if status in FINAL:
                return status
        except grpc.RpcError as error:
            # Not consumed from the queue yet: the job is unknown for a moment.
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        time.sleep(0.2)
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-url", default=os.environ.get("CLIO_CONNECT_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    parser.add_argument("--exchange", default="import", help="the jobs exchange (<prefix>import)")
    parser.add_argument("--import-addr", default="127.0.0.1:50052")
    parser.add_argument("--token", default=os.environ.get("CLIO_CONNECT_TOKEN"))
    parser.add_argument("--connection", required=True)
    parser.add_argument("--resources", nargs="+", default=["contacts"])
    parser.add_argument("--json", action="store_true", help="publish protobuf-JSON instead of protobuf")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    if not args.token:
        parser.error("a credential is needed: --token or CLIO_CONNECT_TOKEN")

    with tempfile.TemporaryDirectory() as out:
        messages, services = generate_stubs(pathlib.Path(out))
        job = messages.ImportJob(
            job_id=str(uuid.uuid4()),
            connection_id=args.connection,
            resources=args.resources,
            mode=messages.IMPORT_MODE_FULL,
            requested_by="examples/python/producer.py",
        )
        publish(args, job, messages)
        status = watch(args, job.job_id, messages, services)
    print(f"job {job.job_id} ended {status}", flush=True)
    return 0 if status == "JOB_STATUS_COMPLETED" else 3


if __name__ == "__main__":
    sys.exit(main())
