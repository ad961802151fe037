//! The kernel half of the nft switch (`nginx.switch: nft`): one nftables table per project
//! that DNATs the project's two stable loopback ports (`nginx.switch_ports`) to its colors'
//! ports, so a switch changes where nginx's NEW upstream connections land without a reload.
//!
//! Why a table per project (`ip cutover_<project>`), not one shared table with a chain each:
//! a switch replaces the whole table in one `nft -f` transaction (`add table`, `delete
//! table`, the new table: atomic, all or nothing), and that replacement, or a project's
//! removal, can never touch another project's rules: there is nothing shared to flush.
//!
//! Why priority `-101` (one before `dstnat`, -100, where Docker's iptables-nft and
//! iptables-legacy `nat OUTPUT` chains sit): the kernel applies the FIRST destination NAT a
//! connection meets on a hook and skips later NAT chains for it. Ours runs first and only
//! matches our stable ports, which no Docker rule names, so Docker's rules still see (and
//! leave alone: `! -d 127.0.0.0/8`) every other connection. With Docker's
//! `userland-proxy: false` nothing listens on 127.0.0.1:<color port> (Docker's own DNAT does
//! that job, and it is skipped for a connection we already mapped): the switch would reach
//! nothing, so the nft mode is refused on such a box (`host::listening`).
//!
//! Established connections keep their conntrack mapping: only new connections follow a
//! changed rule, which is what lets the old color drain.
//!
//! Read back as JSON (`nft -j list table`), never human output; JSON that does not parse is
//! an error naming the command (fail closed). Every ruleset applied is also saved, atomic and
//! 0600, as `<project>.nft` in one box-wide directory ([`saved_dir`]: `/var/lib/cutover/switch`)
//! so the boot unit (`bootstrap/boot_switch.rs`) restores them all with `nft -f` before nginx
//! serves, with no cutover binary and no project dir needed at boot.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::process::Cmd;

/// Where every project's last applied ruleset is saved, for the boot restore.
pub const SAVED_DIR: &str = "/var/lib/cutover/switch";

/// Overrides [`SAVED_DIR`] (tests, a box bootstrapped under `--root`).
pub const SAVED_DIR_ENV: &str = "CUTOVER_SWITCH_DIR";

/// [`SAVED_DIR_ENV`] when set, else [`SAVED_DIR`].
pub fn saved_dir() -> PathBuf {
    std::env::var_os(SAVED_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| SAVED_DIR.into(), PathBuf::from)
}

/// The saved ruleset of `project` in `dir`.
pub fn saved(dir: &Path, project: &str) -> PathBuf {
    dir.join(format!("{project}.nft"))
}

/// How long one `nft` run may take: it is a netlink transaction, milliseconds.
const NFT_TIMEOUT: Duration = Duration::from_secs(10);

/// Every `nft` run: `LC_ALL=C`, since the one error text read (the kernel's ENOENT, "No
/// such file or directory") comes through strerror and a locale would translate it.
fn nft(program: impl AsRef<std::ffi::OsStr>, summary: impl Into<String>) -> Cmd {
    Cmd::new(program, summary)
        .plain_env("LC_ALL", "C")
        .timeout(NFT_TIMEOUT)
}

/// A project's mapping: where each stable port leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    /// nginx's primary server: DNAT to the active color.
    pub primary: u16,
    pub primary_to: u16,
    /// nginx's `backup` server: the previous color during the watch window, else the active
    /// one again.
    pub backup: u16,
    pub backup_to: u16,
}

/// The table name of a project: project names are `[a-z0-9_-]`, all nft identifier
/// characters (nft refuses quoted table names), behind a letter.
pub fn table(project: &str) -> String {
    format!("cutover_{project}")
}

