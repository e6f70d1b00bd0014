//! Builds the kernel program (scaph-ebpf) and embeds it into the agent, and
//! generates the Riemann protocol's Rust types from `proto/riemann.proto`.
//!
//! Without bpf-linker the agent still builds, with a warning, and runs in
//! procfs mode only: `cargo xtask run` / `cargo xtask test` install it.
use std::{env, fs, path::PathBuf};

use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    compile_riemann_proto()?;
    let object = out_dir.join("scaph");
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rustc-check-cfg=cfg(scaph_no_ebpf)");

    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let have_linker = which_bpf_linker();
    let built = if skip || !have_linker {
        let why = if skip {
            "AYA_BUILD_SKIP is set"
        } else {
            "bpf-linker is not on PATH"
        };
        println!(
            "cargo:warning=scaph: kernel program not built ({why}); this scaph runs in procfs mode only. \
             `cargo xtask run` installs what the eBPF build needs."
        );
        false
    } else {
        let metadata = env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
        let root = PathBuf::from(metadata).join("../scaph-ebpf");
        let root = root
            .to_str()
            .ok_or_else(|| anyhow!("non-UTF-8 path {}", root.display()))?;
        let package = aya_build::Package {
            name: "scaph-ebpf",
            root_dir: root,
            ..Default::default()
        };
        aya_build::build_ebpf([package], aya_build::Toolchain::default())
            .context("building the scaph-ebpf kernel program")?;
        true
    };
    if !built {
        // An empty object: the loader sees it and reports "built without the kernel program".
        fs::write(&object, b"").with_context(|| format!("writing {}", object.display()))?;
        // The benchmark's object, left by an earlier build, would no longer
        // match this one: scaph-bench must find none rather than a stale one.
        let floor = out_dir.join("scaph-bench-floor");
        match fs::remove_file(&floor) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", floor.display())),
        }
        println!("cargo:rustc-cfg=scaph_no_ebpf");
    }
    Ok(())
}

/// `proto/riemann.proto` → `$OUT_DIR/riemann.rs`, in pure Rust (protox
/// parses the file, prost-build writes the code): no `protoc` needed.
fn compile_riemann_proto() -> anyhow::Result<()> {
    const PROTO: &str = "proto/riemann.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"]).context("parsing proto/riemann.proto")?;
    prost_build::Config::new()
        .compile_fds(descriptors)
        .context("generating the Riemann protocol types")
}

fn which_bpf_linker() -> bool {
    env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|dir| dir.join("bpf-linker").is_file()))
}
