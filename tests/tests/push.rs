//! `scaph prometheus-push` against a real pushgateway on loopback: pushes
//! arrive and read back through the gateway's API; when the gateway goes
//! away scaph keeps running, says so once, and pushes again when it returns.
mod exporter_support;

use std::time::Duration;

use exporter_support::{free_port, http_get, sample_value, scaph, tool, wait_for, Proc};
use scaph_integration_tests::require_root;

fn pushgateway(port: u16) -> Proc {
    Proc::start(
        "pushgateway",
        &tool("prometheus-pushgateway", "prometheus-pushgateway"),
        &[format!("--web.listen-address=127.0.0.1:{port}")],
    )
}

/// The gateway's own exposition, once it holds our job's host energy.
fn pushed_host_energy(port: u16, job: &str) -> Option<f64> {
    let response = http_get(port, "/metrics").ok()?;
    sample_value(
        &response.body,
        "scaph_host_energy_joules_total",
        &[&format!("job=\"{job}\"")],
    )
}

#[test]
fn pushes_arrive_and_resume_after_the_gateway_returns() {
    require_root();
    let port = free_port();
    let job = "scaph_push_test";
    let mut gateway = pushgateway(port);
    wait_for("the pushgateway to listen", Duration::from_secs(20), || {
        http_get(port, "/-/ready").ok().filter(|r| r.status == 200)
    });

    let port_arg = port.to_string();
    let mut scaph = scaph(&[
        "prometheus-push",
        "-H",
        "127.0.0.1",
        "-p",
        &port_arg,
        "-s",
        "1",
        "--job",
        job,
    ]);
    let first = wait_for("a push with host energy", Duration::from_secs(20), || {
        assert!(scaph.running(), "scaph exited:\n{}", scaph.log());
        pushed_host_energy(port, job)
    });

    // Read the group back through the API: job and instance labels, and processes.
    let api = http_get(port, "/api/v1/metrics").expect("pushgateway API");
    let groups: serde_json::Value = serde_json::from_str(&api.body).expect("API answers JSON");
    let group = groups["data"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["labels"]["job"] == job))
        .unwrap_or_else(|| panic!("no group for job {job}: {}", api.body));
    let instance = group["labels"]["instance"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!instance.is_empty(), "instance label: {group}");
    for family in [
        "scaph_host_energy_joules_total",
        "scaph_process_energy_joules_total",
        "scaph_build_info",
        "push_time_seconds",
    ] {
        assert!(
            group.get(family).is_some(),
            "{family} missing from the pushed group"
        );
    }
    let processes = group["scaph_process_energy_joules_total"]["metrics"]
        .as_array()
        .map_or(0, Vec::len);
    eprintln!("pushgateway: job {job}, instance {instance}, host {first:.3} J, {processes} process series");
    assert!(processes >= 1);

    // The gateway goes away: scaph keeps running through several failed pushes.
    drop(gateway);
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        scaph.running(),
        "scaph stopped when the gateway went away:\n{}",
        scaph.log()
    );
    let log = scaph.log();
    let failures = log.lines().filter(|l| l.contains("push failed")).count();
    eprintln!("while the gateway was down, scaph logged {failures} failure line(s)");
    assert_eq!(
        failures, 1,
        "failures are rate-limited to one line a minute:\n{log}"
    );

    // It returns (empty: no persistence) and receives pushes again.
    gateway = pushgateway(port);
    let again = wait_for("pushes to resume", Duration::from_secs(20), || {
        pushed_host_energy(port, job)
    });
    eprintln!("after the restart: host {again:.3} J (before {first:.3} J)");
    assert!(
        again > first,
        "the counter kept growing while the gateway was away"
    );
    assert!(
        scaph.log().contains("works again"),
        "recovery is logged:\n{}",
        scaph.log()
    );
    drop(gateway);
}

