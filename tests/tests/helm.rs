//! The Helm chart under deploy/helm/scaph. No helm binary can be installed
//! from this project's package registries (not in Debian, PyPI or npm), so
//! the chart is rendered here by a Go text/template engine with Helm's
//! functions (helm_support), and held to this: with default values it
//! renders the very objects of the Kustomize manifests; every value lands
//! where it should and changes nothing else; no value loosens the least
//! privilege. helm_validate.rs holds this renderer to Helm's own code and
//! checks the output with Kubernetes' schemas.
mod helm_support;

use std::{collections::BTreeSet, process::Command};

use helm_support::{
    chart_dir, helm_template,
    objects::{
        by_kind_and_name, container, find, k8s_dir, kinds, kustomize, pod, render, root,
        without_namespace,
    },
    render_text, yaml_docs, yaml_file,
};
use serde_json::{json, Value};

/// Where kubectl (with its built-in kustomize) is installed, the emulation
/// above is held to the real thing; it is not required.
#[test]
fn kustomize_emulation_matches_kubectl_kustomize() {
    let Some(kubectl) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
    else {
        eprintln!("kubectl not installed: the Kustomize emulation is not cross-checked");
        return;
    };
    // The base, and the overlay with the ServiceMonitor (which kustomize
    // refused while it lived inside the base's folder: "cycle detected").
    for (dir, with_service_monitor) in [
        (k8s_dir(), false),
        (root().join("deploy/prometheus-operator"), true),
    ] {
        let out = Command::new(&kubectl)
            .arg("kustomize")
            .arg(&dir)
            .output()
            .expect("kubectl kustomize");
        assert!(
            out.status.success(),
            "kubectl kustomize {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let real = by_kind_and_name(yaml_docs(&String::from_utf8_lossy(&out.stdout)));
        assert_eq!(real, kustomize(with_service_monitor), "{}", dir.display());
        eprintln!(
            "kubectl kustomize {}: {} objects, equal to the emulation",
            dir.display(),
            real.len()
        );
    }
}

/// Default values render the Kustomize base object for object, field for
/// field (parsed documents, so comments and layout do not count), less the
/// Namespace, which `helm install` needs to exist beforehand;
/// namespace.create adds it, and serviceMonitor.enabled adds the overlay's
/// ServiceMonitor.
#[test]
fn default_values_render_the_kustomize_manifests() {
    let cases = [
        (json!({}), without_namespace(kustomize(false))),
        (json!({"namespace": {"create": true}}), kustomize(false)),
        (
            json!({"serviceMonitor": {"enabled": true}}),
            without_namespace(kustomize(true)),
        ),
    ];
    for (values, expected) in cases {
        let rendered = by_kind_and_name(render(values.clone()));
        assert_eq!(
            kinds(&rendered),
            kinds(&expected),
            "objects rendered with {values}"
        );
        for (r, e) in rendered.iter().zip(&expected) {
            assert_eq!(
                r,
                e,
                "{} {} rendered with {values}:\n{}",
                e["kind"],
                e["metadata"]["name"],
                serde_json::to_string_pretty(r).unwrap_or_default()
            );
        }
    }
}

/// One check of where a value lands.
type Check = fn(&[Value]);

/// Each non-default value changes what it names, and only that: the rest of
/// the output stays equal to the defaults' (compared with the field the
/// value sets removed from both sides).
#[test]
fn values_land_where_they_should() {
    let cases: Vec<(&str, Value, Check)> = vec![
        (
            "image",
            json!({"image": {"repository": "registry.example.com/scaph", "tag": "1.2.3", "pullPolicy": "Always"}}),
            |d| {
                assert_eq!(container(d)["image"], "registry.example.com/scaph:1.2.3");
                assert_eq!(container(d)["imagePullPolicy"], "Always");
            },
        ),
        (
            "args and port",
            json!({"args": ["--containers", "--step=5"], "port": 9100}),
            |d| {
                assert_eq!(
                    container(d)["args"],
                    json!([
                        "prometheus",
                        "--containers",
                        "--step=5",
                        "--port=9100",
                        "--powercap-root=/host/sys/class/powercap",
                        "--cgroup-root=/host/sys/fs/cgroup"
                    ])
                );
                assert_eq!(container(d)["ports"][0]["containerPort"], 9100);
                let service = find(d, "Service");
                assert_eq!(service["spec"]["ports"][0]["port"], 9100);
                assert_eq!(
                    service["metadata"]["annotations"]["prometheus.io/port"],
                    "9100"
                );
            },
        ),
        (
            "resources",
            json!({"resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}}),
            |d| {
                assert_eq!(
                    container(d)["resources"],
                    json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}})
                );
            },
        ),
        (
            "tolerations, nodeSelector, affinity, priorityClassName",
            json!({
                "tolerations": [{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}],
                "nodeSelector": {"kubernetes.io/arch": "amd64", "energy": "rapl"},
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}},
                "priorityClassName": "",
            }),
            |d| {
                let p = pod(d);
                assert_eq!(
                    p["tolerations"],
                    json!([{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}])
                );
                assert_eq!(
                    p["nodeSelector"],
                    json!({"kubernetes.io/arch": "amd64", "energy": "rapl"})
                );
                assert_eq!(
                    p["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                        ["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
                    json!(["linux"])
                );
                assert!(p["priorityClassName"].is_null());
            },
        ),
        ("no tolerations", json!({"tolerations": []}), |d| {
            assert!(pod(d)["tolerations"].is_null());
        }),
        (
            "serviceMonitor",
            json!({"serviceMonitor": {"enabled": true, "labels": {"release": "prom"}, "interval": "15s", "endpoint": {"scheme": "https", "tlsConfig": {"insecureSkipVerify": true}}}}),
            |d| {
                let sm = find(d, "ServiceMonitor");
                assert_eq!(
                    sm["metadata"]["labels"],
                    json!({"app.kubernetes.io/name": "scaph", "release": "prom"})
                );
                let e = &sm["spec"]["endpoints"][0];
                assert_eq!(e["interval"], "15s");
                assert_eq!(e["scheme"], "https");
                assert_eq!(e["tlsConfig"]["insecureSkipVerify"], true);
                assert_eq!(e["port"], "metrics");
                assert_eq!(e["relabelings"][0]["targetLabel"], "node");
            },
        ),
        (
            "webConfig from an existing secret",
            json!({"webConfig": {"existingSecret": "scaph-tls"}}),
            |d| {
                assert!(d.iter().all(|o| o["kind"] != "Secret"), "no Secret made");
                check_web_config(d, "scaph-tls");
            },
        ),
        (
            "webConfig inline",
            json!({"webConfig": {"inline": "basic_auth_users:\n  prometheus: \"$2y$10$abc\"\n"}}),
            |d| {
                let secret = find(d, "Secret");
                assert_eq!(secret["metadata"]["name"], "scaph-web-config");
                assert_eq!(secret["metadata"]["namespace"], "scaph");
                assert_eq!(
                    secret["stringData"]["web-config.yml"],
                    "basic_auth_users:\n  prometheus: \"$2y$10$abc\"\n"
                );
                check_web_config(d, "scaph-web-config");
            },
        ),
    ];
    let defaults = render(json!({}));
    for (name, values, check) in cases {
        let docs = render(values.clone());
        check(&docs);
        // The rest is the defaults': every path the values set is removed
        // from both sides (and the Secret and ServiceMonitor they add).
        let strip = |docs: &[Value]| -> Vec<Value> {
            by_kind_and_name(
                docs.iter()
                    .filter(|d| d["kind"] != "Secret" && d["kind"] != "ServiceMonitor")
                    .map(|d| strip_touched(d.clone(), name))
                    .collect(),
            )
        };
        assert_eq!(strip(&docs), strip(&defaults), "{name}: more changed");
        eprintln!("{name}: lands where it should");
    }
}

