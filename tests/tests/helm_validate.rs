//! What the Helm chart renders, checked by other tools: Kubernetes' strict
//! schemas (the `kubernetes-validate` package) and Helm's own `helm lint`
//! (Helm's Go code as bundled by PyPI's helm-sdkpy), for defaults and for
//! every value set; and Helm's own rendering (`helm install` into a
//! stand-in API server) compared with the test renderer's. helm.rs renders
//! and compares with the Kustomize manifests.
mod helm_support;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use helm_support::{
    chart_dir, helm_template,
    objects::{by_kind_and_name, kustomize, root, without_namespace},
    yaml_docs,
};
use serde_json::{json, Value};

/// `kubernetes-validate`: in the virtual environment `cargo xtask test`
/// makes (target/deploy-venv), else on PATH.
fn validator() -> PathBuf {
    let venv = root().join("target/deploy-venv/bin/kubernetes-validate");
    if venv.is_file() {
        return venv;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("kubernetes-validate"))
        .find(|p| p.is_file())
        .expect(
            "kubernetes-validate (PyPI; `cargo xtask test` installs it into target/deploy-venv)",
        )
}

fn validate(version: &str, file: &Path) -> (bool, String) {
    let out = Command::new(validator())
        .args(["--strict", "--quiet", "--kubernetes-version", version])
        .arg(file)
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

/// The rendered output, with defaults and with every value set, passes
/// Kubernetes' strict schemas (unknown fields rejected) for the oldest and
/// newest versions targeted. The ServiceMonitor is left out: its CRD's
/// schema is not bundled. A value that passes a misspelt field through
/// fails, so the check has teeth.
#[test]
fn rendered_chart_validates_against_kubernetes_schemas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = json!({
        "namespace": {"create": true},
        "image": {"repository": "registry.example.com/scaph", "tag": "1.2.3"},
        "resources": {"limits": {"cpu": "1", "memory": "128Mi"}},
        "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
        "nodeSelector": {"kubernetes.io/arch": "amd64"},
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {"matchExpressions": [{"key": "k", "operator": "Exists"}]}}]}},
        "webConfig": {"inline": "basic_auth_users: {}\n"},
    });
    let write = |name: &str, values: &Value| -> PathBuf {
        let (text, docs) = helm_template("scaph", "scaph", values);
        assert!(!docs.is_empty());
        let kept: Vec<&str> = text
            .split("\n---\n")
            .filter(|d| !d.contains("kind: ServiceMonitor"))
            .collect();
        let path = dir.path().join(name);
        std::fs::write(&path, kept.join("\n---\n")).expect("write");
        path
    };
    let files = [
        ("defaults", write("defaults.yaml", &json!({}))),
        ("every value", write("all.yaml", &all)),
    ];
    for version in ["1.30.0", "1.37.0"] {
        for (name, file) in &files {
            let (ok, out) = validate(version, file);
            eprintln!(
                "kubernetes-validate --strict -k {version} ({name}): {}",
                if ok { "passed" } else { &out }
            );
            assert!(ok, "{name}, Kubernetes {version}:\n{out}");
        }
    }
    let mut bad = all.clone();
    bad["affinity"] = json!({"nodeAffinty": {}});
    let (ok, out) = validate("1.37.0", &write("bad.yaml", &bad));
    assert!(
        !ok && out.contains("nodeAffinty"),
        "a misspelt field must fail:\n{out}"
    );
}

