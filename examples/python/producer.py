#!/usr/bin/env python3
"""Submit an import job the way a producer in any language does, and watch it finish.

Stubs are generated from the repository's .proto files with grpcio-tools at start (into a
temporary directory), so this script always speaks the current contract:

  1. publish one protobuf `ImportJob` (or, with --json, the same message in protobuf's
     canonical JSON mapping, as `json_format.MessageToJson` prints it) to the jobs exchange
     with routing key `import.job`, persistent, mandatory, with publisher confirms and the
     job id as message_id (the queue contract: proto/src/queue.rs);
  2. follow it with `ImportService.WatchJob` over gRPC until the stream ends;
  3. exit 0 when the job COMPLETED, 3 when it ended any other way (or did not end in
     --timeout seconds), 1 when the broker or import-svc refused or could not be reached,
     2 on bad usage.

Requirements: examples/python/requirements.txt, in a virtual environment that
examples/python/ensure-venv.sh makes (it prints the interpreter to use).

Example (against deploy/local/run-stack.sh):
  PY=$(examples/python/ensure-venv.sh)
  CLIO_CONNECT_TOKEN=<a credential with the job_submitter role> \\
  "$PY" examples/python/producer.py --import-addr 127.0.0.1:50052 \\
      --connection <connection id> --resources contacts matters
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time
import uuid

import grpc
import grpc_tools
import pika
import pika.exceptions
from google.protobuf import json_format
from grpc_tools import protoc

REPO = pathlib.Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto" / "proto"
JOB_ROUTING_KEY = "import.job"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
FINAL = {
    "JOB_STATUS_COMPLETED",
    "JOB_STATUS_FAILED",
    "JOB_STATUS_CANCELLED",
    "JOB_STATUS_DEAD_LETTERED",
}


class Refused(Exception):
    """The broker or import-svc refused, or could not be reached."""


def generate_stubs(out: pathlib.Path):
    """Compiles every contract into `out` and returns the imports module pair."""
    # grpcio-tools ships google/protobuf/*.proto (Timestamp) beside its protoc.
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    status = protoc.main([
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *sources,
    ])
    if status != 0:
        sys.exit(f"protoc failed ({status}) on {PROTO_ROOT}")
    sys.path.insert(0, str(out))
    # The package is clio_connect.imports.v1: no keyword of Python (or Go, Java, C#, JS).
    from clio_connect.imports.v1 import imports_pb2, imports_pb2_grpc

    return imports_pb2, imports_pb2_grpc


def publish(args, job) -> None:
    body, content_type = (
        (json_format.MessageToJson(job).encode(), JSON)
        if args.json
        else (job.SerializeToString(), PROTOBUF)
    )
    try:
        connection = pika.BlockingConnection(pika.URLParameters(args.amqp_url))
    except pika.exceptions.AMQPError as error:
        raise Refused(f"cannot connect to RabbitMQ: {error!r}") from error
    try:
        channel = connection.channel()
        # basic_publish now returns only once the broker confirmed the message, and raises
        # when it refused it or (mandatory) no queue was bound to take it.
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
    except pika.exceptions.AMQPError as error:
        raise Refused(f"RabbitMQ did not take the job on {args.exchange!r}: {error!r}") from error
    finally:
        if connection.is_open:
            connection.close()
    print(f"published job {job.job_id} ({content_type}) to {args.exchange}", flush=True)


def watch(args, job_id, messages, services) -> str:
    """Follows the job until it ends or --timeout passes; returns its last status name."""
    metadata = [("authorization", f"Bearer {args.token}")]
    deadline = time.monotonic() + args.timeout
    status = "JOB_STATUS_UNSPECIFIED"
    with grpc.insecure_channel(args.import_addr) as channel:
        stub = services.ImportServiceStub(channel)
        while (left := deadline - time.monotonic()) > 0:
            try:
                for progress in stub.WatchJob(
                    messages.WatchJobRequest(job_id=job_id), metadata=metadata, timeout=left
                ):
                    job = progress.job
                    status = messages.JobStatus.Name(job.status)
                    fetched = sum(r.records_fetched for r in job.progress)
                    written = sum(r.records_written for r in job.progress)
                    print(f"{status} fetched={fetched} written={written}", flush=True)
                if status in FINAL:
                    return status
            except grpc.RpcError as error:
                code = error.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    break
                # Not consumed from the queue yet: the job is unknown for a moment.
                if code not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                    raise Refused(
                        f"WatchJob at {args.import_addr}: {code.name}: {error.details()}"
                    ) from error
            time.sleep(0.2)
    return status


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Exit status: 0 completed, 3 ended otherwise, 1 refused or unreachable, 2 usage.",
    )
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("CLIO_CONNECT_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        help="RabbitMQ (default: $CLIO_CONNECT_AMQP or the local broker)",
    )
    parser.add_argument("--exchange", default="import", help="the jobs exchange (<prefix>import)")
    parser.add_argument("--import-addr", default="127.0.0.1:50052", help="import-svc's gRPC address")
    parser.add_argument(
        "--token",
        default=os.environ.get("CLIO_CONNECT_TOKEN"),
        help="service credential that may WatchJob (default: $CLIO_CONNECT_TOKEN)",
    )
    parser.add_argument("--connection", required=True, help="the connection id to import from")
    parser.add_argument("--resources", nargs="+", default=["contacts"])
    parser.add_argument(
        "--json", action="store_true", help="publish protobuf's JSON mapping instead of protobuf"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the end")
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
        try:
            publish(args, job)
            status = watch(args, job.job_id, messages, services)
        except Refused as error:
            print(f"producer: {error}", file=sys.stderr, flush=True)
            return 1
    print(f"job {job.job_id} ended {status}", flush=True)
    return 0 if status == "JOB_STATUS_COMPLETED" else 3


if __name__ == "__main__":
    sys.exit(main())
