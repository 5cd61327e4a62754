"""An Envoy ext_authz gRPC client built from Envoy's published protos (PyPI `xds-protos`,
with `grpcio`), independent of the agent's own generated types.

Usage: ext_authz_client.py TARGET < cases.json   (TARGET: unix:/path or host:port)
Each case: {"name", "headers": {...}} or {"name", "empty": true} (no HTTP attributes) or
{"name", "health": true}. Prints one JSON array of results.
"""
import json
import sys

import grpc
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main():
    target = sys.argv[1]
    cases = json.load(sys.stdin)
    out = []
    # gRPC's default :authority for a unix: target is the socket path, which is not a valid
    # HTTP/2 authority; Envoy sends its cluster name, and other clients must set one too.
    options = [("grpc.default_authority", "localhost")] if target.startswith("unix:") else []
    with grpc.insecure_channel(target, options=options) as channel:
        authz = external_auth_pb2_grpc.AuthorizationStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        for case in cases:
            result = {"name": case["name"]}
            try:
                if case.get("health"):
                    r = health.Check(health_pb2.HealthCheckRequest(service=case.get("service", "")), timeout=10)
                    result["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
                    out.append(result)
                    continue
                if case.get("empty"):
                    req = external_auth_pb2.CheckRequest()
                else:
                    http = attribute_context_pb2.AttributeContext.HttpRequest(
                        method="GET", path=case.get("path", "/orders/17"), host="shop.example", headers=case["headers"]
                    )
                    req = external_auth_pb2.CheckRequest(
                        attributes=attribute_context_pb2.AttributeContext(
                            request=attribute_context_pb2.AttributeContext.Request(http=http)
                        )
                    )
                r = authz.Check(req, timeout=10)
                result["code"] = r.status.code
                if r.HasField("ok_response"):
                    result["allowed"] = True
                    result["upstream_headers"] = {h.header.key: h.header.value for h in r.ok_response.headers}
                    result["removed_headers"] = list(r.ok_response.headers_to_remove)
                else:
                    d = r.denied_response
                    result["allowed"] = False
                    result["http_status"] = d.status.code
                    result["headers"] = {h.header.key: h.header.value for h in d.headers}
            except grpc.RpcError as e:
                result["grpc_error"] = e.code().name
            out.append(result)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