/// The fields a case of values_land_where_they_should may change.
fn strip_touched(mut doc: Value, case: &str) -> Value {
    if doc["kind"] == "Service" && case == "args and port" {
        doc["spec"].as_object_mut().map(|s| s.remove("ports"));
        doc["metadata"]
            .as_object_mut()
            .map(|m| m.remove("annotations"));
    }
    if doc["kind"] != "DaemonSet" {
        return doc;
    }
    let spec = &mut doc["spec"]["template"]["spec"];
    let remove = |v: &mut Value, keys: &[&str]| {
        if let Some(o) = v.as_object_mut() {
            for k in keys {
                o.remove(*k);
            }
        }
    };
    match case {
        "image" => remove(&mut spec["containers"][0], &["image", "imagePullPolicy"]),
        "args and port" => {
            remove(&mut spec["containers"][0], &["args", "ports"]);
        }
        "resources" => remove(&mut spec["containers"][0], &["resources"]),
        "tolerations, nodeSelector, affinity, priorityClassName" | "no tolerations" => remove(
            spec,
            &[
                "tolerations",
                "nodeSelector",
                "affinity",
                "priorityClassName",
            ],
        ),
        case if case.starts_with("webConfig") => {
            remove(
                &mut spec["containers"][0],
                &["args", "volumeMounts", "readinessProbe", "livenessProbe"],
            );
            remove(spec, &["volumes"]);
        }
        _ => {}
    }
    doc
}

/// A web configuration is mounted read-only from `secret`, named by
/// --web.config.file, and probed on its TCP port (an HTTP probe would meet
/// TLS or a 401).
fn check_web_config(d: &[Value], secret: &str) {
    let c = container(d);
    let volume = pod(d)["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["secret"]["secretName"] == secret)
        .expect("a volume of the secret");
    let mount = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the secret is mounted");
    assert_eq!(mount["readOnly"], true);
    let dir = mount["mountPath"].as_str().expect("mountPath");
    let args = c["args"].as_array().expect("args");
    assert!(
        args.contains(&json!(format!("--web.config.file={dir}/web-config.yml"))),
        "{args:?}"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["tcpSocket"]["port"], "metrics", "{probe}");
        assert!(c[probe]["httpGet"].is_null(), "{probe}");
    }
}