/// The ruleset that replaces `project`'s table atomically with `mapping` (the text `nft -f`
/// reads, and what is saved for the boot restore).
pub fn ruleset(project: &str, mapping: &Mapping) -> String {
    let t = table(project);
    format!(
        "# cutover: project {project}'s nginx switch (nginx.switch: nft); written on every switch.\n\
         add table ip {t}\n\
         delete table ip {t}\n\
         table ip {t} {{\n\
         \tchain output {{\n\
         \t\ttype nat hook output priority -101; policy accept;\n\
         \t\tip daddr 127.0.0.1 tcp dport {} dnat to 127.0.0.1:{}\n\
         \t\tip daddr 127.0.0.1 tcp dport {} dnat to 127.0.0.1:{}\n\
         \t}}\n\
         }}\n",
        mapping.primary, mapping.primary_to, mapping.backup, mapping.backup_to
    )
}

/// The rules that lead `mapping`'s ports first: inserted at the head of the project's chain,
/// where the first rule that matches a connection is the one that maps it. An add-only
/// transaction: the kernel commits it in ~2 ms, where one that deletes a rule or a table (the
/// [`ruleset`] replacement) waits 8–20 ms for the readers of the old rules to be done
/// (measured on Linux 6.18). Fails when the table or its chain is missing.
pub fn lead(project: &str, mapping: &Mapping) -> String {
    let t = table(project);
    // Each goes to the head: the backup's first, so the primary's ends up in front of it.
    format!(
        "insert rule ip {t} output ip daddr 127.0.0.1 tcp dport {} dnat to 127.0.0.1:{}; \
         insert rule ip {t} output ip daddr 127.0.0.1 tcp dport {} dnat to 127.0.0.1:{}",
        mapping.backup, mapping.backup_to, mapping.primary, mapping.primary_to
    )
}

/// Runs [`lead`]'s rules for `mapping` (one transaction): fed to `primed` when there is one
/// ([`prime_lead`]), else in one argument of a new `nft` (not on stdin: a pipe and its writer
/// thread cost more than the kernel's 2 ms).
pub fn run_lead(project: &str, mapping: &Mapping, primed: Option<Primed>) -> anyhow::Result<()> {
    let rules = lead(project, mapping);
    match primed {
        Some(primed) => primed.feed(&format!("{rules}\n")).map(drop),
        None => nft(
            "nft",
            format!("lead project {project}'s switch ports first"),
        )
        .arg(rules)
        .run()
        .map(drop),
    }?;
    Ok(())
}

/// An `nft -f -` started ahead of a lead (when the health gate starts, and when the watch
/// window starts), waiting for its rules on stdin: at the pass (the window's end),
/// [`run_lead`] then costs the kernel's transaction, not an `nft` start as well. None when it
/// cannot start (no `nft`): the lead starts its own. Dropped unfed, it reads an empty ruleset
/// and changes nothing.
pub struct Primed(Box<crate::process::Primed>);

impl Primed {
    /// Rules are no secret: the trace line shows them, as it shows an `nft` given them as
    /// its argument.
    fn feed(self, rules: &str) -> Result<crate::process::Output, crate::process::ProcessError> {
        (*self.0).feed_plain(rules)
    }
}

/// Starts a [`Primed`] lead for `project`.
pub fn prime_lead(project: &str) -> Option<Primed> {
    nft(
        "nft",
        format!("lead project {project}'s switch ports first"),
    )
    .args(["-f", "-"])
    .prime()
    .ok()
    .map(|primed| Primed(Box::new(primed)))
}

/// The ruleset that deletes `project`'s table (and nothing else), whether or not it exists.
pub fn removal(project: &str) -> String {
    let t = table(project);
    format!("add table ip {t}\ndelete table ip {t}\n")
}

/// Why the nft switch cannot be used here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("`nft` is not on PATH (install nftables)")]
    NoNft,
    #[error("`nft` cannot change rules here (no CAP_NET_ADMIN?): {0}")]
    NoPermission(String),
    /// Any other failure of the listing (nf_tables missing, a broken nft): its own words.
    #[error("{0}")]
    Failed(String),
}

