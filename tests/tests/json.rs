//! `scaph json`: one JSON object per line. Every line parses on its own with
//! an independent parser (serde_json's generic `Value`, not the types that
//! wrote it), also when scaph is stopped by SIGINT mid-run.
use std::{os::unix::fs::OpenOptionsExt as _, time::Duration};

mod exporter_support;

use exporter_support::{scaph, wait_for};
use scaph_integration_tests::{powercap::FakeRapl, require_root};

/// Parses every line and checks the fields a reader relies on.
fn check_lines(text: &str) -> Vec<serde_json::Value> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the last line is complete"
    );
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line {} is not JSON ({e}): {line}", n + 1));
            for key in [
                "timestamp",
                "host",
                "idle",
                "sockets",
                "consumers",
                "source",
                "estimated",
                "sensor",
            ] {
                assert!(value.get(key).is_some(), "line {}: no {key}", n + 1);
            }
            value
        })
        .collect()
}

#[test]
fn every_line_parses_also_after_sigint() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    // SIGINT at different points of the 1 s step, once the first line is out.
    for (n, delay_ms) in [0u64, 350, 700, 1500].into_iter().enumerate() {
        let file = dir.path().join(format!("out{n}.jsonl"));
        let mut scaph = scaph(&["json", "-s", "1", "-f", file.to_str().expect("utf-8")]);
        wait_for("the first JSON line", Duration::from_secs(20), || {
            assert!(scaph.running(), "scaph exited early:\n{}", scaph.log());
            std::fs::read_to_string(&file)
                .ok()
                .filter(|t| t.contains('\n'))
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        scaph.signal(libc::SIGINT);
        let status = scaph.wait(Duration::from_secs(10));
        assert!(
            status.success(),
            "SIGINT is a clean stop: {status}\n{}",
            scaph.log()
        );
        let text = std::fs::read_to_string(&file).expect("output file");
        let lines = check_lines(&text);
        eprintln!(
            "SIGINT {delay_ms} ms after the first line: {} lines, all valid JSON",
            lines.len()
        );
        assert!(!lines.is_empty());
        let last = lines.last().expect("a line");
        let estimated = last["estimated"].as_bool().expect("estimated is a boolean");
        assert_eq!(
            estimated,
            last["sensor"] == "estimate",
            "estimated flag follows the sensor: {last}"
        );
        assert!(
            last["host"]["energy_joules"]
                .as_f64()
                .is_some_and(|j| j > 0.0),
            "{last}"
        );
    }
}

#[test]
fn stdout_lines_with_a_measured_sensor_and_top_consumers() {
    require_root();
    let rapl = FakeRapl::start(30.0, 5_000_000);
    let root = rapl.root();
    let mut scaph = scaph(&[
        "--no-header",
        "--powercap-root",
        root.to_str().expect("utf-8"),
        "--sensor",
        "powercap_rapl",
        "json",
        "-t",
        "4",
        "-s",
        "1",
        "--max-top-consumers",
        "3",
    ]);
    let status = scaph.wait(Duration::from_secs(15));
    assert!(status.success(), "{}", scaph.log());
    // stdout and stderr share the log file; JSON lines are the ones starting with '{'.
    let log = scaph.log();
    let text: String = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| format!("{l}\n"))
        .collect();
    let lines = check_lines(&text);
    assert!(lines.len() >= 3, "{log}");
    let last = lines.last().expect("a line");
    eprintln!(
        "last line: sensor {}, estimated {}, host {}",
        last["sensor"], last["estimated"], last["host"]
    );
    assert_eq!(last["estimated"], false);
    assert_eq!(last["sensor"], "powercap_rapl");
    assert!(
        last["consumers"]
            .as_array()
            .is_some_and(|c| !c.is_empty() && c.len() <= 3),
        "{last}"
    );
    let watts = last["host"]["power_watts"].as_f64().expect("host power");
    assert_eq!(
        last["host"]["consumption"]
            .as_f64()
            .map(|uw| (uw / 1e6 - watts).abs() < 1e-6),
        Some(true),
        "µW and W agree"
    );
    // Power over the whole run, from the cumulative counter and the timestamps
    // (one step alone is noisy when the fake counter's writer thread is delayed).
    let first = &lines[0];
    let joules = last["host"]["energy_joules"].as_f64().unwrap_or(0.0)
        - first["host"]["energy_joules"].as_f64().unwrap_or(0.0);
    let seconds =
        last["timestamp"].as_f64().unwrap_or(0.0) - first["timestamp"].as_f64().unwrap_or(0.0);
    let average = joules / seconds;
    eprintln!("host {average:.2} W over {seconds:.2} s, fake RAPL draws 30 W");
    assert!(
        (average - 30.0).abs() < 6.0,
        "host {average} W, fake RAPL draws 30 W"
    );
}

