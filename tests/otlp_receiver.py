#!/usr/bin/env python3
"""An OTLP metrics receiver for scaph's integration tests.

It decodes what a client sends with the generated modules of the PyPI
package `opentelemetry-proto` (and `grpcio` for gRPC), so the test does not
depend on scaph's Rust code, and answers the way a collector does.

    otlp_receiver.py --protocol grpc|http --port N [--tls CA CERT KEY]

With --tls it serves TLS and requires a client certificate signed by CA;
each request then reports the client certificate's common name (tls_peer).

Output on stdout, one JSON object a line:
    {"listening": PORT}
    {"protocol": ..., "path": ..., "content_type": ..., "encoding": ...,
     "headers": {...}, "resource": {key: value}, "metrics": [
       {"name", "unit", "kind": "sum"|"gauge", "monotonic", "temporality",
        "points": [{"attributes": {...}, "value", "start", "time"}]}]}
Listens on 127.0.0.1 only; runs until killed.
"""
import argparse
import gzip
import http.server
import json
import ssl
import sys
import threading
from concurrent import futures

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

LOCK = threading.Lock()
TEMPORALITY = {
    metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE: "cumulative",
    metrics_pb2.AGGREGATION_TEMPORALITY_DELTA: "delta",
}


def any_value(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def number(point):
    kind = point.WhichOneof("value")
    return float(getattr(point, kind)) if kind else None


def describe(request, extra):
    out = dict(extra)
    out["resource"] = {}
    out["metrics"] = []
    for rm in request.resource_metrics:
        for kv in rm.resource.attributes:
            out["resource"][kv.key] = any_value(kv.value)
        for sm in rm.scope_metrics:
            out["scope"] = sm.scope.name
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                entry = {"name": m.name, "unit": m.unit, "kind": kind}
                if kind == "sum":
                    data = m.sum
                    entry["monotonic"] = data.is_monotonic
                    entry["temporality"] = TEMPORALITY.get(
                        data.aggregation_temporality, "unspecified"
                    )
                elif kind == "gauge":
                    data = m.gauge
                else:
                    out["metrics"].append(entry)
                    continue
                entry["points"] = [
                    {
                        "attributes": {a.key: any_value(a.value) for a in p.attributes},
                        "value": number(p),
                        "start": p.start_time_unix_nano,
                        "time": p.time_unix_nano,
                    }
                    for p in data.data_points
                ]
                out["metrics"].append(entry)
    return out


def emit(obj):
    with LOCK:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def peer_name(connection):
    if not isinstance(connection, ssl.SSLSocket):
        return ""
    for rdn in (connection.getpeercert() or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return ""


class HttpHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        request = metrics_service_pb2.ExportMetricsServiceRequest()
        request.ParseFromString(body)
        emit(
            describe(
                request,
                {
                    "protocol": "http",
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type", ""),
                    "encoding": encoding,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "tls_peer": peer_name(self.connection),
                },
            )
        )
        answer = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


def serve_grpc(port, tls):
    import grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc

    class Service(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request, context):
            metadata = {k: v for k, v in context.invocation_metadata()}
            names = context.auth_context().get("x509_common_name", [b""])
            emit(
                describe(
                    request,
                    {
                        "protocol": "grpc",
                        "path": "",
                        "content_type": "",
                        "encoding": metadata.get("grpc-encoding", ""),
                        "headers": metadata,
                        "tls_peer": names[0].decode(),
                    },
                )
            )
            return metrics_service_pb2.ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Service(), server)
    if tls:
        ca, cert, key = (open(path, "rb").read() for path in tls)
        credentials = grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=True
        )
        bound = server.add_secure_port(f"127.0.0.1:{port}", credentials)
    else:
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    emit({"listening": bound})
    server.wait_for_termination()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--protocol", choices=["grpc", "http"], required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls", nargs=3, metavar=("CA", "CERT", "KEY"))
    args = parser.parse_args()
    if args.protocol == "grpc":
        serve_grpc(args.port, args.tls)
        return
    http.server.ThreadingHTTPServer.allow_reuse_address = True
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), HttpHandler)
    if args.tls:
        ca, cert, key = args.tls
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.load_verify_locations(ca)
        context.verify_mode = ssl.CERT_REQUIRED
        server.socket = context.wrap_socket(server.socket, server_side=True)
    emit({"listening": server.server_address[1]})
    server.serve_forever()


if __name__ == "__main__":
    main()
