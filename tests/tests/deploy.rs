//! The deployment artefacts under deploy/, checked with the real tools:
//! Kubernetes' own schemas (the `kubernetes-validate` package), a structural
//! check of what the schemas cannot see (least privilege, names that must
//! agree across files, the ServiceMonitor, whose CRD schema is not bundled),
//! `systemd-analyze verify` on the unit, and the container image built with
//! buildah and run.
mod exporter_support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn k8s_dir() -> PathBuf {
    root().join("deploy/kubernetes")
}

/// The Kubernetes manifests (not the kustomizations, not the ServiceMonitor).
const MANIFESTS: [&str; 5] = [
    "namespace.yaml",
    "serviceaccount.yaml",
    "rbac.yaml",
    "daemonset.yaml",
    "service.yaml",
];

/// `kubernetes-validate`: in the virtual environment `cargo xtask test`
/// makes (target/deploy-venv), else on PATH.
fn validator() -> PathBuf {
    let venv = root().join("target/deploy-venv/bin/kubernetes-validate");
    if venv.is_file() {
        venv
    } else {
        exporter_support::tool(
            "kubernetes-validate",
            "kubernetes-validate (PyPI; `cargo xtask test` installs it)",
        )
    }
}

/// A Python with PyYAML (kubernetes-validate's own), to read YAML as JSON.
fn python() -> PathBuf {
    let sibling = validator().with_file_name("python3");
    if sibling.is_file() {
        sibling
    } else {
        exporter_support::tool("python3", "python3-yaml")
    }
}