impl Unavailable {
    /// A failed check as what it is: EPERM is the missing capability, anything else is said
    /// as the command's own failure.
    fn of(what: String) -> Unavailable {
        if what.contains("Operation not permitted") {
            Unavailable::NoPermission(what)
        } else {
            Unavailable::Failed(what)
        }
    }
}

/// Whether this process can change nftables rules: `nft` on PATH and a check-only run of a
/// harmless transaction (`nft -c`: parsed and validated by the kernel, never committed),
/// which needs the same capability a real change does.
pub fn available() -> Result<(), Unavailable> {
    let program = crate::process::which("nft").ok_or(Unavailable::NoNft)?;
    let cmd = nft(program, "check that nftables rules can be changed")
        .args(["-c", "-f", "-"])
        .stdin_bytes(removal("probe").into_bytes());
    match cmd.run() {
        Ok(_) => Ok(()),
        Err(e) => Err(Unavailable::of(format!("`{}`: {e}", cmd.display()))),
    }
}

/// Applies `text` as one transaction (`nft -f -`).
pub fn apply(text: &str, what: &str) -> anyhow::Result<()> {
    nft("nft", what)
        .args(["-f", "-"])
        .stdin_bytes(text.as_bytes().to_vec())
        .run()?;
    Ok(())
}

/// Replaces `project`'s table with `mapping`, proves it, then saves the ruleset for the boot
/// restore. The kernel first: a saved file never names a mapping that was not applied.
///
/// One `nft -e -j -f <file>` ([`switch_with`] [`Lead::First`]: after [`lead`]'s rules, so that new
/// connections take the new mapping before this replacement commits, and the replacement
/// leaves the table without the rules they led past): the ruleset goes to the save's temp
/// file (0600, beside the saved one, a name the boot unit's `*.nft` skips), nft applies it
/// from there and echoes what the kernel committed as JSON: when it holds exactly `mapping`
/// and nothing of another table, that is the proof a listing would give, in the same process
/// ([`echo_proves`]);
/// else (an nft that echoes nothing, only the last object, or something that does not parse)
/// the table is listed and judged from that. Then the temp file is renamed into place. A
/// file, not a pipe: with `-j`, nft 1.0.6 reads a piped ruleset as JSON first and, that
/// failing, applies nothing and exits 0.
pub fn switch(project: &str, mapping: &Mapping, dir: &Path) -> anyhow::Result<()> {
    switch_with(project, mapping, dir, Lead::No)
}

/// Whether a switch leads first ([`lead`]'s rules, then the replacement).
pub enum Lead {
    /// The replacement alone: a rule not known before (nothing to lead past), the root path
    /// through sudo, an undo, a rule left open closed before the deploy starts.
    No,
    /// Lead first, with the `nft` primed ahead if there is one, else a new one: a change of a
    /// known rule on a deploy's path, where the kernel's routing is what counts (the health
    /// pass → first response; the window's end → the drain).
    First(Option<Primed>),
}

/// [`switch`], leading first as `lead` says. A failure before any change of the kernel's (the
/// save path, the temp file) is an [`Unapplied`].
pub fn switch_with(project: &str, mapping: &Mapping, dir: &Path, lead: Lead) -> anyhow::Result<()> {
    // Where it will be saved, and its temp file written, before the kernel changes: a rule
    // applied but not saved would be undone by the next boot's restore.
    let prepared = prepare(project, mapping, dir)?;
    if let Lead::First(primed) = lead {
        // New connections go to the new mapping from here on, before the replacement below
        // commits, ~10 ms later. Where it fails (no table or chain) the replacement alone
        // does it; where it took and the replacement fails, the caller puts the previous
        // mapping back (by a replacement, else by leading with it in turn).
        let _ = run_lead(project, mapping, primed);
    }
    prepared.apply()
}

/// A table replacement whose ruleset is written to its temp file (0600, beside the saved
/// one), its save path checked: all a full or read-only disk can fail, done before any
/// change of the kernel's. [`Prepared::apply`] replaces the table, proves it and saves it.
pub struct Prepared {
    project: String,
    mapping: Mapping,
    dir: PathBuf,
    saved: PathBuf,
    tmp: tempfile::NamedTempFile,
}