/// Runs a shell command line in `dir`, which must succeed; returns stdout.
fn sh(dir: &std::path::Path, script: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `curl` over https with the test CA and the given credentials.
fn curl(dir: &std::path::Path, port: u16, path: &str, user: &str) -> Option<String> {
    let out = std::process::Command::new("curl")
        .args(["-sf", "--cacert", "ca.pem", "-u", user])
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn pushes_over_tls_with_basic_auth_and_no_password_on_the_command_line() {
    require_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // A CA, a certificate for 127.0.0.1 signed by it, and a bcrypt hash.
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    sh(d, &format!("openssl req -x509 {ec} -keyout ca.key -out ca.pem -days 1 -subj /CN=scaph-test-ca 2>/dev/null"));
    sh(
        d,
        &format!(
            "openssl req {ec} -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null"
        ),
    );
    std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    sh(d, "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile san.ext 2>/dev/null");
    let password = "Zq8-not-on-the-cmdline";
    let hash = sh(d, &format!("htpasswd -nbBC 10 scaph {password}"));
    let hash = hash.trim().strip_prefix("scaph:").expect("htpasswd line");
    std::fs::write(
        d.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: {0}/server.pem\n  key_file: {0}/server.key\nbasic_auth_users:\n  scaph: '{hash}'\n",
            d.display()
        ),
    )
    .expect("web config");
    std::fs::write(d.join("password"), format!("{password}\n")).expect("password file");
    std::fs::write(d.join("wrong"), "wrong-password\n").expect("password file");

    let port = free_port();
    let _gateway = Proc::start(
        "pushgateway",
        &tool("prometheus-pushgateway", "prometheus-pushgateway"),
        &[
            format!("--web.listen-address=127.0.0.1:{port}"),
            format!("--web.config.file={}/web.yml", d.display()),
        ],
    );
    let user = format!("scaph:{password}");
    wait_for(
        "the pushgateway to listen over TLS",
        Duration::from_secs(20),
        || curl(d, port, "/-/ready", &user),
    );
    assert!(
        curl(d, port, "/-/ready", "scaph:wrong").is_none(),
        "the gateway checks the password"
    );

    let port_arg = port.to_string();
    let push = |job: &str, password_file: &str, ca: bool| {
        let path = |name: &str| d.join(name).display().to_string();
        let mut args = vec![
            "-v",
            "prometheus-push",
            "-S",
            "https",
            "-H",
            "127.0.0.1",
            "-p",
            &port_arg,
            "-s",
            "1",
        ];
        let password_path = path(password_file);
        args.extend([
            "--job",
            job,
            "--username",
            "scaph",
            "--password-file",
            &password_path,
        ]);
        let ca_path = path("ca.pem");
        if ca {
            args.extend(["--ca-file", &ca_path]);
        }
        scaph(&args)
    };
    let mut good = push("scaph_tls", "password", true);
    let wrong = push("scaph_wrong", "wrong", true);
    let untrusted = push("scaph_untrusted", "password", false);
    let body = wait_for(
        "a push over TLS with basic auth",
        Duration::from_secs(30),
        || {
            assert!(good.running(), "scaph exited:\n{}", good.log());
            curl(d, port, "/metrics", &user).filter(|b| b.contains("job=\"scaph_tls\""))
        },
    );
    assert!(
        body.contains("scaph_host_energy_joules_total"),
        "host energy pushed"
    );
    std::thread::sleep(Duration::from_secs(2));
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", good.pid())).expect("cmdline");
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(password),
        "the password is not on the command line"
    );
    assert!(!good.log().contains(password), "nor in the log");
    let rejected = wrong.log();
    assert!(
        rejected.contains("push failed") && rejected.contains("401"),
        "wrong password:\n{rejected}"
    );
    let log = untrusted.log();
    assert!(
        log.contains("push failed"),
        "without --ca-file the test CA is not trusted:\n{log}"
    );
    let all = curl(d, port, "/metrics", &user).unwrap_or_default();
    assert!(
        !all.contains("job=\"scaph_wrong\"") && !all.contains("job=\"scaph_untrusted\""),
        "only the good push arrived"
    );
}
