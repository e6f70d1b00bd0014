//! The rendered chart's objects and the Kustomize manifests they are held
//! to, as parsed documents.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::{helm_template, yaml_docs, yaml_file};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn k8s_dir() -> PathBuf {
    root().join("deploy/kubernetes")
}

/// `helm template scaph deploy/helm/scaph -n scaph` with these values.
pub fn render(values: Value) -> Vec<Value> {
    helm_template("scaph", "scaph", &values).1
}

/// Objects in a stable order, to compare sets of documents.
pub fn by_kind_and_name(mut docs: Vec<Value>) -> Vec<Value> {
    docs.sort_by_key(|d| {
        (
            d["kind"].as_str().unwrap_or("").to_owned(),
            d["metadata"]["name"].as_str().unwrap_or("").to_owned(),
        )
    });
    docs
}

pub fn kinds(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap_or("").to_owned())
        .collect()
}

pub fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {:?}", kinds(docs)))
}

pub fn container(docs: &[Value]) -> &Value {
    &find(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
}

pub fn pod(docs: &[Value]) -> &Value {
    &find(docs, "DaemonSet")["spec"]["template"]["spec"]
}

/// What `kubectl kustomize deploy/kubernetes` makes of the base, as
/// kustomization.yaml says: its namespace on every namespaced object and
/// on the ServiceAccount subject of the binding, its label pairs on every
/// object's metadata (not on selectors or pod templates: no
/// includeSelectors). The prometheus-operator overlay adds its
/// ServiceMonitor untouched.
pub fn kustomize(with_service_monitor: bool) -> Vec<Value> {
    let k = yaml_file(&k8s_dir().join("kustomization.yaml"));
    let namespace = k["namespace"].as_str().expect("namespace");
    let mut docs = Vec::new();
    for file in k["resources"].as_array().expect("resources") {
        let text = std::fs::read_to_string(k8s_dir().join(file.as_str().expect("file")))
            .expect("manifest");
        docs.extend(yaml_docs(&text));
    }
    for doc in &mut docs {
        let cluster_scoped = ["Namespace", "ClusterRole", "ClusterRoleBinding"]
            .contains(&doc["kind"].as_str().unwrap_or(""));
        if !cluster_scoped {
            doc["metadata"]["namespace"] = json!(namespace);
        }
        if doc["kind"] == "Namespace" {
            doc["metadata"]["name"] = json!(namespace);
        }
        if let Some(subjects) = doc.get_mut("subjects").and_then(Value::as_array_mut) {
            for s in subjects
                .iter_mut()
                .filter(|s| s["kind"] == "ServiceAccount")
            {
                s["namespace"] = json!(namespace);
            }
        }
        for set in k["labels"].as_array().expect("labels") {
            for (key, value) in set["pairs"].as_object().expect("pairs") {
                doc["metadata"]["labels"][key] = value.clone();
            }
        }
    }
    if with_service_monitor {
        let overlay = root().join("deploy/prometheus-operator");
        let o = yaml_file(&overlay.join("kustomization.yaml"));
        for file in o["resources"].as_array().expect("resources") {
            let file = file.as_str().expect("file");
            if file != "../kubernetes" {
                docs.push(yaml_file(&overlay.join(file)));
            }
        }
    }
    by_kind_and_name(docs)
}

pub fn without_namespace(docs: Vec<Value>) -> Vec<Value> {
    docs.into_iter()
        .filter(|d| d["kind"] != "Namespace")
        .collect()
}
