//! Phase 2: what `cutover --host admin@VM bootstrap` (run by the walk, through `sudo -n`, on
//! the pristine box) made: a second run changes nothing, and the box has it after a reboot.

use crate::common::loud;
use crate::machine::Vm;
use crate::project::BoxProject;

/// Each step's status in a `bootstrap --json` report, in order.
fn statuses(report: &serde_json::Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .expect("steps in the bootstrap report")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn step_times(report: &serde_json::Value) -> String {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "  {:<13} {:<8} {:>6.1}s",
                s["name"].as_str().unwrap(),
                s["status"].as_str().unwrap(),
                s["seconds"].as_f64().unwrap_or(0.0)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The box before the walk: no swap, no docker.
pub fn assert_pristine(vm: &Vm) {
    assert_eq!(
        vm.ssh_ok("tail -n +2 /proc/swaps").trim(),
        "",
        "swap before bootstrap"
    );
    assert!(
        !vm.ssh("command -v docker").status.success(),
        "docker before bootstrap"
    );
}

/// After the walk's bootstrap (the README's, as text) and first deploy: bootstrap again
/// changes nothing and keeps the identity, and what it made is on the box, also after a reboot.
pub fn after_the_walk(vm: &Vm, web: &BoxProject) {
    let second = web.cutover_ok(&["bootstrap", "--json"]);
    let report = second.json();
    loud(&format!(
        "vm: bootstrap again, per step (total {:.1}s):\n{}",
        second.took.as_secs_f64(),
        step_times(&report)
    ));
    for (name, status) in statuses(&report) {
        let want = if name == "tls" { "skipped" } else { "ok" };
        assert_eq!(status, want, "second run, step {name}: {}", second.stderr());
    }
    let recipient = report["recipient"]
        .as_str()
        .expect("the box identity's recipient");
    assert!(recipient.starts_with("age1"), "{recipient}");
    // The walk ran the command the first run printed: the key is listed once.
    let listed = std::fs::read_to_string(web.path().join("secrets/recipients.txt")).unwrap();
    assert_eq!(
        listed.lines().filter(|l| l.trim() == recipient).count(),
        1,
        "the box's key in recipients.txt:\n{listed}"
    );

    check_box(vm, &web.name);
    vm.reboot();
    check_box(vm, &web.name);
}

/// What bootstrap promised, read from the box itself (also after a reboot).
fn check_box(vm: &Vm, project: &str) {
    // The include's directory is admin's, and sudo allows admin exactly nginx's two commands
    // (admin also has the image's blanket sudo, so `sudo -l` lists both: the rule's text is
    // what is checked).
    let owner = vm.ssh_ok("stat -c '%U %a' /home/admin/nginx");
    assert_eq!(owner.trim(), "admin 755", "the include's directory");
    let rule = vm.ssh_ok("sudo -n cat /etc/sudoers.d/cutover-admin");
    assert!(
        rule.lines().any(
            |l| l == "admin ALL=(root) NOPASSWD: /usr/sbin/nginx -t, /usr/sbin/nginx -s reload"
        ),
        "{rule}"
    );
    let mode = vm.ssh_ok("sudo -n stat -c '%a %U' /etc/sudoers.d/cutover-admin");
    assert_eq!(mode.trim(), "440 root");
    vm.ssh_ok("sudo -n visudo -c -q");
    let swaps = vm.ssh_ok("cat /proc/swaps");
    assert!(
        swaps.lines().any(|l| l.starts_with("/swapfile ")),
        "/proc/swaps:\n{swaps}"
    );
    assert_eq!(vm.ssh_ok("cat /proc/sys/vm/swappiness").trim(), "10");
    // systemctl as a plain user talks D-Bus, which a minimal image lacks; root's uses
    // systemd's private socket.
    for unit in ["docker", "nginx"] {
        assert_eq!(
            vm.ssh_ok(&format!("sudo -n systemctl is-enabled {unit}"))
                .trim(),
            "enabled",
            "{unit}"
        );
        vm.wait_for(
            &format!("{unit} active"),
            std::time::Duration::from_secs(120),
            || {
                vm.ssh(&format!("sudo -n systemctl is-active --quiet {unit}"))
                    .status
                    .success()
            },
        );
    }
    let groups = vm.ssh_ok("id -nG admin");
    assert!(groups.split_whitespace().any(|g| g == "docker"), "{groups}");
    // A fresh login has the group: docker answers without sudo.
    vm.ssh_ok("docker info --format '{{.ServerVersion}}'");
    let identity = vm.ssh_ok("sudo -n stat -c '%a %U' /etc/cutover/identity.txt");
    assert_eq!(
        identity.trim(),
        "600 admin",
        "the box identity's mode and owner"
    );
    // One age identity (counted, never printed).
    let keys = vm.ssh_ok("grep -c '^AGE-SECRET-KEY-' /etc/cutover/identity.txt");
    assert_eq!(keys.trim(), "1");
    // The site answers on port 80 from outside the box: our site (the app, or 502 while it
    // is not up yet after a reboot), not Debian's welcome page.
    let url = format!("http://127.0.0.1:{}/", vm.http_port);
    let status = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
            &url,
        ])
        .output()
        .expect("run curl");
    let code = String::from_utf8_lossy(&status.stdout).to_string();
    let site = vm.ssh_ok(&format!(
        "sudo -n nginx -T 2>/dev/null | grep -c '{project}.inc' || true"
    ));
    assert!(site.trim() != "0", "nginx -T does not load the site");
    assert!(
        code == "502" || code == "200",
        "GET {url} through the box's nginx: HTTP {code}"
    );
}
