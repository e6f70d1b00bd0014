//! A stand-in for `helm template`, for the subset of Helm's template
//! language that deploy/helm/scaph keeps to (see its templates/_subset.tpl):
//! Go's text/template from the gtmpl crate, Helm's value merging, and the
//! four Helm functions the chart uses, each with Helm's meaning.
#![allow(dead_code)] // helm.rs and helm_validate.rs use different parts

pub mod lint;
pub mod objects;

use std::path::{Path, PathBuf};

use gtmpl::{Context, FuncError, Template, Value as Tv};
use gtmpl_value::Number;
use serde_json::{json, Map, Value};

pub fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/scaph")
}

/// A YAML file as JSON (one document).
pub fn yaml_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every non-empty document of a YAML stream, as JSON.
pub fn yaml_docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| {
            <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{text}"))
        })
        .filter(|d| !d.is_null())
        .collect()
}

/// Helm's coalescing of user values over values.yaml: maps merge key by
/// key, anything else replaces, and null removes the key.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(k);
                } else if let Some(slot) = b.get_mut(k) {
                    merge(slot, v);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn to_tv(v: &Value) -> Tv {
    match v {
        Value::Null => Tv::Nil,
        Value::Bool(b) => Tv::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Tv::Number(Number::from(u)),
            (None, Some(i)) => Tv::Number(Number::from(i)),
            _ => Tv::Number(Number::from(n.as_f64().unwrap_or(0.0))),
        },
        Value::String(s) => Tv::String(s.clone()),
        Value::Array(a) => Tv::Array(a.iter().map(to_tv).collect()),
        // Go maps, as Helm's values are: a missing key is "no value", not an error.
        Value::Object(o) => Tv::Map(o.iter().map(|(k, v)| (k.clone(), to_tv(v))).collect()),
    }
}

fn from_tv(v: &Tv) -> Value {
    match v {
        Tv::NoValue | Tv::Nil | Tv::Function(_) => Value::Null,
        Tv::Bool(b) => Value::Bool(*b),
        Tv::String(s) => Value::String(s.clone()),
        Tv::Number(n) => n
            .as_u64()
            .map(Value::from)
            .or_else(|| n.as_i64().map(Value::from))
            .unwrap_or_else(|| json!(n.as_f64().unwrap_or(0.0))),
        Tv::Array(a) => Value::Array(a.iter().map(from_tv).collect()),
        Tv::Object(o) | Tv::Map(o) => {
            let sorted: std::collections::BTreeMap<_, _> = o.iter().collect();
            Value::Object(
                sorted
                    .into_iter()
                    .map(|(k, v)| (k.clone(), from_tv(v)))
                    .collect::<Map<_, _>>(),
            )
        }
    }
}

fn err(msg: String) -> FuncError {
    FuncError::Generic(msg)
}

/// Helm's `toYaml`: the value as YAML, without the final newline.
fn to_yaml(args: &[Tv]) -> Result<Tv, FuncError> {
    let [v] = args else {
        return Err(FuncError::ExactlyXArgs("toYaml".into(), 1));
    };
    let text = serde_norway::to_string(&from_tv(v)).map_err(|e| err(e.to_string()))?;
    Ok(Tv::String(text.trim_end_matches('\n').to_owned()))
}

/// Helm's `nindent N TEXT`: a newline, then every line indented by N spaces.
fn nindent(args: &[Tv]) -> Result<Tv, FuncError> {
    let [Tv::Number(n), Tv::String(s)] = args else {
        return Err(err(format!("nindent wants a count and a string: {args:?}")));
    };
    let pad = " ".repeat(n.as_u64().ok_or_else(|| err("nindent: a count".into()))? as usize);
    Ok(Tv::String(format!(
        "\n{pad}{}",
        s.replace('\n', &format!("\n{pad}"))
    )))
}

/// Helm's `quote`: each argument as a double-quoted string (Go's %q; JSON's
/// escaping is the same for what a chart holds), nil skipped, joined by spaces.
fn quote(args: &[Tv]) -> Result<Tv, FuncError> {
    let quoted: Vec<String> = args
        .iter()
        .filter(|a| !matches!(a, Tv::Nil | Tv::NoValue))
        .map(|a| {
            let text = match from_tv(a) {
                Value::String(s) => s,
                other => other.to_string(),
            };
            Value::String(text).to_string()
        })
        .collect();
    Ok(Tv::String(quoted.join(" ")))
}

/// Helm's `default DEFAULT GIVEN`: GIVEN unless it is empty (false, 0, "",
/// an empty list or map, nil or missing), else DEFAULT.
fn default(args: &[Tv]) -> Result<Tv, FuncError> {
    match args {
        [d] => Ok(d.clone()),
        [d, given] => {
            let empty = match given {
                Tv::NoValue | Tv::Nil => true,
                Tv::Bool(b) => !b,
                Tv::String(s) => s.is_empty(),
                Tv::Array(a) => a.is_empty(),
                Tv::Map(m) | Tv::Object(m) => m.is_empty(),
                Tv::Number(n) => {
                    n.as_u64() == Some(0) || n.as_i64() == Some(0) || n.as_f64() == Some(0.0)
                }
                Tv::Function(_) => false,
            };
            Ok(if empty { d.clone() } else { given.clone() })
        }
        _ => Err(err(format!("default wants one or two arguments: {args:?}"))),
    }
}

/// One template's text rendered with `dot`, with Helm's functions.
pub fn render_text(text: &str, dot: &Value) -> Result<String, String> {
    let mut t = Template::default();
    t.add_funcs(&[
        ("toYaml", to_yaml as gtmpl::Func),
        ("nindent", nindent as gtmpl::Func),
        ("quote", quote as gtmpl::Func),
        ("default", default as gtmpl::Func),
    ]);
    t.parse(text).map_err(|e| e.to_string())?;
    t.render(&Context::from(to_tv(dot)))
        .map_err(|e| e.to_string())
}

/// `helm template RELEASE deploy/helm/scaph --namespace NAMESPACE` with the
/// given values over values.yaml: the rendered text and its documents.
pub fn helm_template(release: &str, namespace: &str, values: &Value) -> (String, Vec<Value>) {
    let dir = chart_dir();
    let chart = yaml_file(&dir.join("Chart.yaml"));
    let mut merged = yaml_file(&dir.join("values.yaml"));
    merge(&mut merged, values);
    let dot = json!({
        "Values": merged,
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm"},
        "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
    });
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("templates"))
        .expect("templates/")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".yaml") && !name.starts_with('_')
        })
        .collect();
    files.sort();
    let mut out = String::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("template");
        let rendered =
            render_text(&text, &dot).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // As Helm does: one stream, each file its own document.
        out += &format!(
            "---\n# Source: scaph/templates/{}\n",
            file.file_name().expect("name").to_string_lossy()
        );
        out += &rendered;
        out += "\n";
    }
    assert!(
        !out.contains("<no value>"),
        "a template reads a value that does not exist:\n{out}"
    );
    let docs = yaml_docs(&out);
    (out, docs)
}
