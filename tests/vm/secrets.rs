//! Phase 4: `app.secrets_delivery: files` on the box. The walk's project gets a second secret
//! (encrypted to this machine's key and the box's own identity), is deployed in files mode, then Docker
//! is restarted and the box rebooted: each time the app answers with a hash of the secret it
//! read from `/run/secrets`, and no file under /var/lib/docker, /etc, /root, /home, /var/log
//! or /tmp, nor the journal, holds the value.

use std::time::Duration;

use crate::common::loud;
use crate::machine::Vm;
use crate::project::BoxProject;
use crate::walk::fnv1a;

/// Files and journal lines on the box holding `marker`. The pattern on the command line is
/// `MARK[E]R…`, a regex that matches the marker without containing it: sudo logs its command
/// line to the journal and /var/log, and the search must not plant what it looks for.
fn plaintext_copies(vm: &Vm, marker: &str) -> String {
    let pattern = format!("{}[{}]{}", &marker[..4], &marker[4..5], &marker[5..]);
    let script = format!(
        "sudo -n grep -rlE --devices=skip -e '{pattern}' /var/lib/docker /etc /root /home /var/log /tmp 2>/dev/null; \
         sudo -n journalctl --no-pager -o cat | grep -cE -e '{pattern}' | sed 's/^/journal lines: /'"
    );
    let out = vm.ssh(&script);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_no_copies(vm: &Vm, marker: &str, when: &str) {
    let started = std::time::Instant::now();
    let found = plaintext_copies(vm, marker);
    loud(&format!(
        "vm: plaintext search {when} took {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    if found.trim() != "journal lines: 0" {
        crate::soft_failure(format!("plaintext copies of the secret {when}:\n{found}"));
    }
}

pub fn files_mode_survives_docker_restart_and_reboot(vm: &Vm, web: &BoxProject) {
    let marker = format!(
        "MARKvmfiles{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    // The walk made this machine's key and the box's the project's recipients (keygen --add,
    // then the command bootstrap printed): a new file is encrypted to both.
    let plain = web.path().join("app.env");
    std::fs::write(&plain, format!("APP_SECRET={marker}\n")).unwrap();
    web.local_ok(&["secrets", "encrypt", "--rm", "app.env"]);
    // `encrypt` listed the file beside the walk's in the scaffold's inline app.secrets.
    let config = std::fs::read_to_string(web.config_path()).unwrap();
    assert!(
        config.contains("secrets/app.env.age"),
        "encrypt did not list the file:\n{config}"
    );
    let config = config.replace("secrets_delivery: env ", "secrets_delivery: files ");
    assert!(config.contains("secrets_delivery: files"), "{config}");
    std::fs::write(web.config_path(), config).unwrap();

    let run = web.cutover_ok(&["deploy", "--image", "cutover-vmsuite:v2", "--json"]);
    assert!(!run.stdout().contains(&marker) && !run.stderr().contains(&marker));
    let want = fnv1a(marker.as_bytes());
    let answers = || vm.http_get("/secret-hash?key=APP_SECRET").ok() == Some(want.clone());
    assert!(
        answers(),
        "the app read its secret: {:?}",
        vm.http_get("/secret-hash?key=APP_SECRET")
    );
    assert_no_copies(vm, &marker, "after a files-mode deploy");

    vm.ssh_ok("sudo -n systemctl restart docker");
    vm.wait_for(
        "the app to answer with its secret after a docker restart",
        Duration::from_secs(120),
        answers,
    );
    assert_no_copies(vm, &marker, "after a docker restart");

    let rebooted = std::time::Instant::now();
    vm.reboot();
    vm.wait_for(
        "the app to answer with its secret after a reboot",
        Duration::from_secs(180),
        answers,
    );
    loud(&format!(
        "vm: after a reboot the files-mode app answered with its secret in {:.1}s",
        rebooted.elapsed().as_secs_f64()
    ));
    let unit = vm.ssh_ok("sudo -n journalctl --no-pager -o cat -b -u cutover-secrets");
    assert!(
        unit.contains(&format!("{}: wrote app-", web.name)),
        "the boot unit's lines:\n{unit}"
    );
    assert_no_copies(vm, &marker, "after a reboot");
}