/// A switch that failed before it changed anything in the kernel (its ruleset could not be
/// written where it is saved from): there is nothing to put back (callers branch on it).
#[derive(Debug)]
pub struct Unapplied(pub anyhow::Error);

impl std::fmt::Display for Unapplied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Unapplied {}

/// Prepares [`switch`] of `project` to `mapping`, to be saved in `dir`; its failure is an
/// [`Unapplied`].
pub fn prepare(project: &str, mapping: &Mapping, dir: &Path) -> anyhow::Result<Prepared> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let text = ruleset(project, mapping);
    let written = || -> anyhow::Result<(PathBuf, tempfile::NamedTempFile)> {
        let saved = save_path(dir, project)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".cutover-tmp")
            .tempfile_in(dir)
            .with_context(|| format!("create a temp file in {}", dir.display()))?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .and_then(|()| tmp.write_all(text.as_bytes()))
            .with_context(|| {
                format!(
                    "write the nft switch ruleset to a temp file in {}",
                    dir.display()
                )
            })?;
        Ok((saved, tmp))
    };
    let (saved, tmp) = written().map_err(|e| anyhow::Error::new(Unapplied(e)))?;
    Ok(Prepared {
        project: project.to_string(),
        mapping: *mapping,
        dir: dir.to_path_buf(),
        saved,
        tmp,
    })
}

impl Prepared {
    /// Applies the prepared ruleset, proves it, and saves it ([`switch`] says how).
    pub fn apply(self) -> anyhow::Result<()> {
        let Prepared {
            project,
            mapping,
            dir,
            saved,
            tmp,
        } = self;
        let (project, mapping, dir) = (project.as_str(), &mapping, dir.as_path());
        let t = table(project);
        let cmd = nft(
            "nft",
            format!(
                "map port {} to {} (project {project}'s nft switch)",
                mapping.primary, mapping.primary_to
            ),
        )
        .args(["-e", "-j", "-f"])
        .arg(tmp.path());
        // The temp file is gone once this returns: an error names the table and where its
        // ruleset is saved, not the temp name nft's messages use.
        let tmp_name = tmp.path().display().to_string();
        let out = cmd.run().map_err(|e| {
            anyhow::anyhow!(
                "{}",
                e.to_string()
                    .replace(&tmp_name, &format!("<the ruleset of table ip {t}>"))
            )
            .context(format!(
                "apply table ip {t} (the ruleset to be saved as {})",
                saved.display()
            ))
        })?;
        if !echo_proves(&out.stdout, &t, mapping) {
            let got = read(project, mapping.primary, mapping.backup).with_context(|| {
                format!("read back table ip {t} after applying it (its echo was no proof)")
            })?;
            if got != Some(*mapping) {
                anyhow::bail!(
                    "applied table ip {t} (to be saved as {}), but the kernel holds {got:?}, \
                     not the {mapping:?} just written",
                    saved.display()
                );
            }
        }
        // Made durable only now, before its rename: nft read it from the page cache, and an
        // fsync before the kernel's change would sit between the health pass and the switch.
        tmp.as_file()
            .sync_all()
            .map_err(anyhow::Error::from)
            .and_then(|()| tmp.persist(&saved).map_err(|e| e.error.into()))
            .with_context(|| format!("save the nft switch ruleset to {}", saved.display()))?;
        sync_dir(dir)
    }
}

/// Makes a save's rename (or a removal) durable before the caller goes on: a deploy stops the
/// old color right after the switch, and a power loss that undid the rename would have the
/// boot restore lead traffic back to that stopped color.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("sync {} (the saved nft switch rulesets)", dir.display()))
}

