//! Phase 3's nft part (issue #26 item 5): the walk's project moves to `nginx.switch: nft` on
//! the README's box, where deploys run as `admin`, not root. `bootstrap` (through `sudo -n`)
//! installs nftables, the project's root-owned grant, the root-owned copy of cutover and the
//! sudoers drop-in; the deploy phase then deploys under load in nft mode, rolls back with
//! nginx's PIDs unchanged, and reboots: the boot unit restores the rule before nginx starts,
//! and `status` reads the color from it.

use crate::common::loud;
use crate::machine::Vm;
use crate::project::BoxProject;

/// The stable ports nginx's upstream names (nothing on the box listens on them).
pub const SWITCH_PORTS: [u16; 2] = [9180, 9181];

/// The walk's color ports (`cutover init`'s template).
pub const BLUE: u16 = 8081;

/// cutover.yml gets `switch: nft` and the switch ports; bootstrap sets the box up for it.
pub fn switch_to_nft(vm: &Vm, web: &BoxProject) {
    let config = std::fs::read_to_string(web.config_path()).unwrap();
    assert!(config.contains("\nnginx:\n"), "{config}");
    let config = config.replacen(
        "\nnginx:\n",
        &format!(
            "\nnginx:\n  switch: nft\n  switch_ports: [{}, {}]\n",
            SWITCH_PORTS[0], SWITCH_PORTS[1]
        ),
        1,
    );
    std::fs::write(web.config_path(), config).unwrap();
    let run = web.cutover_ok(&["bootstrap", "--json"]);
    let report = run.json();
    let changed: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "changed")
        .filter_map(|s| s["name"].as_str())
        .collect();
    loud(&format!(
        "vm: bootstrap for nginx.switch: nft took {:.1}s, changed: {changed:?}",
        run.took.as_secs_f64()
    ));
    vm.ssh_ok("sudo -n nft --version");
    let project = &web.name;
    for (path, want) in [
        (
            format!("/var/lib/cutover/switch/{project}.grant"),
            "600 root",
        ),
        ("/var/lib/cutover/switch".to_string(), "700 root"),
        (
            "/usr/local/lib/cutover-root/cutover".to_string(),
            "755 root",
        ),
        ("/usr/local/lib/cutover-root".to_string(), "755 root"),
        (
            format!("/etc/sudoers.d/cutover-switch-{project}"),
            "440 root",
        ),
    ] {
        let got = vm.ssh_ok(&format!("sudo -n stat -c '%a %U' {path}"));
        assert_eq!(got.trim(), want, "{path}");
    }
    let rule = vm.ssh_ok(&format!(
        "sudo -n cat /etc/sudoers.d/cutover-switch-{project}"
    ));
    assert!(
        rule.contains(&format!(
            "admin ALL=(root) NOPASSWD: /usr/local/lib/cutover-root/cutover switch-rule read {project}, "
        )),
        "{rule}"
    );
    vm.ssh_ok("sudo -n visudo -c -q");
}

/// nginx's master and worker PIDs on the box.
pub fn nginx_pids(vm: &Vm) -> String {
    vm.ssh_ok("ps -C nginx -o pid= | sort -n | tr -s ' \\n' ' '")
        .trim()
        .to_string()
}

/// After the reboot: the boot unit restored the rule (to blue, what served) and was done
/// before nginx started; `status` reads blue from the rule.
pub fn after_reboot(vm: &Vm, web: &BoxProject) {
    let project = &web.name;
    let table = vm.ssh_ok(&format!("sudo -n nft list table ip cutover_{project}"));
    assert!(
        table.contains(&format!(
            "tcp dport {} dnat to 127.0.0.1:{BLUE}",
            SWITCH_PORTS[0]
        )),
        "the rule after the reboot:\n{table}"
    );
    let times = vm.ssh_ok(
        "sudo -n systemctl show -P ActiveEnterTimestampMonotonic cutover-switch.service; \
         sudo -n systemctl show -P ExecMainStartTimestampMonotonic nginx.service",
    );
    let t: Vec<u64> = times
        .split_whitespace()
        .map(|w| w.parse().unwrap_or_else(|_| panic!("{times}")))
        .collect();
    assert!(
        t.len() == 2 && t[0] > 0 && t[0] <= t[1],
        "cutover-switch.service should be active before nginx starts (monotonic µs: {t:?})"
    );
    let status = web.cutover_ok(&["status", "--json"]);
    let doc = status.json();
    assert_eq!(doc["nginx_points_at"], "blue", "{}", status.stdout());
    loud(&format!(
        "vm: after the reboot the rule was back {:.2}s before nginx started; status reads {} from it",
        (t[1] - t[0]) as f64 / 1e6,
        doc["nginx_points_at"]
    ));
}
