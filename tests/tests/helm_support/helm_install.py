"""`helm install` by Helm's own code (the C library in PyPI's helm-sdkpy
wheel) against a stand-in Kubernetes API server in this process, which
answers discovery, has no objects, and accepts every write. Prints the
release's manifest: what Helm rendered and sent.

usage: python3 helm_install.py LIBRARY CHART RELEASE NAMESPACE VALUES_JSON
"""
import ctypes
import json
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def resources(group_version, *rows):
    return {
        "kind": "APIResourceList",
        "groupVersion": group_version,
        "resources": [
            {"name": n, "singularName": n[:-1], "namespaced": ns, "kind": k, "verbs": VERBS}
            for n, k, ns in rows
        ],
    }


GROUPS = ["apps", "rbac.authorization.k8s.io", "monitoring.coreos.com"]
DISCOVERY = {
    "/version": {"major": "1", "minor": "33", "gitVersion": "v1.33.0"},
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/apis": {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": g,
                "versions": [{"groupVersion": g + "/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": g + "/v1", "version": "v1"},
            }
            for g in GROUPS
        ],
    },
    "/api/v1": resources(
        "v1",
        ("namespaces", "Namespace", False),
        ("services", "Service", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("secrets", "Secret", True),
    ),
    "/apis/apps/v1": resources("apps/v1", ("daemonsets", "DaemonSet", True)),
    "/apis/rbac.authorization.k8s.io/v1": resources(
        "rbac.authorization.k8s.io/v1",
        ("clusterroles", "ClusterRole", False),
        ("clusterrolebindings", "ClusterRoleBinding", False),
    ),
    "/apis/monitoring.coreos.com/v1": resources(
        "monitoring.coreos.com/v1", ("servicemonitors", "ServiceMonitor", True)
    ),
}


class Api(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path in DISCOVERY:
            return self.reply(200, DISCOVERY[path])
        if "labelSelector=" in self.path:
            return self.reply(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": []})
        self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "NotFound", "code": 404, "message": "not found"})

    def written(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            return json.loads(raw or b"{}")
        except ValueError:  # protobuf: the release record, a Secret
            return {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "release"}}

    def do_POST(self):
        self.reply(201, self.written())

    def do_PUT(self):
        self.reply(200, self.written())

    do_PATCH = do_PUT


def main():
    library, chart, release, namespace, values = sys.argv[1:6]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as kubeconfig:
        kubeconfig.write(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "k", "cluster": {"server": "http://127.0.0.1:%d" % server.server_address[1]}}],
            "users": [{"name": "u", "user": {}}],
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": namespace}}],
        }))
        kubeconfig.flush()
        lib = ctypes.CDLL(library)
        lib.helm_sdkpy_last_error.restype = ctypes.c_char_p
        handle = ctypes.c_ulonglong()
        if lib.helm_sdkpy_config_create(namespace.encode(), kubeconfig.name.encode(), b"", b"{}",
                                        ctypes.byref(handle)) != 0:
            sys.exit("config: %s" % lib.helm_sdkpy_last_error())
        options = {"wait": False, "timeout_seconds": 30, "disable_openapi_validation": True,
                   "server_side_apply": "false"}
        out = ctypes.c_char_p()
        if lib.helm_sdkpy_install(handle, release.encode(), chart.encode(), values.encode(), b"",
                                  json.dumps(options).encode(), ctypes.byref(out)) != 0:
            sys.exit("install: %s" % lib.helm_sdkpy_last_error())
    sys.stdout.write(json.loads(out.value)["manifest"])


main()
