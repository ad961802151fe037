//! `vm.swappiness` in `/etc/sysctl.d/99-cutover.conf`, applied live with `sysctl -p`.
//!
//! The kernel default (60) swaps eagerly; on a 1 GiB box that pushes a running JVM's heap
//! to disk while the other color starts. A low value (10 by default, `host.swappiness`)
//! keeps swap as the overflow it is meant to be. The file makes it survive reboots; the
//! live apply makes it true now. The user-data writes the same file and runs the same
//! `sysctl -p`.

use std::path::Path;

use anyhow::Context as _;

use super::cloud_init::{Instance, Part, View};
use super::{sbin, Options, StepDef, StepRun};
use crate::process::Cmd;

/// Step "swappiness".
pub const STEP: StepDef = StepDef {
    name: "swappiness",
    run: |opts, s, _| step(opts, s),
    cloud_init: Part::Writes(cloud_init),
};

pub const PATH: &str = "/etc/sysctl.d/99-cutover.conf";

/// The file's contents for `swappiness`.
pub fn contents(swappiness: u8) -> String {
    format!(
        "# Written by `cutover bootstrap` (host.swappiness in cutover.yml): use swap only\n\
         # under memory pressure, e.g. while two app colors overlap during a deploy.\n\
         vm.swappiness = {swappiness}\n"
    )
}

/// The `sysctl -p` command that applies the file.
pub fn apply_command() -> Cmd {
    Cmd::new(sbin("sysctl"), format!("apply {PATH}")).args(["-p", PATH])
}

fn cloud_init(instance: &Instance<'_>, view: &mut View) {
    view.file(PATH, "0644", contents(instance.opts.swappiness.0));
    view.run(&["sysctl", "-p", PATH]);
}

pub fn step(opts: &Options, step: &mut StepRun<'_>) -> anyhow::Result<()> {
    let value = opts.swappiness.0;
    step.summary(format!("vm.swappiness = {value}"));
    let changed = step.write_file(Path::new(PATH), contents(value).as_bytes(), 0o644)?;
    if !step.target.on_live_system() {
        step.live_command(&apply_command())?;
        return Ok(());
    }
    let live_value = std::fs::read_to_string("/proc/sys/vm/swappiness")
        .context("could not read /proc/sys/vm/swappiness")?;
    if changed || live_value.trim() != value.to_string() {
        step.live_command(&apply_command())?;
    }
    Ok(())
}
