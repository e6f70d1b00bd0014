//! Helm's own `helm lint`, from the C library that PyPI's helm-sdkpy wheel
//! bundles (Helm v4's Go code), called through ctypes.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{chart_dir, merge, yaml_file};

/// Helm's own Go code, as the C library bundled in the helm-sdkpy wheel
/// (PyPI) that `cargo xtask test` installs into target/helm-venv; None where
/// the wheel has no library for this machine (it ships linux-amd64 only).
pub fn helm_library() -> Option<PathBuf> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return None;
    }
    let lib = std::fs::read_dir(chart_dir().join("../../../target/helm-venv/lib"))
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|python| {
            python
                .path()
                .join("site-packages/helm_sdkpy/_lib/linux-amd64/libhelm_sdkpy.so")
        })
        .find(|p| p.is_file());
    Some(lib.unwrap_or_else(|| {
        panic!("target/helm-venv has no helm-sdkpy: `cargo xtask test` installs it (PyPI helm-sdkpy, --no-deps --ignore-requires-python)")
    }))
}

/// `helm lint` by Helm's own code on a copy of the chart whose values.yaml
/// is replaced by `values` merged over it (so Helm renders exactly those):
/// the (severity, path) of each message; 1 info, 2 warning, 3 error.
pub fn helm_lint(lib: &Path, values: &Value) -> Vec<(u64, String)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("scaph");
    std::fs::create_dir_all(copy.join("templates")).expect("mkdir");
    std::fs::copy(chart_dir().join("Chart.yaml"), copy.join("Chart.yaml")).expect("Chart.yaml");
    for entry in std::fs::read_dir(chart_dir().join("templates")).expect("templates") {
        let path = entry.expect("entry").path();
        std::fs::copy(
            &path,
            copy.join("templates").join(path.file_name().expect("name")),
        )
        .expect("template");
    }
    let mut merged = yaml_file(&chart_dir().join("values.yaml"));
    merge(&mut merged, values);
    std::fs::write(copy.join("values.yaml"), merged.to_string()).expect("values");
    lint_dir(lib, &copy)
}

/// helm lint on a chart folder through the library's C interface.
pub fn lint_dir(lib: &Path, chart: &Path) -> Vec<(u64, String)> {
    const SCRIPT: &str = r#"
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.helm_sdkpy_last_error.restype = ctypes.c_char_p
handle = ctypes.c_ulonglong()
if lib.helm_sdkpy_config_create(b"scaph", b"", b"", b"{}", ctypes.byref(handle)) != 0:
    sys.exit("config: %s" % lib.helm_sdkpy_last_error())
out = ctypes.c_char_p()
if lib.helm_sdkpy_lint(handle, sys.argv[2].encode(), ctypes.byref(out)) != 0:
    sys.exit("lint: %s" % lib.helm_sdkpy_last_error())
sys.stdout.write(out.value.decode())
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(lib)
        .arg(chart)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "helm lint: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("lint JSON");
    report["Messages"]
        .as_array()
        .expect("Messages")
        .iter()
        .map(|m| {
            (
                m["Severity"].as_u64().unwrap_or(0),
                m["Path"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// `helm install RELEASE deploy/helm/scaph -n NAMESPACE` by Helm's own code,
/// with `values` given to Helm (which merges them over values.yaml itself),
/// against the stand-in API server of helm_install.py: the manifest Helm
/// rendered.
pub fn helm_install(lib: &Path, release: &str, namespace: &str, values: &Value) -> String {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/helm_support/helm_install.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(lib)
        .arg(chart_dir())
        .args([release, namespace])
        .arg(values.to_string())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 manifest")
}