/// Where `project`'s ruleset is saved, after checking that the directory is one only this
/// user (or root) can write: the boot unit runs `nft -f` as root on every file there, so a
/// directory another user could write would let them plant rules. Made 0700 when missing;
/// a directory at the file's own path is refused (the save would fail after the kernel
/// changed).
pub fn save_path(dir: &Path, project: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| {
                format!("create {} for the nft switch's boot restore", dir.display())
            })?;
    }
    let meta = std::fs::metadata(dir).with_context(|| format!("stat {}", dir.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_dir() {
        anyhow::bail!(
            "{} (where the nft switch saves its rules for the boot restore) is not a directory",
            dir.display()
        );
    }
    if meta.uid() != me && meta.uid() != 0 {
        anyhow::bail!(
            "{} belongs to uid {}, not to this user (uid {me}) or root: the boot unit runs \
             `nft -f` as root on the rules saved there, so refusing to save them into it",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        anyhow::bail!(
            "{} is writable by other users (mode {:o}): the boot unit runs `nft -f` as root on \
             every file there, so anyone could plant rules; `chmod 700 {}`",
            dir.display(),
            meta.mode() & 0o7777,
            dir.display()
        );
    }
    let saved = saved(dir, project);
    match std::fs::symlink_metadata(&saved) {
        Ok(m) if m.is_dir() => anyhow::bail!(
            "{} is a directory, not the saved nft switch ruleset: remove it",
            saved.display()
        ),
        _ => Ok(saved),
    }
}

/// Deletes `project`'s table and its saved ruleset (project removal, tests' teardown).
pub fn remove(project: &str, dir: &Path) -> anyhow::Result<()> {
    apply(
        &removal(project),
        &format!("delete project {project}'s nft switch table"),
    )?;
    let saved = saved(dir, project);
    match std::fs::remove_file(&saved) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("remove {}", saved.display()))
        }
        Err(_) => Ok(()),
        Ok(()) => sync_dir(dir),
    }
}

/// Re-applies a saved ruleset (the boot unit, before nginx serves).
pub fn restore(saved: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(saved)
        .with_context(|| format!("read the saved nft switch {}", saved.display()))?;
    apply(
        &text,
        &format!("restore the nft switch saved in {}", saved.display()),
    )
}

/// Reads `project`'s mapping back from the kernel: `None` when it has no table; a table
/// that does not hold our two rules is an error (someone edited it: fail closed).
pub fn read(project: &str, primary: u16, backup: u16) -> anyhow::Result<Option<Mapping>> {
    list(project, primary, backup, "nft".into())?
}

/// [`available`] and [`read`], in one process when the table exists (a deploy's observe):
/// the listing needs the capability a change needs (nfnetlink refuses every request, a read
/// too, without CAP_NET_ADMIN), so a listing of our table says nft is usable here. A
/// listing that says "no table" proves nothing (an older nft says so when it could not read
/// at all): the [`available`] probe decides. `Err`: not usable, why; `Ok`: what [`read`]
/// returns.
pub fn read_if_available(
    project: &str,
    primary: u16,
    backup: u16,
) -> Result<anyhow::Result<Option<Mapping>>, Unavailable> {
    let program = crate::process::which("nft").ok_or(Unavailable::NoNft)?;
    match list(project, primary, backup, program) {
        Err(e) => Err(Unavailable::of(format!("{e:#}"))),
        // "No table" is also what an older nft prints when its cache could not dump the
        // ruleset at all (no CAP_NET_ADMIN, no nf_tables): confirm with the check-only probe,
        // which needs the capability a change needs. A listing of our table proves access.
        Ok(Ok(None)) => available().map(|()| Ok(None)),
        Ok(read) => Ok(read),
    }
}

