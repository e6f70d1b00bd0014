#!/usr/bin/env python3
"""A Riemann server stand-in for scaph's integration tests.

It decodes what a client sends with the protobuf module that the PyPI package
`riemann-client` ships (generated from Riemann's own proto file), so the test
does not depend on scaph's prost code, and acknowledges every message the way
Riemann does (a `Msg` with ok=true, length-prefixed).

Output on stdout, one line each (values percent-encoded, so any text fits):
    listening PORT
    event service=S host=H metric=M ttl=T time=SECS state=S description=D tags=A,B attr.KEY=VALUE ...
    msg events=N tls_peer=CN
(`msg` closes the events of one message.)

Usage: riemann_receiver.py [--port N] [--tls CA CERT KEY]
With --tls it requires a client certificate signed by CA (mutual TLS).
Listens on 127.0.0.1 only; runs until killed.
"""
import argparse
import socket
import socketserver
import ssl
import struct
import sys
import threading
import urllib.parse

from riemann_client import riemann_pb2

LOCK = threading.Lock()


def q(value):
    return urllib.parse.quote(str(value), safe="")


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def metric_of(event):
    if event.HasField("metric_sint64"):
        return float(event.metric_sint64)
    if event.HasField("metric_d"):
        return event.metric_d
    if event.HasField("metric_f"):
        return float(event.metric_f)
    return float("nan")


def describe(event):
    fields = [
        "event",
        "service=" + q(event.service),
        "host=" + q(event.host),
        "metric=" + repr(metric_of(event)),
        "ttl=" + repr(event.ttl),
        "time=" + str(event.time),
        "state=" + q(event.state),
        "description=" + q(event.description),
        "tags=" + ",".join(q(t) for t in event.tags),
    ]
    fields += ["attr." + q(a.key) + "=" + q(a.value) for a in event.attributes]
    return " ".join(fields)


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        peer = ""
        if isinstance(sock, ssl.SSLSocket):
            cert = sock.getpeercert() or {}
            for rdn in cert.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        peer = value
        while True:
            head = recv_exact(sock, 4)
            if head is None:
                return
            (length,) = struct.unpack(">I", head)
            body = recv_exact(sock, length)
            if body is None:
                return
            msg = riemann_pb2.Msg()
            msg.ParseFromString(body)
            lines = [describe(e) for e in msg.events]
            lines.append("msg events=%d tls_peer=%s" % (len(msg.events), q(peer)))
            with LOCK:
                sys.stdout.write("\n".join(lines) + "\n")
                sys.stdout.flush()
            reply = riemann_pb2.Msg()
            reply.ok = True
            out = reply.SerializeToString()
            sock.sendall(struct.pack(">I", len(out)) + out)


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, port, tls):
        super().__init__(("127.0.0.1", port), Handler)
        self.tls = None
        if tls:
            ca, cert, key = tls
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            ctx.load_verify_locations(ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
            self.tls = ctx

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True)
        return sock, addr

    def handle_error(self, request, client_address):
        pass  # a client that hangs up mid-message is not our concern


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls", nargs=3, metavar=("CA", "CERT", "KEY"))
    args = parser.parse_args()
    server = Server(args.port, args.tls)
    print("listening %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