/// The release's name and namespace name every object and every reference
/// between them: two releases never share a name, and the binding and the
/// ServiceMonitor point into the release's namespace.
#[test]
fn release_name_and_namespace_reach_every_reference() {
    let docs = helm_template(
        "energy",
        "monitoring",
        &json!({"namespace": {"create": true}, "serviceMonitor": {"enabled": true}, "webConfig": {"inline": "{}"}}),
    )
    .1;
    for d in &docs {
        let cluster_scoped = ["Namespace", "ClusterRole", "ClusterRoleBinding"]
            .contains(&d["kind"].as_str().unwrap_or(""));
        let name = d["metadata"]["name"].as_str().expect("name");
        match d["kind"].as_str() {
            Some("Namespace") => assert_eq!(name, "monitoring"),
            Some("Secret") => assert_eq!(name, "energy-web-config"),
            _ => assert_eq!(name, "energy", "{}", d["kind"]),
        }
        if cluster_scoped {
            assert!(d["metadata"]["namespace"].is_null());
        } else {
            assert_eq!(d["metadata"]["namespace"], "monitoring", "{}", d["kind"]);
        }
    }
    let binding = find(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], "energy");
    assert_eq!(
        binding["subjects"][0],
        json!({"kind": "ServiceAccount", "name": "energy", "namespace": "monitoring"})
    );
    assert_eq!(pod(&docs)["serviceAccountName"], "energy");
    assert_eq!(
        find(&docs, "ServiceMonitor")["spec"]["namespaceSelector"]["matchNames"],
        json!(["monitoring"])
    );
    check_web_config(&docs, "energy-web-config");
}

/// Whatever the values, the DaemonSet keeps deploy/kubernetes' least
/// privilege: no value reaches the security context, capabilities, hostPID
/// or the read-only host mounts.
#[test]
fn no_value_loosens_the_security_context() {
    let base = container(&without_namespace(kustomize(false))).clone();
    let base_pod = pod(&without_namespace(kustomize(false))).clone();
    for values in [
        json!({}),
        json!({"webConfig": {"existingSecret": "s"}, "serviceMonitor": {"enabled": true}}),
        json!({"args": ["--containers"], "port": 1, "resources": {}, "tolerations": [], "nodeSelector": {"a": "b"}}),
    ] {
        let docs = render(values.clone());
        let c = container(&docs);
        assert_eq!(c["securityContext"], base["securityContext"], "{values}");
        assert_eq!(
            pod(&docs)["securityContext"],
            base_pod["securityContext"],
            "{values}"
        );
        assert_eq!(pod(&docs)["hostPID"], true);
        assert!(pod(&docs)["hostNetwork"].is_null() && pod(&docs)["hostIPC"].is_null());
        for m in c["volumeMounts"].as_array().expect("mounts") {
            assert_eq!(m["readOnly"], true, "{m}");
        }
        let host_paths: BTreeSet<&str> = pod(&docs)["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .filter_map(|v| v["hostPath"]["path"].as_str())
            .collect();
        assert_eq!(
            host_paths,
            BTreeSet::from([
                "/sys/class/powercap",
                "/sys/devices/virtual",
                "/sys/fs/cgroup"
            ])
        );
    }
}

/// The chart's version follows scaph's, and its image tag defaults to it.
#[test]
fn chart_version_follows_the_workspace() {
    let chart = yaml_file(&chart_dir().join("Chart.yaml"));
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \"")?.strip_suffix('"'))
        .expect("workspace version");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["version"], version);
    assert_eq!(chart["appVersion"], version);
    assert_eq!(
        container(&render(json!({})))["image"],
        format!("scaph:{version}")
    );
}

/// The four Helm functions behave as Helm documents them; the renderer is
/// only as good as these.
#[test]
fn helm_functions_behave_as_in_helm() {
    let dot =
        json!({"s": "a\"b", "n": 8080, "e": "", "m": {"b": 1, "a": [1, "x"]}, "z": 0, "l": []});
    let cases = [
        (r#"{{ .s | quote }}"#, r#""a\"b""#),
        (r#"{{ .n | quote }}"#, r#""8080""#),
        (r#"{{ quote .s .n }}"#, r#""a\"b" "8080""#),
        (r#"{{ .e | default "d" }}"#, "d"),
        (r#"{{ .z | default 5 }}"#, "5"),
        (r#"{{ .l | default "d" }}"#, "d"),
        (r#"{{ .missing | default "d" }}"#, "d"),
        (r#"{{ .s | default "d" }}"#, "a\"b"),
        (r#"{{ toYaml .m }}"#, "a:\n- 1\n- x\nb: 1"),
        (
            r#"x:{{ toYaml .m | nindent 2 }}"#,
            "x:\n  a:\n  - 1\n  - x\n  b: 1",
        ),
        (r#"{{- if and .s (not .e) }}yes{{ end }}"#, "yes"),
    ];
    for (template, expected) in cases {
        assert_eq!(
            render_text(template, &dot).as_deref(),
            Ok(expected),
            "{template}"
        );
    }
    // A function outside the subset is an error, not a silent blank.
    assert!(render_text("{{ .s | upper }}", &dot).is_err());
}