/// Every document of a YAML file, as JSON values.
fn yaml(path: &Path) -> Vec<Value> {
    let out = Command::new(python())
        .args(["-c", "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"])
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON from python");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn all_k8s() -> Vec<Value> {
    MANIFESTS
        .iter()
        .flat_map(|f| yaml(&k8s_dir().join(f)))
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn run_validate(version: &str, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(validator())
        .args(["--strict", "--quiet", "--kubernetes-version", version])
        .args(files)
        .output()
        .expect("kubernetes-validate");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The base manifests pass Kubernetes' strict JSON schemas (unknown fields
/// rejected) for the oldest and newest versions the package ships that we
/// target; a manifest with a misspelt field fails, so the check has teeth.
#[test]
fn manifests_validate_against_kubernetes_schemas() {
    let files: Vec<PathBuf> = MANIFESTS.iter().map(|f| k8s_dir().join(f)).collect();
    for version in ["1.30.0", "1.37.0"] {
        let (ok, out) = run_validate(version, &files);
        eprintln!(
            "kubernetes-validate --strict -k {version} {}: {}",
            MANIFESTS.join(" "),
            if ok { "passed" } else { &out }
        );
        assert!(ok, "schema validation failed for {version}:\n{out}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("daemonset.yaml");
    let text = std::fs::read_to_string(k8s_dir().join("daemonset.yaml")).expect("daemonset");
    std::fs::write(
        &bad,
        text.replace(
            "readOnlyRootFilesystem: true",
            "readOnlyRootFileSystem: true",
        ),
    )
    .expect("write");
    let (ok, out) = run_validate("1.37.0", &[bad]);
    assert!(
        !ok && out.contains("readOnlyRootFileSystem"),
        "a misspelt field must fail:\n{out}"
    );
}

/// What the schemas cannot check: the DaemonSet runs with least privilege
/// and everything refers to everything else by the right name.
#[test]
fn daemonset_is_least_privilege_and_consistent() {
    let docs = all_k8s();
    let ds = find(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert!(
        pod["hostNetwork"].is_null() && pod["hostIPC"].is_null(),
        "no host network or IPC"
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    let added: BTreeSet<String> = strings(&sc["capabilities"]["add"]).into_iter().collect();
    let expected: BTreeSet<String> = ["BPF", "DAC_READ_SEARCH", "PERFMON", "SYS_PTRACE"]
        .map(String::from)
        .into();
    assert_eq!(added, expected);
    let args = strings(&c["args"]);
    assert_eq!(args.first().map(String::as_str), Some("prometheus"));
    assert!(args.iter().any(|a| a == "--containers"));
    let env = c["env"].as_array().expect("env");
    assert!(env
        .iter()
        .any(|e| e["name"] == "NODE_NAME"
            && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"));

    // Host mounts: read-only, exactly these, never /proc.
    let volumes = pod["volumes"].as_array().expect("volumes");
    let host_paths: BTreeSet<String> = volumes
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str().map(str::to_owned))
        .collect();
    let expected: BTreeSet<String> = [
        "/sys/class/powercap",
        "/sys/devices/virtual",
        "/sys/fs/cgroup",
    ]
    .map(String::from)
    .into();
    assert_eq!(host_paths, expected);
    for mount in c["volumeMounts"].as_array().expect("mounts") {
        assert_eq!(mount["readOnly"], true, "{mount}");
        let path = mount["mountPath"].as_str().expect("mountPath");
        assert!(!path.starts_with("/proc"), "no /proc mount: {path}");
        let name = &mount["name"];
        assert!(
            volumes.iter().any(|v| v["name"] == *name),
            "mount of an undeclared volume {name}"
        );
    }
    // The flags point at the mounts.
    for (flag, host) in [
        ("--powercap-root=", "/sys/class/powercap"),
        ("--cgroup-root=", "/sys/fs/cgroup"),
    ] {
        let path = args
            .iter()
            .find_map(|a| a.strip_prefix(flag))
            .unwrap_or_else(|| panic!("{flag}"));
        let volume = volumes
            .iter()
            .find(|v| v["hostPath"]["path"] == host)
            .expect("volume");
        assert!(c["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .any(|m| m["name"] == volume["name"] && m["mountPath"] == path));
    }

    // Names agree: service account, RBAC, service, pod labels, ports.
    let sa = find(&docs, "ServiceAccount");
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    let role = find(&docs, "ClusterRole");
    let rules = role["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(strings(&rules[0]["resources"]), ["pods"]);
    assert_eq!(
        strings(&rules[0]["verbs"]),
        ["get", "list", "watch"],
        "read-only, pods only"
    );
    let binding = find(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], sa["metadata"]["name"]);
    assert_eq!(
        binding["subjects"][0]["namespace"],
        sa["metadata"]["namespace"]
    );
    let service = find(&docs, "Service");
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&pod_labels[k], v, "service selector {k}");
    }
    let port_name = service["spec"]["ports"][0]["targetPort"]
        .as_str()
        .expect("named targetPort");
    assert!(c["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .any(|p| p["name"] == port_name));

    // The kustomization lists every manifest, and the overlay adds the ServiceMonitor.
    let kustomization = &yaml(&k8s_dir().join("kustomization.yaml"))[0];
    let listed: BTreeSet<String> = strings(&kustomization["resources"]).into_iter().collect();
    assert_eq!(
        listed,
        MANIFESTS
            .iter()
            .map(|m| (*m).to_owned())
            .collect::<BTreeSet<_>>()
    );
    let overlay = &yaml(&root().join("deploy/prometheus-operator/kustomization.yaml"))[0];
    assert_eq!(
        strings(&overlay["resources"]),
        ["../kubernetes", "servicemonitor.yaml"]
    );
}

/// No CRD schema is bundled for prometheus-operator's ServiceMonitor, so it
/// is checked by structure: it selects the Service, in its namespace, by a
/// port name the Service has.
#[test]
fn servicemonitor_selects_the_service() {
    let docs = all_k8s();
    let service = find(&docs, "Service");
    let sm = &yaml(&root().join("deploy/prometheus-operator/servicemonitor.yaml"))[0];
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["kind"], "ServiceMonitor");
    for (k, v) in sm["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(&service["metadata"]["labels"][k], v, "selector label {k}");
    }
    assert!(
        strings(&sm["spec"]["namespaceSelector"]["matchNames"]).contains(
            &service["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        )
    );
    let endpoints = sm["spec"]["endpoints"].as_array().expect("endpoints");
    for e in endpoints {
        assert!(service["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["name"] == e["port"]));
        assert_eq!(e["path"], "/metrics");
    }
}

/// `systemd-analyze verify` accepts the unit (pointed at a real binary:
/// verify checks that ExecStart exists) and rejects a misspelt directive.
#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let tool = exporter_support::tool("systemd-analyze", "systemd");
    let unit = std::fs::read_to_string(root().join("deploy/systemd/scaph.service")).expect("unit");
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = dir.path().join("scaph");
    std::fs::copy("/bin/true", &binary).expect("a stand-in binary");
    let verify = |text: &str| {
        let path = dir.path().join("scaph.service");
        std::fs::write(
            &path,
            text.replace("/usr/local/bin/scaph", &binary.display().to_string()),
        )
        .expect("write");
        let out = Command::new(&tool)
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = verify(&unit);
    eprintln!(
        "systemd-analyze verify scaph.service: {}",
        if out.trim().is_empty() {
            "no finding"
        } else {
            &out
        }
    );
    assert!(ok && out.trim().is_empty(), "{out}");
    let (_, out) = verify(&unit.replace("ProtectKernelModules=", "ProtectKernelModule="));
    assert!(
        out.contains("ProtectKernelModule"),
        "a misspelt directive must be reported: {out}"
    );

    let security = Command::new(&tool)
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(dir.path().join("scaph.service"))
        .output()
        .expect("systemd-analyze security");
    let text = String::from_utf8_lossy(&security.stdout);
    if let Some(line) = text.lines().find(|l| l.contains("Overall exposure level")) {
        eprintln!(
            "systemd-analyze security: {}",
            line.trim_start_matches(['→', ' '])
        );
        let score: f64 = line
            .split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or(10.0);
        assert!(
            score <= 3.0,
            "exposure {score}: the unit should stay hardened"
        );
    }
}

/// The Dockerfile's pieces agree with the rest of the repository.
#[test]
fn dockerfile_is_consistent() {
    let text =
        std::fs::read_to_string(root().join("deploy/container/Dockerfile")).expect("Dockerfile");
    let setup = std::fs::read_to_string(root().join("xtask/src/setup.rs")).expect("setup.rs");
    let linker = setup
        .lines()
        .find_map(|l| {
            l.split("BPF_LINKER_VERSION: &str = \"")
                .nth(1)?
                .split('"')
                .next()
        })
        .expect("xtask's bpf-linker version");
    assert!(
        text.contains(&format!("ARG BPF_LINKER_VERSION={linker}")),
        "same bpf-linker as xtask ({linker})"
    );
    assert!(
        text.contains("llvm-22-dev") && text.contains("--features llvm-22"),
        "LLVM 22 on both sides"
    );
    for stage in ["AS build", "AS runtime", "AS prebuilt"] {
        assert!(text.contains(stage), "stage {stage}");
    }
    assert_eq!(
        text.matches("ENTRYPOINT [\"/usr/local/bin/scaph\"]")
            .count(),
        2
    );
    let ignore = std::fs::read_to_string(root().join("deploy/container/Dockerfile.dockerignore"))
        .expect("ignore file");
    assert!(
        ignore.lines().any(|l| l == "target/")
            && ignore.lines().any(|l| l == "!target/release/scaph")
    );
}

/// buildah, with its own throwaway storage.
struct Buildah {
    dir: tempfile::TempDir,
    tool: PathBuf,
}

impl Buildah {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            tool: exporter_support::tool("buildah", "buildah"),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new(&self.tool)
            .arg("--root")
            .arg(self.dir.path().join("storage"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .expect("buildah");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "buildah {}:\n{text}", args.join(" "));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The image's runtime stage, built by buildah from deploy/container/Dockerfile
/// (`prebuilt` target, with scaph as this test suite built it) and run.
/// Registries cannot be reached here, so the base image is assembled locally
/// from the host's glibc (what distroless/cc provides); the `build` stage,
/// which needs the rust image, is not built.
#[test]
fn image_builds_with_buildah_and_runs() {
    scaph_integration_tests::require_root();
    let buildah = Buildah::new();
    let scaph = scaph_integration_tests::scaph_binary();
    let work = tempfile::tempdir().expect("tempdir");
    // A base with the loader and libraries the binary links against.
    let base = work.path().join("base");
    let ldd = Command::new("ldd").arg(&scaph).output().expect("ldd");
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let target = base.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::copy(lib, &target).unwrap_or_else(|e| panic!("{lib}: {e}"));
    }
    std::fs::write(
        work.path().join("Containerfile.base"),
        "FROM scratch\nCOPY / /\n",
    )
    .expect("write");
    let base_file = work.path().join("Containerfile.base");
    buildah.run(&[
        "build",
        "-q",
        "-t",
        "localhost/scaph-test-base",
        "-f",
        base_file.to_str().expect("utf-8"),
        base.to_str().expect("utf-8"),
    ]);
    // The build context: the binary where the Dockerfile expects it.
    let context = work.path().join("context");
    std::fs::create_dir_all(context.join("target/release")).expect("mkdir");
    std::fs::copy(&scaph, context.join("target/release/scaph")).expect("copy scaph");
    let dockerfile = root().join("deploy/container/Dockerfile");
    buildah.run(&[
        "build",
        "--target",
        "prebuilt",
        "--build-arg",
        "RUNTIME_IMAGE=localhost/scaph-test-base",
        "-t",
        "localhost/scaph:test",
        "-f",
        dockerfile.to_str().expect("utf-8"),
        context.to_str().expect("utf-8"),
    ]);
    let inspect: Value =
        serde_json::from_str(&buildah.run(&["inspect", "--type", "image", "localhost/scaph:test"]))
            .expect("inspect JSON");
    let config = &inspect["OCIv1"]["config"];
    assert_eq!(strings(&config["Entrypoint"]), ["/usr/local/bin/scaph"]);
    assert_eq!(strings(&config["Cmd"]), ["prometheus", "--containers"]);
    assert_eq!(config["User"], "0:0");
    let container = buildah
        .run(&["from", "localhost/scaph:test"])
        .trim()
        .to_owned();
    let version = buildah.run(&[
        "run",
        "--isolation",
        "chroot",
        &container,
        "--",
        "/usr/local/bin/scaph",
        "--version",
    ]);
    let images = buildah.run(&["images", "--format", "{{.Name}}:{{.Tag}} {{.Size}}"]);
    eprintln!(
        "built and ran the image: {} {}",
        version.trim(),
        images
            .lines()
            .find(|l| l.contains("scaph:test"))
            .unwrap_or("")
    );
    assert!(version.starts_with("scaph "), "{version}");
}