/// A tmpfs mounted on a temporary folder, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "scaph-json-test",
            ])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs");
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn a_full_disk_drops_whole_lines_and_writing_resumes() {
    require_root();
    let fs = Tmpfs::mount("64k");
    let file = fs.0.path().join("out.jsonl");
    let filler = fs.0.path().join("filler");
    // Room for a line or two.
    std::fs::write(&filler, vec![b'x'; 52 << 10]).expect("filler");
    let mut scaph = scaph(&[
        "-v",
        "--fallback-procfs",
        "json",
        "-s",
        "0",
        "--step-nano",
        "200000000",
        "--max-top-consumers",
        "20",
        "-f",
        file.to_str().expect("utf-8"),
    ]);
    wait_for("a full disk", Duration::from_secs(30), || {
        assert!(scaph.running(), "scaph exited:\n{}", scaph.log());
        scaph.log().contains("lines dropped in a row").then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        scaph.running(),
        "scaph keeps measuring on a full disk:\n{}",
        scaph.log()
    );
    let full = std::fs::read_to_string(&file).expect("output");
    let kept = check_lines(&full).len();
    std::fs::remove_file(&filler).expect("making room");
    wait_for("writing to resume", Duration::from_secs(20), || {
        scaph.log().contains("works again").then_some(())
    });
    std::thread::sleep(Duration::from_millis(600));
    scaph.signal(libc::SIGINT);
    let status = scaph.wait(Duration::from_secs(10));
    assert!(status.success(), "{status}\n{}", scaph.log());
    let text = std::fs::read_to_string(&file).expect("output");
    let lines = check_lines(&text);
    eprintln!(
        "{kept} lines before the disk filled up, {} in all after room was made",
        lines.len()
    );
    assert!(lines.len() > kept, "lines written again");
    let log = scaph.log();
    eprintln!(
        "{}",
        log.lines()
            .filter(|l| l.contains("json:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_link_planted_by_another_user_is_not_followed() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("precious");
    std::fs::write(&target, "precious\n").expect("target");
    let link = dir.path().join("out.jsonl");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).expect("lchown");
    let mut scaph = scaph(&[
        "--fallback-procfs",
        "json",
        "-s",
        "1",
        "-f",
        link.to_str().expect("utf-8"),
    ]);
    let status = scaph.wait(Duration::from_secs(20));
    assert!(!status.success(), "refused:\n{}", scaph.log());
    assert!(
        scaph
            .log()
            .contains("refused: a symbolic link owned by uid 65534"),
        "{}",
        scaph.log()
    );
    assert_eq!(
        std::fs::read_to_string(&target).expect("target"),
        "precious\n",
        "not truncated"
    );
}

/// Runs `scaph json -f path` and returns its log once it exited (refused).
fn refused(path: &std::path::Path) -> String {
    let mut scaph = scaph(&[
        "--fallback-procfs",
        "json",
        "-s",
        "1",
        "-f",
        path.to_str().expect("utf-8"),
    ]);
    let status = scaph.wait(Duration::from_secs(20));
    assert!(!status.success(), "refused:\n{}", scaph.log());
    scaph.log()
}

#[test]
fn a_folder_link_of_another_user_in_the_path_is_not_followed() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).expect("mkdir");
    std::fs::write(etc.join("passwd"), "precious\n").expect("target");
    let link = dir.path().join("d");
    std::os::unix::fs::symlink(&etc, &link).expect("symlink");
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).expect("lchown");
    let log = refused(&link.join("passwd"));
    assert!(
        log.contains("refused: a symbolic link in the path"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(etc.join("passwd")).expect("target"),
        "precious\n",
        "not truncated"
    );
}

#[test]
fn a_file_or_fifo_of_another_user_is_refused() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("theirs.jsonl");
    std::fs::write(&file, "precious\n").expect("file");
    std::os::unix::fs::chown(&file, Some(65534), Some(65534)).expect("chown");
    let log = refused(&file);
    assert!(log.contains("refused: owned by uid 65534"), "{log}");
    assert_eq!(
        std::fs::read_to_string(&file).expect("file"),
        "precious\n",
        "not truncated"
    );

    // A reader that never reads: refused at once, not written to forever.
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("path");
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0, "mkfifo");
    std::os::unix::fs::chown(&fifo, Some(65534), Some(65534)).expect("chown");
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("reader");
    let log = refused(&fifo);
    assert!(log.contains("refused: not a regular file (Fifo)"), "{log}");
}
