//! Installs what the eBPF build needs, on a fresh Debian-like machine.
//!
//! Facts this relies on (../shared/reference/toolchain.md): the rustc that
//! compiles the eBPF crate and bpf-linker must use the same LLVM major (22),
//! bpf-linker is built against Debian's llvm-22-dev, and the eBPF crate needs
//! `rust-src` for `-Z build-std=core`.
use std::process::Command;

use anyhow::{bail, Context as _, Result};

/// The toolchain aya-build uses for the kernel crate (its default).
pub const EBPF_TOOLCHAIN: &str = "nightly";
const LLVM_MAJOR: &str = "22";
const BPF_LINKER_VERSION: &str = "0.13.0";
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const APT_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev", "libzstd-dev"];

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn ensure() -> Result<()> {
    // rust-src for `-Z build-std=core`; clippy for the kernel crate's lint step.
    ensure_component("rust-src")?;
    ensure_component("clippy")?;
    check_llvm_of_toolchain();
    ensure_bpf_linker()?;
    ensure_tracefs();
    Ok(())
}

/// Adds rustup component `name` to the kernel crate's toolchain unless it
/// has it (installed components are listed as `name` or `name-<target>`).
fn ensure_component(name: &str) -> Result<()> {
    let installed = output(
        "rustup",
        &[
            "component",
            "list",
            "--installed",
            "--toolchain",
            EBPF_TOOLCHAIN,
        ],
    )
    .unwrap_or_default();
    if installed.lines().any(|l| {
        l == name
            || l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('-'))
    }) {
        return Ok(());
    }
    eprintln!("xtask: adding {name} to the {EBPF_TOOLCHAIN} toolchain");
    run(
        "rustup",
        &["component", "add", name, "--toolchain", EBPF_TOOLCHAIN],
    )
}

fn check_llvm_of_toolchain() {
    let Some(info) = output("rustc", &[&format!("+{EBPF_TOOLCHAIN}"), "-vV"]) else {
        eprintln!(
            "xtask: warning: no {EBPF_TOOLCHAIN} toolchain; the kernel program will not build"
        );
        return;
    };
    let llvm = info
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .unwrap_or("?");
    if !llvm.starts_with(&format!("{LLVM_MAJOR}.")) {
        eprintln!(
            "xtask: warning: rustc +{EBPF_TOOLCHAIN} uses LLVM {llvm}, bpf-linker uses LLVM {LLVM_MAJOR}; \
             the eBPF link will fail with 'Invalid record'. Install a toolchain on LLVM {LLVM_MAJOR}."
        );
    }
}

fn ensure_bpf_linker() -> Result<()> {
    if output("bpf-linker", &["--version"]).is_some() {
        return Ok(());
    }
    let install = format!(
        "LLVM_PREFIX=/usr/lib/llvm-{LLVM_MAJOR} cargo install bpf-linker --version {BPF_LINKER_VERSION} \
         --no-default-features --features llvm-{LLVM_MAJOR}"
    );
    if !is_root() {
        bail!(
            "bpf-linker is missing. Run, then retry:\n  sudo apt-get update && sudo apt-get install -y {}\n  {install}",
            APT_PACKAGES.join(" ")
        );
    }
    let llvm_config = format!("/usr/lib/llvm-{LLVM_MAJOR}/bin/llvm-config");
    if !std::path::Path::new(&llvm_config).exists() {
        eprintln!("xtask: installing {} (apt)", APT_PACKAGES.join(" "));
        run("apt-get", &["update", "-q"])?;
        let mut args = vec!["install", "-y", "-q"];
        args.extend_from_slice(APT_PACKAGES);
        run_env("apt-get", &args, &[("DEBIAN_FRONTEND", "noninteractive")])?;
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR} (a few minutes)"
    );
    run_env(
        "cargo",
        &[
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            &format!("llvm-{LLVM_MAJOR}"),
        ],
        &[("LLVM_PREFIX", &format!("/usr/lib/llvm-{LLVM_MAJOR}"))],
    )?;
    if output("bpf-linker", &["--version"]).is_none() {
        bail!("bpf-linker was installed but is not on PATH: add ~/.cargo/bin to PATH");
    }
    Ok(())
}

