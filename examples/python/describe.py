#!/usr/bin/env python3
"""What `grpcurl <address> list` and `describe` show, from a Python client.

Lists the services a clio-connect service offers through gRPC server reflection and
resolves each one's methods with their request and response types, the way grpcurl and
other tools do: the server sends its .proto descriptors (and their imports), the client
builds a descriptor pool from them. Prints JSON:

    {"clio_connect.auth.v1.AuthService": {"GetApp": {"input": "...", "output": "..."}}, ...}

Usage:
    PY=$(examples/python/ensure-venv.sh) && "$PY" examples/python/describe.py 127.0.0.1:50051
"""

import argparse
import json
import sys

import grpc
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def describe(address):
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        described = {}
        for name in database.get_services():
            service = pool.FindServiceByName(name)
            described[name] = {
                method.name: {
                    "input": method.input_type.full_name,
                    "output": method.output_type.full_name,
                    # Resolving every field proves the imported files came too.
                    "input_fields": [f.name for f in method.input_type.fields],
                }
                for method in service.methods
            }
        return described


def main():
    parser = argparse.ArgumentParser(
        description="List a clio-connect service's gRPC services and methods via reflection."
    )
    parser.add_argument("address", help="host:port of auth-svc, import-svc or audit-svc")
    args = parser.parse_args()
    try:
        described = describe(args.address)
    except grpc.RpcError as error:
        print(f"describe.py: {args.address}: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    json.dump(described, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