/// Helm's own code (the library in PyPI's helm-sdkpy wheel) lints the chart
/// rendered with each set of values the other tests use: no warning, no
/// error, so the templates mean the same to Helm as to gtmpl. A template
/// with a function Helm does not have fails, so the check has teeth.
#[test]
fn helm_itself_lints_the_chart_with_every_set_of_values() {
    let Some(lib) = helm_support::lint::helm_library() else {
        eprintln!("no Helm library for this machine (linux-amd64 only): not linted");
        return;
    };
    let sets = [
        json!({}),
        json!({"namespace": {"create": true}}),
        json!({"serviceMonitor": {"enabled": true, "labels": {"release": "prom"}, "endpoint": {"scheme": "https"}}}),
        json!({"webConfig": {"existingSecret": "scaph-tls"}}),
        json!({"webConfig": {"inline": "basic_auth_users: {}\n"}}),
        json!({
            "image": {"repository": "registry.example.com/scaph", "tag": "1.2.3"},
            "args": ["--containers", "--step=5"], "port": 9100,
            "resources": {}, "tolerations": [], "nodeSelector": {"a": "b"},
            "affinity": {"nodeAffinity": {}}, "priorityClassName": "",
        }),
    ];
    for values in &sets {
        let messages = helm_support::lint::helm_lint(&lib, values);
        // Helm warns of a chart that creates its own release's namespace
        // (the reason namespace.create is off by default): that warning,
        // and only it, is expected when it is on.
        let expected: &[(u64, &str)] = if values["namespace"]["create"] == true {
            &[(2, "templates/namespace.yaml")]
        } else {
            &[]
        };
        for e in expected {
            assert!(
                messages
                    .iter()
                    .any(|(sev, path)| (*sev, path.as_str()) == *e),
                "expected {e:?} from helm lint with {values}: {messages:?}"
            );
        }
        let problems: Vec<_> = messages
            .iter()
            .filter(|(sev, path)| *sev >= 2 && !expected.contains(&(*sev, path.as_str())))
            .collect();
        eprintln!(
            "helm lint with {values}: {} messages, {} unexpected",
            messages.len(),
            problems.len()
        );
        assert!(problems.is_empty(), "helm lint with {values}: {problems:?}");
    }
    // The same check on a chart with a function Helm does not have.
    let dir = tempfile::tempdir().expect("tempdir");
    let chart = dir.path().join("scaph");
    std::fs::create_dir_all(chart.join("templates")).expect("mkdir");
    for file in ["Chart.yaml", "values.yaml"] {
        std::fs::copy(chart_dir().join(file), chart.join(file)).expect("copy");
    }
    let service =
        std::fs::read_to_string(chart_dir().join("templates/service.yaml")).expect("service");
    std::fs::write(
        chart.join("templates/service.yaml"),
        service.replace("| quote", "| quoted"),
    )
    .expect("write");
    let messages = helm_support::lint::lint_dir(&lib, &chart);
    assert!(
        messages
            .iter()
            .any(|(sev, path)| *sev == 3 && path.starts_with("templates/")),
        "a template error must be reported: {messages:?}"
    );
}

/// Helm's own code installs the chart (into a stand-in API server that
/// accepts every write) with each set of values, and what it renders is,
/// object for object, what helm.rs's renderer renders: the comparisons
/// made there hold for Helm itself. With default values Helm's output is
/// the Kustomize base, less its Namespace.
#[test]
fn helm_itself_renders_what_the_test_renderer_renders() {
    let Some(lib) = helm_support::lint::helm_library() else {
        eprintln!("no Helm library for this machine (linux-amd64 only): not rendered by Helm");
        return;
    };
    let mut sets: Vec<(&str, &str, Value)> = vec![
        ("scaph", "scaph", json!({})),
        ("scaph", "scaph", json!({"namespace": {"create": true}})),
        (
            "scaph",
            "scaph",
            json!({"serviceMonitor": {"enabled": true, "labels": {"release": "prom"}, "endpoint": {"scheme": "https", "tlsConfig": {"insecureSkipVerify": true}}}}),
        ),
        (
            "scaph",
            "scaph",
            json!({"webConfig": {"existingSecret": "scaph-tls"}}),
        ),
        (
            "energy",
            "monitoring",
            json!({"webConfig": {"inline": "basic_auth_users:\n  p: \"$2y$10$x\"\n"}, "serviceMonitor": {"enabled": true}}),
        ),
    ];
    sets.push((
        "scaph",
        "scaph",
        json!({
            "image": {"repository": "registry.example.com/scaph", "tag": "1.2.3", "pullPolicy": "Always"},
            "args": ["--containers", "--step=5"], "port": 9100,
            "resources": {"limits": {"cpu": "1"}}, "tolerations": [],
            "nodeSelector": {"kubernetes.io/arch": "amd64"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "k", "operator": "Exists"}]}]}}},
            "priorityClassName": "",
        }),
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, (release, namespace, values)) in sets.iter().enumerate() {
        let manifest = helm_support::lint::helm_install(&lib, release, namespace, values);
        let by_helm = by_kind_and_name(yaml_docs(&manifest));
        // Helm's own output, too, passes the strict schemas (less the
        // ServiceMonitor, whose CRD schema is not bundled).
        let file = dir.path().join(format!("helm-{i}.yaml"));
        let kept: Vec<&str> = manifest
            .split("\n---\n")
            .filter(|d| !d.contains("kind: ServiceMonitor"))
            .collect();
        std::fs::write(&file, kept.join("\n---\n")).expect("write");
        let (ok, out) = validate("1.37.0", &file);
        assert!(ok, "Helm's output with {values}:\n{out}");
        let by_test = by_kind_and_name(helm_template(release, namespace, values).1);
        assert_eq!(
            by_helm, by_test,
            "{release} in {namespace} with {values}: Helm and the test renderer differ"
        );
        eprintln!(
            "helm install {release} -n {namespace} with {values}: {} objects, as the test renderer's, schema-valid",
            by_helm.len()
        );
        if values == &json!({}) {
            assert_eq!(by_helm, without_namespace(kustomize(false)));
        }
    }
}