/// The exporter tests check scaph against the real tools: `promtool` and
/// `prometheus` (Debian package `prometheus`) and `prometheus-pushgateway`;
/// the pushgateway's TLS and basic auth test also needs `openssl`, `curl` and
/// `htpasswd` (`apache2-utils`). Installed with apt as root; otherwise the
/// command is printed.
pub fn ensure_exporter_test_tools() -> Result<()> {
    const TOOLS: &[(&str, &str)] = &[
        ("promtool", "prometheus"),
        ("prometheus", "prometheus"),
        ("prometheus-pushgateway", "prometheus-pushgateway"),
        ("openssl", "openssl"),
        ("curl", "curl"),
        ("htpasswd", "apache2-utils"),
    ];
    let mut missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(bin, _)| !on_path(bin))
        .map(|(_, package)| *package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        eprintln!(
            "xtask: the exporter tests need {}. Install with:\n  sudo apt-get update && sudo apt-get install -y --no-install-recommends {}",
            missing.join(", "),
            missing.join(" ")
        );
        return Ok(());
    }
    eprintln!("xtask: installing {} (apt)", missing.join(" "));
    run("apt-get", &["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend_from_slice(&missing);
    run_env("apt-get", &args, &[("DEBIAN_FRONTEND", "noninteractive")])
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The classic-tracepoint mode (kernels without BTF) needs tracefs mounted.
fn ensure_tracefs() {
    let dir = std::path::Path::new("/sys/kernel/tracing");
    let empty = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    if empty && is_root() {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
            .status();
    }
}

/// Version of the PyPI package the Riemann integration test decodes with.
const RIEMANN_CLIENT: &str = "riemann-client==7.0.0";

/// The Riemann integration test decodes scaph's messages with the protobuf
/// module that the PyPI package `riemann-client` ships. It goes into a virtual
/// environment under `target/` (the test looks there first), because it pins
/// protobuf below 4 and must not change the system's Python packages. Failing
/// here only warns: the other tests still run, and the Riemann test says what
/// is missing.
pub fn ensure_riemann_client(workspace: &std::path::Path) {
    let venv = workspace.join("target/riemann-venv");
    let python = venv.join("bin/python3");
    let python = python.to_string_lossy();
    if output(&python, &["-c", "import riemann_client.riemann_pb2"]).is_some() {
        return;
    }
    let venv = venv.to_string_lossy();
    eprintln!("xtask: installing {RIEMANN_CLIENT} (PyPI) into {venv} for the Riemann test");
    let installed = run("python3", &["-m", "venv", &venv]).and_then(|()| {
        run(
            &format!("{venv}/bin/pip"),
            &["install", "-q", RIEMANN_CLIENT],
        )
    });
    if let Err(e) = installed {
        let fallback = if is_root() {
            run("python3", &["-m", "pip", "install", "-q", RIEMANN_CLIENT]).ok()
        } else {
            None
        };
        if fallback.is_none() {
            eprintln!(
                "xtask: warning: {e}; the Riemann test needs it: python3 -m venv {venv} && {venv}/bin/pip install {RIEMANN_CLIENT}"
            );
        }
    }
}

/// PyPI packages of the OTLP integration test's receiver (tests/otlp_receiver.py).
const OTLP_RECEIVER: &[&str] = &["opentelemetry-proto==1.45.2", "grpcio==1.85.3"];

/// The OTLP integration test decodes scaph's requests with OpenTelemetry's
/// generated Python modules (`opentelemetry-proto`) and serves gRPC with
/// `grpcio`, from a virtual environment under `target/` (the test looks
/// there first). Failing here only warns: the OTLP test says what is missing.
pub fn ensure_otlp_receiver(workspace: &std::path::Path) {
    let venv = workspace.join("target/otlp-venv");
    let python = venv.join("bin/python3");
    let python = python.to_string_lossy();
    let check = "import grpc, opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc";
    if output(&python, &["-c", check]).is_some() {
        return;
    }
    let venv = venv.to_string_lossy();
    let packages = OTLP_RECEIVER.join(" ");
    eprintln!("xtask: installing {packages} (PyPI) into {venv} for the OTLP test");
    let installed = run("python3", &["-m", "venv", &venv]).and_then(|()| {
        let mut args = vec!["install", "-q"];
        args.extend_from_slice(OTLP_RECEIVER);
        run(&format!("{venv}/bin/pip"), &args)
    });
    if let Err(e) = installed {
        eprintln!(
            "xtask: warning: {e}; the OTLP test needs them: python3 -m venv {venv} && {venv}/bin/pip install {packages}"
        );
    }
}

/// Version of the PyPI package that validates deploy/kubernetes against Kubernetes' schemas.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// The deployment tests (tests/tests/deploy.rs, least_privilege.rs, helm*.rs) use
/// `kubernetes-validate` (PyPI, in a virtual environment under `target/`,
/// where the test looks first), `buildah` (builds the container image),
/// `systemd-analyze` (verifies the unit) and `setpriv` (drops privileges).
/// Installed as root; otherwise the commands are printed. Failing here only
/// warns: the tests say what is missing.
pub fn ensure_deploy_test_tools(workspace: &std::path::Path) {
    ensure_helm_library(workspace);
    let venv = workspace.join("target/deploy-venv");
    let venv = venv.to_string_lossy();
    if output(&format!("{venv}/bin/kubernetes-validate"), &["--version"]).is_none() {
        eprintln!(
            "xtask: installing {KUBERNETES_VALIDATE} (PyPI) into {venv} for the deployment tests"
        );
        let installed = run("python3", &["-m", "venv", &venv]).and_then(|()| {
            run(
                &format!("{venv}/bin/pip"),
                &["install", "-q", KUBERNETES_VALIDATE],
            )
        });
        if let Err(e) = installed {
            eprintln!(
                "xtask: warning: {e}; the deployment tests need it: python3 -m venv {venv} && {venv}/bin/pip install {KUBERNETES_VALIDATE}"
            );
        }
    }
    const TOOLS: &[(&str, &str)] = &[
        ("buildah", "buildah"),
        ("systemd-analyze", "systemd"),
        ("setpriv", "util-linux"),
    ];
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(bin, _)| !on_path(bin))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return;
    }
    if !is_root() {
        eprintln!(
            "xtask: the deployment tests need {}. Install with:\n  sudo apt-get install -y --no-install-recommends {}",
            missing.join(", "),
            missing.join(" ")
        );
        return;
    }
    eprintln!(
        "xtask: installing {} (apt) for the deployment tests",
        missing.join(" ")
    );
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend_from_slice(&missing);
    if let Err(e) = run("apt-get", &["update", "-q"])
        .and_then(|()| run_env("apt-get", &args, &[("DEBIAN_FRONTEND", "noninteractive")]))
    {
        eprintln!("xtask: warning: {e}");
    }
}

