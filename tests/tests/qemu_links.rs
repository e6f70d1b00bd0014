//! `scaph qemu` as root, with links planted where a guest could plant them.
//!
//! Under the root, before scaph starts:
//!
//! - `linked` is a symbolic link to a folder outside the root that holds a
//!   tree of its own (`intel-rapl:0/energy_uj`), which a write or a cleanup
//!   through the link would overwrite or remove;
//! - `filelink/intel-rapl:0/energy_uj` and `.energy_uj.tmp` (the temporary
//!   name of earlier versions) are links to files outside the root;
//! - `owned` is a folder owned by another user (nobody);
//! - `good` is not there.
//!
//! A VM-like process runs for each name, then they all stop. Checked:
//! nothing outside the root is created, changed or removed, before or after
//! the cleanup; `linked` and `owned` are refused (logged) and left as they
//! are; the links in `filelink` are replaced by scaph's files, not followed;
//! `good` works; scaph keeps running throughout.
use std::{
    collections::BTreeMap,
    os::unix::fs::{symlink, MetadataExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

mod exporter_support;

use exporter_support::{wait_for, Proc};
use scaph_integration_tests::{powercap::FakeRapl, require_root, scaph_binary};

const NOBODY: u32 = 65534;

/// Kills and reaps a child when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process whose command line is that of the libvirt VM `name`.
fn vm_process(name: &str) -> Guard {
    let burner = scaph_binary().with_file_name("scaph-burn");
    let child = Command::new("bash")
        .args(["-c", r#"exec -a qemu-system-x86_64 "$0" "$@""#])
        .arg(&burner)
        .args(["--ms", "300", "--sleep-ms", "60000", "--", "-name"])
        .arg(format!("guest={name},debug-threads=on"))
        .stdout(Stdio::null())
        .spawn()
        .expect("starting a VM-like process");
    Guard(child)
}

/// Every file and folder under `dir` (links not followed): contents (for
/// files), mode, owner and modification time.
fn inventory(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32, u32, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let contents = if meta.is_file() {
                std::fs::read(&path).expect("read")
            } else {
                Vec::new()
            };
            if meta.is_dir() {
                todo.push(path.clone());
            }
            out.insert(
                path,
                (
                    contents,
                    meta.mode(),
                    meta.uid(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                ),
            );
        }
    }
    out
}

#[test]
fn links_and_foreign_folders_under_the_root_are_refused() {
    require_root();
    let rapl = FakeRapl::start(40.0, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("scaphandre");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(outside.join("intel-rapl:0")).expect("mkdir");
    std::fs::write(outside.join("intel-rapl:0/energy_uj"), "precious 1\n").expect("write");
    std::fs::write(outside.join("target"), "precious 2\n").expect("write");
    std::fs::write(outside.join("old-tmp-target"), "precious 3\n").expect("write");
    std::fs::create_dir_all(root.join("filelink/intel-rapl:0")).expect("mkdir");
    symlink(&outside, root.join("linked")).expect("symlink");
    symlink(
        outside.join("target"),
        root.join("filelink/intel-rapl:0/energy_uj"),
    )
    .expect("symlink");
    symlink(
        outside.join("old-tmp-target"),
        root.join("filelink/intel-rapl:0/.energy_uj.tmp"),
    )
    .expect("symlink");
    std::fs::create_dir(root.join("owned")).expect("mkdir");
    std::os::unix::fs::chown(root.join("owned"), Some(NOBODY), Some(NOBODY)).expect("chown");
    let before = inventory(&outside);

    let args: Vec<String> = [
        "--no-header",
        "-v",
        "--fallback-procfs",
        "-s",
        "powercap_rapl",
        "--powercap-root",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([rapl.root().display().to_string()])
    .chain(
        ["qemu", "--step", "1", "--cleanup-after", "3", "--root"]
            .iter()
            .map(|s| (*s).to_owned()),
    )
    .chain([root.display().to_string()])
    .collect();
    let mut scaph = Proc::start("scaph", &scaph_binary(), &args);
    wait_for("scaph to start measuring", Duration::from_secs(30), || {
        assert!(scaph.running(), "scaph exited:\n{}", scaph.log());
        scaph.log().contains("CPU time source:").then_some(())
    });
    let vms: Vec<Guard> = ["linked", "filelink", "owned", "good"]
        .into_iter()
        .map(vm_process)
        .collect();

    let counter = |vm: &str| root.join(vm).join("intel-rapl:0/energy_uj");
    wait_for(
        "the trees of good and filelink",
        Duration::from_secs(20),
        || {
            let regular = |p: PathBuf| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file());
            (regular(counter("good")) && regular(counter("filelink"))).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(3)); // a few more writes
    assert!(scaph.running(), "scaph keeps running:\n{}", scaph.log());
    let log = scaph.log();
    for vm in ["linked", "owned"] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("VM \"{vm}\": not written")) && l.contains("refused")),
            "{vm} refused in the log:\n{log}"
        );
    }
    assert_eq!(
        inventory(&outside),
        before,
        "nothing outside the root changed"
    );
    assert!(root.join("linked").is_symlink(), "the link is left alone");
    assert_eq!(
        std::fs::read_dir(root.join("owned"))
            .expect("owned")
            .count(),
        0,
        "nothing written in owned"
    );
    let filelink = root.join("filelink/intel-rapl:0");
    assert!(std::fs::read_to_string(filelink.join("energy_uj"))
        .expect("counter")
        .trim()
        .parse::<u64>()
        .is_ok());
    assert!(
        !filelink.join("name").is_symlink()
            && std::fs::metadata(filelink.join("energy_uj"))
                .expect("m")
                .uid()
                == 0
    );

    // The VMs stop: after the grace period, scaph's trees go, the rest stays.
    let stopped = Instant::now();
    drop(vms);
    wait_for("the cleanup of good", Duration::from_secs(20), || {
        (!root.join("good").exists()).then_some(())
    });
    eprintln!(
        "good removed {:?} after its process stopped",
        stopped.elapsed()
    );
    wait_for("the cleanup of filelink", Duration::from_secs(10), || {
        (!root.join("filelink").exists()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(scaph.running(), "scaph keeps running:\n{}", scaph.log());
    assert_eq!(
        inventory(&outside),
        before,
        "nothing outside the root changed or removed by the cleanup"
    );
    assert!(
        root.join("linked").is_symlink(),
        "the link is left alone by the cleanup"
    );
    assert!(
        root.join("owned").is_dir(),
        "the foreign folder is left alone by the cleanup"
    );
    let log = scaph.log();
    assert!(!log.contains("precious"), "contents never logged:\n{log}");
    eprintln!(
        "{}",
        log.lines()
            .filter(|l| l.contains("refused"))
            .take(4)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_root_its_group_may_rename_in_is_a_start_error() {
    use std::os::unix::fs::PermissionsExt as _;
    require_root();
    let rapl = FakeRapl::start(40.0, 0);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("scaphandre");
    std::fs::create_dir(&root).expect("mkdir");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o775)).expect("chmod");
    let args: Vec<String> = [
        "--no-header",
        "--fallback-procfs",
        "-s",
        "powercap_rapl",
        "--powercap-root",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([rapl.root().display().to_string()])
    .chain(["qemu".to_owned(), "--root".to_owned()])
    .chain([root.display().to_string()])
    .collect();
    let mut scaph = Proc::start("scaph", &scaph_binary(), &args);
    let status = scaph.wait(Duration::from_secs(30));
    assert!(!status.success(), "refused:\n{}", scaph.log());
    assert!(
        scaph.log().contains("mode 0775") && scaph.log().contains("chmod go-w"),
        "{}",
        scaph.log()
    );
    assert_eq!(std::fs::read_dir(&root).expect("root").count(), 0);
}
