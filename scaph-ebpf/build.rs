use which::which;

/// Rebuild the kernel program when bpf-linker changes (a new LLVM may emit different code).
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