/// The PyPI package whose wheel bundles Helm's own Go code as a C library
/// (libhelm_sdkpy.so, linux-amd64): tests/tests/helm.rs lints the chart with
/// it through ctypes. Its Python code asks for Python 3.12, which the test
/// never imports, hence --ignore-requires-python and --no-deps.
const HELM_LIBRARY: &str = "helm-sdkpy==0.1.32";

/// Installs HELM_LIBRARY into target/helm-venv, where tests/tests/helm.rs
/// looks for it. Failing here only warns: the test says what is missing.
fn ensure_helm_library(workspace: &std::path::Path) {
    let venv = workspace.join("target/helm-venv");
    let venv = venv.to_string_lossy();
    let check = "import importlib.util as u, sys; sys.exit(u.find_spec('helm_sdkpy') is None)";
    if output(&format!("{venv}/bin/python3"), &["-c", check]).is_some() {
        return;
    }
    eprintln!("xtask: installing {HELM_LIBRARY} (PyPI) into {venv} for the Helm chart test");
    let installed = run("python3", &["-m", "venv", &venv]).and_then(|()| {
        run(
            &format!("{venv}/bin/pip"),
            &[
                "install",
                "-q",
                "--no-deps",
                "--ignore-requires-python",
                HELM_LIBRARY,
            ],
        )
    });
    if let Err(e) = installed {
        eprintln!(
            "xtask: warning: {e}; the Helm chart test needs it: python3 -m venv {venv} && {venv}/bin/pip install --no-deps --ignore-requires-python {HELM_LIBRARY}"
        );
    }
}

/// `cargo fuzz` (crates.io `cargo-fuzz`) and the nightly toolchain it
/// builds with (libFuzzer and the sanitizers need it). Installs what is
/// missing, without a prompt; does nothing when both are there.
pub fn ensure_cargo_fuzz() -> Result<()> {
    if output("rustc", &["+nightly", "--version"]).is_none() {
        eprintln!("xtask: installing the nightly toolchain for the fuzz targets");
        run(
            "rustup",
            &["toolchain", "install", "nightly", "--profile", "minimal"],
        )?;
    }
    if output("cargo", &["fuzz", "--version"]).is_none() {
        eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (crates.io)");
        run(
            "cargo",
            &[
                "install",
                "cargo-fuzz",
                "--locked",
                "--version",
                CARGO_FUZZ_VERSION,
            ],
        )?;
    }
    Ok(())
}

/// The target triple nightly builds for by default (where `cargo fuzz` puts its binaries).
pub fn nightly_host() -> Result<String> {
    let info = output("rustc", &["+nightly", "-vV"]).context("running rustc +nightly -vV")?;
    info.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("no host in rustc -vV")
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    run_env(program, args, &[])
}

fn run_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("starting {program}"))?;
    if !status.success() {
        bail!("{program} {} failed: {status}", args.join(" "));
    }
    Ok(())
}