/// `nft -j list table ip <project's table>`: `Err` when nft failed for another reason than
/// a missing table (or did not start), else the listing's mapping (or why it is none).
fn list(
    project: &str,
    primary: u16,
    backup: u16,
    program: PathBuf,
) -> anyhow::Result<anyhow::Result<Option<Mapping>>> {
    let t = table(project);
    let cmd = nft(program, format!("read project {project}'s nft switch"))
        .args(["-j", "list", "table", "ip", &t]);
    let out = cmd.run_unchecked()?;
    if !out.success() {
        // ENOENT from the kernel's table lookup: the only failure that means "no table"
        // (no capability is EPERM, a missing nf_tables another errno).
        if out.stderr.contains("No such file or directory") {
            return Ok(Ok(None));
        }
        return Err(
            anyhow::Error::new(cmd.failed(&out)).context(format!("`{}` failed", cmd.display()))
        );
    }
    let ports = parse(&out.stdout, &t).with_context(|| {
        format!(
            "`{}` printed JSON that is not an nftables listing",
            cmd.display()
        )
    });
    Ok(ports.and_then(|ports| mapping_of(&t, &ports, primary, backup)))
}

/// The mapping of table `t` whose rules lead `ports` (`(dport, dnat port)`) (fail closed:
/// a table without both rules is an error).
fn mapping_of(
    t: &str,
    ports: &[(u16, u16)],
    primary: u16,
    backup: u16,
) -> anyhow::Result<Option<Mapping>> {
    let to = |port: u16| ports.iter().find(|(p, _)| *p == port).map(|(_, to)| *to);
    match (to(primary), to(backup)) {
        (Some(primary_to), Some(backup_to)) => Ok(Some(Mapping {
            primary,
            primary_to,
            backup,
            backup_to,
        })),
        _ => Err(Unmapped(format!(
            "table ip {t} does not map ports {primary} and {backup} (found {ports:?}): it was \
             changed by hand; the next deploy rewrites it"
        ))
        .into()),
    }
}

/// A project's table that exists but no longer maps both switch ports (edited by hand): a
/// disagreement `status` reports and the next deploy repairs, unlike a table that cannot be
/// read at all (callers branch on it).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unmapped(pub String);

#[derive(Deserialize)]
struct Listing {
    nftables: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RuleItem {
    rule: Rule,
}

#[derive(Deserialize)]
struct Rule {
    expr: Vec<serde_json::Value>,
}

/// Whether an apply's echo (`nft -e -j`) alone proves that table `t` now holds exactly
/// `mapping`: it parses, names nothing but `ip t`, and maps both ports as asked. Anything
/// else (empty, not JSON, one object of several, another table) proves nothing either way:
/// the caller lists the table and judges from that.
fn echo_proves(stdout: &str, t: &str, mapping: &Mapping) -> bool {
    if stdout.trim().is_empty() {
        return false;
    }
    match parse(stdout, t) {
        Ok(ports) => {
            mapping_of(t, &ports, mapping.primary, mapping.backup).ok() == Some(Some(*mapping))
        }
        Err(_) => false,
    }
}

/// `(dport, dnat port)` of every rule of table `ip t` in a listing or an echo that has both
/// (other rules of `t` ignored). An object of another table or family is an error: a
/// listing of our table never holds one, and an echo that does is not ours alone.
fn parse(json: &str, t: &str) -> anyhow::Result<Vec<(u16, u16)>> {
    let listing: Listing = serde_json::from_str(json)?;
    let mut out = Vec::new();
    for item in listing.nftables {
        // An echo (`nft -e -j`) wraps each object in the command that made it.
        let item = match item.get("add") {
            Some(added) => added.clone(),
            None => item,
        };
        if let Some(obj) = item.as_object() {
            for (kind, body) in obj {
                if kind == "metainfo" {
                    continue;
                }
                let family = body.get("family").and_then(|f| f.as_str());
                let table = body
                    .get(if kind == "table" { "name" } else { "table" })
                    .and_then(|n| n.as_str());
                if family != Some("ip") || table != Some(t) {
                    anyhow::bail!("it holds a {kind} of another table than ip {t}: {body}");
                }
            }
        }
        let Ok(RuleItem { rule }) = serde_json::from_value::<RuleItem>(item) else {
            continue;
        };
        let dport = rule.expr.iter().find_map(|e| {
            let m = e.get("match")?;
            (m.pointer("/left/payload/field")?.as_str()? == "dport")
                .then(|| m.get("right")?.as_u64())?
        });
        let to = rule
            .expr
            .iter()
            .find_map(|e| e.pointer("/dnat/port")?.as_u64());
        if let (Some(dport), Some(to)) = (dport, to) {
            out.push((
                u16::try_from(dport).context("a port above 65535")?,
                u16::try_from(to).context("a port above 65535")?,
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "cutover_p1", "handle": 2}}, {"chain": {"family": "ip", "table": "cutover_p1", "name": "output", "handle": 1, "type": "nat", "hook": "output", "prio": -101, "policy": "accept"}}, {"rule": {"family": "ip", "table": "cutover_p1", "chain": "output", "handle": 2, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "127.0.0.1"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 18000}}, {"dnat": {"addr": "127.0.0.1", "port": 18081}}]}}]}"#;

    /// `nft -e -j -f FILE`'s echo of a ruleset (nft 1.0.6), cut to one rule.
    const ECHO: &str = r#"{"nftables": [{"add": {"table": {"family": "ip", "name": "cutover_p1", "handle": 1331}}}, {"add": {"chain": {"family": "ip", "table": "cutover_p1", "name": "output", "handle": 1, "type": "nat", "hook": "output", "prio": -101, "policy": "accept"}}}, {"add": {"rule": {"family": "ip", "table": "cutover_p1", "chain": "output", "handle": 2, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "127.0.0.1"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 18000}}, {"dnat": {"addr": "127.0.0.1", "port": 18081}}]}}}]}"#;

    #[test]
    fn the_saved_rules_go_only_where_no_other_user_can_write() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/switch");
        assert_eq!(save_path(&dir, "p").unwrap(), dir.join("p.nft"));
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "created {mode:o}");
        std::fs::create_dir(dir.join("q.nft")).unwrap();
        let e = save_path(&dir, "q").unwrap_err().to_string();
        assert!(e.contains("q.nft is a directory"), "{e}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = save_path(&dir, "p").unwrap_err().to_string();
        assert!(e.contains("is writable by other users (mode 777)"), "{e}");
    }

    #[test]
    fn a_listing_gives_each_rules_port_and_target() {
        assert_eq!(parse(LISTING, "cutover_p1").unwrap(), vec![(18000, 18081)]);
        assert_eq!(parse(ECHO, "cutover_p1").unwrap(), vec![(18000, 18081)]);
        assert!(parse("table ip cutover_p1 {", "cutover_p1").is_err());
        assert!(parse(r#"{"other": []}"#, "cutover_p1").is_err());
        // Another project's table, or ours in another family, is never read as ours.
        assert!(parse(LISTING, "cutover_p2").is_err());
        assert!(parse(
            &ECHO.replace(r#""family": "ip""#, r#""family": "ip6""#),
            "cutover_p1"
        )
        .is_err());
    }

    /// An echo shaped as nft 1.0.6 prints it for `ruleset("p1", MAPPING)`.
    fn full_echo(rules: &[(u16, u16)]) -> String {
        let mut items = vec![
            r#"{"add": {"table": {"family": "ip", "name": "cutover_p1", "handle": 1}}}"#.to_string(),
            r#"{"add": {"chain": {"family": "ip", "table": "cutover_p1", "name": "output", "handle": 1, "type": "nat", "hook": "output", "prio": -101, "policy": "accept"}}}"#.to_string(),
        ];
        for (i, (dport, to)) in rules.iter().enumerate() {
            items.push(format!(
                r#"{{"add": {{"rule": {{"family": "ip", "table": "cutover_p1", "chain": "output", "handle": {}, "expr": [{{"match": {{"op": "==", "left": {{"payload": {{"protocol": "ip", "field": "daddr"}}}}, "right": "127.0.0.1"}}}}, {{"match": {{"op": "==", "left": {{"payload": {{"protocol": "tcp", "field": "dport"}}}}, "right": {dport}}}}}, {{"dnat": {{"addr": "127.0.0.1", "port": {to}}}}}]}}}}}}"#,
                i + 2
            ));
        }
        format!(r#"{{"nftables": [{}]}}"#, items.join(", "))
    }

    const MAPPING: Mapping = Mapping {
        primary: 18000,
        primary_to: 18081,
        backup: 18001,
        backup_to: 18082,
    };

    #[test]
    fn only_a_whole_echo_of_our_table_with_the_asked_mapping_proves_the_switch() {
        let t = "cutover_p1";
        let whole = full_echo(&[(18000, 18081), (18001, 18082)]);
        assert!(echo_proves(&whole, t, &MAPPING));
        // Everything else is no proof: the switch lists the table and judges from that.
        // nft 0.9.7 echoes only the last object: one rule.
        assert!(!echo_proves(&full_echo(&[(18001, 18082)]), t, &MAPPING));
        assert!(!echo_proves(ECHO, t, &MAPPING));
        assert!(!echo_proves("", t, &MAPPING));
        assert!(!echo_proves(" \n", t, &MAPPING));
        assert!(!echo_proves("add table ip cutover_p1\n", t, &MAPPING));
        assert!(!echo_proves(r#"{"nftables": [{"add""#, t, &MAPPING));
        // Another project's table beside ours: the echo is not ours alone.
        let other = whole.replace(
            r#"{"add": {"table": {"family": "ip", "name": "cutover_p1", "handle": 1}}}"#,
            r#"{"add": {"table": {"family": "ip", "name": "cutover_p1", "handle": 1}}}, {"add": {"table": {"family": "ip", "name": "cutover_p2", "handle": 9}}}"#,
        );
        assert_ne!(other, whole);
        assert!(!echo_proves(&other, t, &MAPPING));
        assert!(!echo_proves(&whole, "cutover_p2", &MAPPING));
        // A whole echo of another mapping proves nothing either: the listing decides.
        let swapped = full_echo(&[(18000, 18082), (18001, 18081)]);
        assert!(!echo_proves(&swapped, t, &MAPPING));
    }

    #[test]
    fn a_listing_failure_is_called_a_missing_capability_only_when_it_is_eperm() {
        assert!(matches!(
            Unavailable::of("Error: Could not process rule: Operation not permitted".into()),
            Unavailable::NoPermission(_)
        ));
        let other = Unavailable::of(
            "`nft -j list table ip cutover_p` failed: Protocol not supported".into(),
        );
        assert!(matches!(other, Unavailable::Failed(_)));
        assert!(!other.to_string().contains("CAP_NET_ADMIN"), "{other}");
    }

    #[test]
    fn the_lead_puts_the_primary_then_the_backup_in_front_of_the_chain() {
        let m = Mapping {
            primary: 9100,
            primary_to: 9012,
            backup: 9101,
            backup_to: 9011,
        };
        assert_eq!(
            lead("p1", &m),
            "insert rule ip cutover_p1 output ip daddr 127.0.0.1 tcp dport 9101 dnat to 127.0.0.1:9011; \
             insert rule ip cutover_p1 output ip daddr 127.0.0.1 tcp dport 9100 dnat to 127.0.0.1:9012"
        );
    }

    #[test]
    fn the_ruleset_replaces_only_its_own_table_in_one_transaction() {
        let m = Mapping {
            primary: 9100,
            primary_to: 8082,
            backup: 9101,
            backup_to: 8081,
        };
        let text = ruleset("my-app", &m);
        assert!(text.starts_with("# cutover: project my-app"), "{text}");
        assert!(text.contains("add table ip cutover_my-app\ndelete table ip cutover_my-app\ntable ip cutover_my-app {"));
        assert!(text.contains("tcp dport 9100 dnat to 127.0.0.1:8082"));
        assert!(text.contains("tcp dport 9101 dnat to 127.0.0.1:8081"));
        assert!(text.contains("priority -101"));
        assert_eq!(
            removal("my-app"),
            "add table ip cutover_my-app\ndelete table ip cutover_my-app\n"
        );
    }
}
