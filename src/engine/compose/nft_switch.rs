//! `nginx.switch`: which way this deploy switches colors, and the nft way itself.
//!
//! In nft mode nginx's upstream never changes: the site's switch group names two stable
//! loopback ports and the kernel maps them (`crate::nft`). A switch, the watch window's
//! close and a switch back are each one rule rewrite, no reload: nginx's workers and their
//! keep-alive client connections stay. The include (the switch group, the `nft` marker) is
//! written, and nginx reloaded, only when the mode is first set up or the include's text
//! changes; `auto` falls back to the include + reload where nft cannot work, and says why,
//! once per deploy.

use serde::Serialize;

use crate::config::{Color, Config, SwitchMode};
use crate::nft::Mapping;

use super::Run;

/// The way this deploy switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Used {
    /// The include + `nginx -s reload`.
    Reload,
    /// The nftables rule; nginx is not reloaded.
    Nft,
}

/// The rule as the check that nft works here read it ([`read_or_unmapped`]'s answer), so
/// observe need not list it again: `None` when the check did not read it.
pub(super) type FirstRead = Option<Result<Option<Mapping>, String>>;

/// Decides the way: `Ok((used, why reload, the rule read))`, the reason only when `auto`
/// fell back; `Err` when `nginx.switch: nft` cannot work here (a refusal naming why), or
/// the rule it read cannot be read (fail closed, as observe would).
pub(super) fn decide(config: &Config) -> anyhow::Result<(Used, Option<String>, FirstRead)> {
    let mode = config.nginx.switch;
    if mode == SwitchMode::Reload {
        return Ok((Used::Reload, None, None));
    }
    let mut first = None;
    match why_not_nft(config, &mut first) {
        None => Ok((Used::Nft, None, first.map(unmapped_apart).transpose()?)),
        Some(why) if mode == SwitchMode::Auto => Ok((
            Used::Reload,
            Some(format!(
                "nginx.switch: auto: switching with the include + nginx reload, since {why}"
            )),
            None,
        )),
        Some(why) => anyhow::bail!("nginx.switch: nft cannot work on this box: {why}"),
    }
}

/// A [`read`]'s answer, when the check that nft works here made one.
type Checked = Option<anyhow::Result<Option<Mapping>>>;

/// Why nft mode cannot work here, or None; `first`: the rule, when the check read it.
fn why_not_nft(config: &Config, first: &mut Checked) -> Option<String> {
    if config.nginx.switch_ports.is_none() {
        return Some("nginx.switch_ports is not set".into());
    }
    if config.colors.upstream_host() != std::net::IpAddr::from([127, 0, 0, 1]) {
        return Some(format!(
            "the colors are published on {}, not 127.0.0.1 (the rule maps loopback only)",
            config.colors.upstream_host()
        ));
    }
    // The rule sends every connection this box makes to 127.0.0.1:<switch port> to a color:
    // a service listening there (a database, ssh) would lose its local clients to the app.
    // Asked on every deploy (one sock_diag look for both ports), not only at the set-up: a
    // service started on a switch port since the last deploy is as much at risk. The look
    // and the kernel access check are independent: they run at once.
    let ports = config.nginx.switch_ports?.map(|p| p.0);
    let (access, listeners) = beside(Some(|| crate::host::listening_on_any(&ports)), || {
        why_no_kernel_access(config, first)
    });
    if let Some(why) = access {
        return Some(why);
    }
    let listeners = match listeners {
        Some(Ok(listeners)) => listeners,
        Some(Err(panic)) => std::panic::resume_unwind(panic),
        None => unreachable!("the look at the switch ports was given"),
    };
    if let Some(why) = why_taken(&ports, listeners) {
        return Some(why);
    }
    let site = &config.nginx.site;
    match std::fs::read_to_string(site) {
        Ok(text) if crate::render::site_declares_switch(config, &text) => None,
        Ok(_) => Some(format!(
            "the site {} does not declare the upstream {} with nginx.switch_ports (run `cutover \
             bootstrap` to install the site again)",
            site.display(),
            crate::render::switch_group(config)
        )),
        Err(e) => Some(format!("the site {} cannot be read: {e}", site.display())),
    }
}

/// Why the switch `ports` cannot be taken, from what the look said of them: a listener, or no
/// answer at all (a listener cannot be ruled out: fail closed).
fn why_taken(ports: &[u16; 2], seen: anyhow::Result<crate::host::Listener>) -> Option<String> {
    use crate::host::Listener;
    match seen {
        Ok(Listener::Nobody) => None,
        Ok(Listener::On(port)) => {
            let which = if port == ports[0] {
                "primary"
            } else {
                "backup"
            };
            Some(format!(
                "something listens on port {port}, the {which} of nginx.switch_ports: the rule \
                 would send this box's own connections to 127.0.0.1:{port} to the app instead \
                 (expected two ports nothing listens on)"
            ))
        }
        Ok(listener @ Listener::OneOf(_)) => Some(format!(
            "something listens on {} of nginx.switch_ports: the rule would send this box's \
             own connections to it on 127.0.0.1 to the app instead (expected two ports \
             nothing listens on)",
            listener.which().unwrap_or_default()
        )),
        Err(e) => Some(format!(
            "whether something listens on nginx.switch_ports {} and {} cannot be told ({e:#}): \
             the rule would take this box's own connections to such a listener",
            ports[0], ports[1]
        )),
    }
}

/// Whether this process changes the rule itself (root) or through the narrow root path
/// (`crate::switch_rule`: `sudo -n` of bootstrap's root-owned helper).
fn as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Why this process cannot change the project's rule, or None. As root: `nft` and
/// CAP_NET_ADMIN, proven by listing the project's table (`crate::nft::read_if_available`),
/// whose answer goes to `first`. Otherwise one `switch-rule read` through `sudo -n` (the
/// probe: sudo's rule, the helper, the grant and `nft` in one run), and a grant that maps
/// cutover.yml's ports; its rule goes to `first` too.
fn why_no_kernel_access(config: &Config, first: &mut Checked) -> Option<String> {
    if as_root() {
        let [primary, backup] = config.nginx.switch_ports?.map(|p| p.0);
        return match crate::nft::read_if_available(config.project.as_str(), primary, backup) {
            Ok(read) => {
                *first = Some(read);
                None
            }
            Err(e) => Some(e.to_string()),
        };
    }
    let project = config.project.as_str();
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("uid {}", rustix::process::geteuid().as_raw()));
    let fix = format!(
        "run `cutover bootstrap` for this project as root (`sudo cutover bootstrap`, or \
         `cutover --host USER@BOX bootstrap`): it installs nftables, the grant of this project's \
         ports and the sudoers rule that lets {user} change this project's rule and nothing else"
    );
    match crate::switch_rule::via_sudo(project, crate::switch_rule::Action::Read) {
        Ok(reply) => {
            let wanted = crate::switch_rule::Grant::of(config);
            if wanted == Some(reply.grant) {
                *first = Some(match reply.unmapped {
                    Some(why) => Err(crate::nft::Unmapped(why).into()),
                    None => Ok(reply.mapping),
                });
                return None;
            }
            let words = |g: &crate::switch_rule::Grant| {
                format!(
                    "switch ports {} and {} (blue {}, green {})",
                    g.switch_ports[0], g.switch_ports[1], g.blue, g.green
                )
            };
            Some(format!(
                "this box's grant for project {project} maps {}, not cutover.yml's {}: {fix}",
                words(&reply.grant),
                wanted
                    .as_ref()
                    .map_or("(no nginx.switch_ports)".into(), words)
            ))
        }
        Err(e) => Some(format!(
            "this deploy runs as {user}, not root, and changes the rule through `sudo -n {} {} \
             …`, which failed ({e:#}): {fix}",
            crate::switch_rule::helper().display(),
            crate::switch_rule::SUBCOMMAND
        )),
    }
}

/// Leads the project's stable ports as `m` says: `nft` as root, else the root path with the
/// colors `m` names (its ports are the grant's, checked against cutover.yml by the probe).
fn kernel_switch(config: &Config, m: &Mapping, lead: crate::nft::Lead) -> anyhow::Result<()> {
    let project = config.project.as_str();
    if as_root() {
        return crate::nft::switch_with(project, m, &crate::nft::saved_dir(), lead);
    }
    let color = |port: u16| {
        Color::ALL
            .into_iter()
            .find(|c| config.colors.port(*c) == port)
            .ok_or_else(|| anyhow::anyhow!("port {port} is neither color's port"))
    };
    let action = crate::switch_rule::Action::Set {
        primary: color(m.primary_to)?,
        backup: color(m.backup_to)?,
    };
    let reply = crate::switch_rule::via_sudo(project, action)?;
    if reply.mapping != Some(*m) {
        anyhow::bail!(
            "the root side mapped {:?}, not the {m:?} cutover.yml gives: run `cutover \
             bootstrap` as root again so this box's grant follows cutover.yml",
            reply.mapping
        );
    }
    Ok(())
}

/// Deletes the project's table and saved ruleset, as root or through the root path.
fn kernel_remove(config: &Config) -> anyhow::Result<()> {
    let project = config.project.as_str();
    if as_root() {
        return crate::nft::remove(project, &crate::nft::saved_dir());
    }
    crate::switch_rule::via_sudo(project, crate::switch_rule::Action::Remove).map(|_| ())
}

/// The mapping that routes new connections to `to`, with `backup` behind it.
pub(super) fn mapping(config: &Config, to: Color, backup: Color) -> Option<Mapping> {
    let [primary, backup_port] = config.nginx.switch_ports?;
    Some(Mapping {
        primary: primary.0,
        primary_to: config.colors.port(to),
        backup: backup_port.0,
        backup_to: config.colors.port(backup),
    })
}

/// The color a mapping's primary port leads to (None: a port of neither color).
pub fn color_of(config: &Config, mapping: &Mapping) -> Option<Color> {
    Color::ALL
        .into_iter()
        .find(|c| config.colors.port(*c) == mapping.primary_to)
}

/// Reads the project's rule back (None: no switch ports, or no table).
pub fn read(config: &Config) -> anyhow::Result<Option<Mapping>> {
    let Some([primary, backup]) = config.nginx.switch_ports else {
        return Ok(None);
    };
    if !as_root() {
        return read_via_sudo(config, [primary.0, backup.0]);
    }
    crate::nft::read(config.project.as_str(), primary.0, backup.0).map_err(|e| {
        if crate::process::which("nft").is_some() {
            return e;
        }
        // nft gone after an nft deploy: the rule still routes, and only it knows which color
        // serves; guessing from the record could stop the serving color.
        e.context(format!(
            "nginx.switch_ports: which color serves is the kernel's rule (table ip {}), and \
             without `nft` it cannot be read; cutover does not guess it from its record: \
             install nftables again to deploy (then `nginx.switch: reload` moves the site back \
             to the include + reload for good)",
            crate::nft::table(config.project.as_str())
        ))
    })
}

/// [`read`] for a deploy user who is not root: the root side reads the kernel's rule.
fn read_via_sudo(config: &Config, ports: [u16; 2]) -> anyhow::Result<Option<Mapping>> {
    let project = config.project.as_str();
    let reply = crate::switch_rule::via_sudo(project, crate::switch_rule::Action::Read)?;
    if reply.grant.switch_ports != ports {
        anyhow::bail!(
            "this box's grant for project {project} names the switch ports {:?}, not \
             cutover.yml's {ports:?}: run `cutover bootstrap` as root again",
            reply.grant.switch_ports
        );
    }
    match reply.unmapped {
        Some(why) => Err(crate::nft::Unmapped(why).into()),
        None => Ok(reply.mapping),
    }
}

/// [`read`], with a table changed by hand so that it no longer maps both ports given as
/// `Err(that, in words)`: a disagreement to report and repair, not a reason to stop.
pub fn read_or_unmapped(config: &Config) -> anyhow::Result<Result<Option<Mapping>, String>> {
    unmapped_apart(read(config))
}

/// A [`read`]'s answer with a table changed by hand taken apart from a failed read.
fn unmapped_apart(
    read: anyhow::Result<Option<Mapping>>,
) -> anyhow::Result<Result<Option<Mapping>, String>> {
    match read {
        Ok(m) => Ok(Ok(m)),
        Err(e) => match e.downcast_ref::<crate::nft::Unmapped>() {
            Some(unmapped) => Ok(Err(unmapped.to_string())),
            None => Err(e),
        },
    }
}

/// Whether the look said something listens on a color's port: only a sure "nobody" is a no (a
/// look that failed, or never answered, is left to the probe, which proves the route).
pub(super) fn listens(seen: Option<anyhow::Result<bool>>) -> bool {
    !matches!(seen, Some(Ok(false)))
}

/// Runs `work` with `look` on a thread beside it: both answers, the look's an `Err` when it
/// panicked (the panic, for the caller to resume or to take as no answer). The look is
/// waited for whatever `work` returns (a gate that failed or was interrupted): none of its
/// subprocesses outlives the step, and `-v` traces them before the step's outcome is told,
/// not after or never.
pub(super) fn beside<T, U: Send>(
    look: Option<impl FnOnce() -> U + Send>,
    work: impl FnOnce() -> T,
) -> (T, Option<std::thread::Result<U>>) {
    std::thread::scope(|scope| {
        let look = look.map(|look| scope.spawn(look));
        let done = work();
        (done, look.map(|look| look.join()))
    })
}

/// What undoes one nft switch: the rule before it (None: no table), and the include write of
/// a set-up (None: the include was already the nft one).
pub(super) struct Undo {
    previous: Option<Mapping>,
    include: Option<crate::nginx::Switch>,
}

impl Run<'_, '_> {
    /// nft mode, as root, with the rule leading elsewhere (or not known): starts the `nft`
    /// the next route to `to` (`backup` behind it) will lead with, so the moment it is
    /// wanted (the gate's pass, the watch window's end) is followed by the kernel's
    /// transaction, not an `nft` start as well (`crate::nft::prime_lead`).
    pub(super) fn prime_lead(&self, to: Color, backup: Color) {
        let config = &self.d.loaded.config;
        if self.switch_used != Used::Nft || !as_root() {
            return;
        }
        if self
            .rule
            .get()
            .is_some_and(|m| m == mapping(config, to, backup))
        {
            return;
        }
        self.primed
            .set(crate::nft::prime_lead(config.project.as_str()));
    }

    /// Routes new connections to `to` (`backup` behind it): the rule, then, when the include
    /// on disk is not the nft one yet, the include + reload (the mode's set-up). Returns the
    /// include's text for the probe, the nginx workers from just before a reload (`None`:
    /// nginx was not reloaded), and the undo. `beside`: a wait follows whose end waits for
    /// the table's replacement (`Run::replaced`), so a lead's replacement may run beside it
    /// (`rule_replacement.rs`).
    pub(super) fn nft_route(
        &self,
        to: Color,
        backup: Color,
        beside: bool,
    ) -> anyhow::Result<(String, Option<Vec<u32>>, Undo)> {
        let config = &self.d.loaded.config;
        let wanted = mapping(config, to, backup)
            .ok_or_else(|| anyhow::anyhow!("nginx.switch: nft needs nginx.switch_ports"))?;
        // The rule as this run last read or wrote it (under the deploy lock nothing else of
        // cutover's writes it), else read now. A table edited by hand before observe has no
        // rule worth putting back: undoing deletes it. One changed or flushed by hand since
        // (the kernel is not locked) gets observe's rule back: the color still serving.
        // A replacement still running beside is waited for first; one that failed is
        // superseded by this one (and leaves the rule not known: read again below).
        let _superseded = self.replaced();
        let previous = match self.rule.get() {
            Some(known) => known,
            None => read_or_unmapped(config)?.unwrap_or(None),
        };
        self.rule.set(None);
        // Any change of a known rule is led first (`crate::nft::lead`): the primary port
        // moving to another color (a deploy's switch, a switch back) is the time to the new
        // color's first connection, and the window's close is the end of its step.
        // (Only as root: the root path through sudo replaces the table alone.)
        // An `nft` primed for it (`Run::prime_lead`) is taken either way: one not used
        // reads an empty ruleset and ends.
        let primed = self.primed.take();
        let leading = as_root() && previous.is_some_and(|p| p != wanted);
        let switched = match (leading, beside) {
            (true, true) => self.lead_then_replace_beside(&wanted, primed),
            (true, false) => kernel_switch(config, &wanted, crate::nft::Lead::First(primed)),
            (false, _) => kernel_switch(config, &wanted, crate::nft::Lead::No),
        };
        if let Err(e) = switched {
            // Nothing reached the kernel (the ruleset could not even be written): nothing to
            // put back, and leading with the previous rules would only add a copy of them.
            if e.downcast_ref::<crate::nft::Unapplied>().is_some() {
                return Err(e);
            }
            // The kernel may have taken the rule before the save failed: put it back, or the
            // color this deploy is about to stop would keep the traffic.
            let back = self.nft_undo(Undo {
                previous,
                include: None,
            });
            return Err(match (back, previous) {
                (Ok(()), _) => e,
                // The lead's rules route to `wanted` until a replacement deletes them, and
                // neither replacement took: the previous rules go in front of them the same
                // add-only way, so the color the caller's abort removes keeps no traffic.
                (Err(again), Some(p)) if leading => {
                    match crate::nft::run_lead(config.project.as_str(), &p, None) {
                        Ok(()) => e.context(format!(
                            "putting the table back failed too ({again:#}): the previous rules \
                             were inserted in front of the new ones instead (port {} leads to \
                             port {} again; the next deploy rewrites the table)",
                            p.primary, p.primary_to
                        )),
                        Err(third) => e.context(format!(
                            "putting the rule back failed too: {again:#}; and leading with the \
                             previous rules: {third:#}"
                        )),
                    }
                }
                (Err(again), _) => {
                    e.context(format!("putting the rule back failed too: {again:#}"))
                }
            });
        }
        self.rule.set(Some(Some(wanted)));
        let mut undo = Undo {
            previous,
            include: None,
        };
        // Every failure from here on puts the rule back: the caller's abort removes the new
        // color, and a rule left leading to it would send the site to a stopped container.
        match self.nft_route_finish(&wanted, &mut undo) {
            Ok((text, workers)) => Ok((text, workers, undo)),
            Err(e) => {
                let back = self.nft_undo(undo);
                Err(match back {
                    Ok(()) => e,
                    Err(again) => e.context(format!("putting the rule back failed too: {again:#}")),
                })
            }
        }
    }

    /// [`Self::nft_route`] once the kernel has `wanted`: the include (and a set-up reload,
    /// recorded in `undo`) when it is not the nft one yet, then the rule read back.
    fn nft_route_finish(
        &self,
        wanted: &Mapping,
        undo: &mut Undo,
    ) -> anyhow::Result<(String, Option<Vec<u32>>)> {
        let config = &self.d.loaded.config;
        let maintenance = crate::maintenance::load(&self.d.loaded.state_dir())?;
        let text = self.d.renderer.include_nft(config, maintenance.as_ref())?;
        let mut workers = None;
        if self.nginx.current_include()?.as_deref() != Some(text.as_str()) {
            // Only a reload leaves old workers that may still route by the include: taken
            // just before it, and only then.
            workers = Some(self.nginx.worker_pids());
            undo.include = Some(self.nginx.switch(&text)?);
        }
        // The kernel has it: proven, so a rule that did not take is never proven by a probe
        // that a backup answered. As root `crate::nft::switch` proved it already (the echo of
        // its `nft -e -j -f`), or, with the replacement beside (`rule_replacement.rs`), will
        // have by the time anything depends on it: until then the lead's committed
        // transaction and the probe stand for it. Through sudo it is read back, since the
        // root side may be an older helper whose reply only repeats the mapping asked for.
        if as_root() {
            return Ok((text, workers));
        }
        match read(config)? {
            Some(m) if m == *wanted => {}
            other => anyhow::bail!(
                "the nft rule read back is {other:?}, not the {wanted:?} just written"
            ),
        }
        Ok((text, workers))
    }

    /// A deploy killed inside its watch window left the rule's backup port on the old color:
    /// led back to the active one before this deploy starts a color there that has not
    /// passed its gate (invariant 15, as `reconcile` does for the include's groups).
    pub(super) fn close_a_rule_left_open(&mut self, dry_run: bool) -> anyhow::Result<()> {
        let config = &self.d.loaded.config;
        // The rule as `decide` read it under this deploy's lock, moments ago, else read now.
        let read = match self.first_read.take() {
            Some(read) => read,
            None => read_or_unmapped(config)?,
        };
        // What the switch puts back if it fails: known from here on (None: read it again).
        self.rule.set(read.as_ref().ok().copied());
        let Ok(Some(m)) = read else {
            return Ok(());
        };
        let Some(active) = color_of(config, &m) else {
            return Ok(());
        };
        if m.backup_to == m.primary_to {
            return Ok(());
        }
        if dry_run {
            self.clock.note(format!(
                "the nft rule still has port {} as nginx's backup for {active} (a deploy stopped \
                 in its watch window): a deploy would lead it to {active} first",
                m.backup_to
            ));
            return Ok(());
        }
        let closed = Mapping {
            backup_to: m.primary_to,
            ..m
        };
        self.rule.set(None);
        kernel_switch(config, &closed, crate::nft::Lead::No)?;
        self.rule.set(Some(Some(closed)));
        self.clock.note(format!(
            "a deploy stopped in its watch window left port {} as nginx's backup for {active}: \
             the nft rule leads both ports to {active} now",
            m.backup_to
        ));
        Ok(())
    }

    /// After a switch in reload mode: a table an earlier nft mode left (its saved ruleset
    /// says so) is deleted, so no stale rule stays in the box's netns.
    pub(super) fn remove_a_table_left_behind(&self) -> Option<String> {
        let project = self.d.loaded.config.project.as_str();
        let dir = crate::nft::saved_dir();
        if !crate::nft::saved(&dir, project).exists() {
            return None;
        }
        match crate::nft::remove(project, &dir) {
            Ok(()) => Some(format!(
                "removed table ip {} (nginx.switch is no longer nft)",
                crate::nft::table(project)
            )),
            Err(e) => Some(format!(
                "could not remove table ip {} left by nginx.switch: nft: {e:#}",
                crate::nft::table(project)
            )),
        }
    }

    /// Whether the rule can reach `to`: something listens on 127.0.0.1:<its port> (Docker's
    /// userland proxy; with `userland-proxy: false` nothing does, and Docker's own DNAT, which
    /// would carry it, is skipped for a connection the rule mapped). `Ok`: switch by nft.
    /// `window`: a watch window follows. `Err(Ok(include))`: `auto` falls back here, noting why (this deploy switches by
    /// reload from now on: the include for it); `Err(Err)`: `nft` refuses, before any change.
    /// Asked after the health gate unless [`Self::nft_listens`] already said yes before it.
    pub(super) fn nft_reaches(
        &mut self,
        to: Color,
        window: bool,
    ) -> Result<(), anyhow::Result<String>> {
        if self.nft_listens(to) {
            return Ok(());
        }
        let config = &self.d.loaded.config;
        let port = config.colors.port(to);
        let why = format!(
            "nothing listens on 127.0.0.1:{port}, {to}'s port (Docker's userland-proxy: false?), \
             so the nft rule cannot reach it"
        );
        if config.nginx.switch == SwitchMode::Nft {
            let idle = config.service(to);
            return Err(Err(self.abort_before_switch(
                &idle,
                &format!("nginx.switch: nft cannot work on this box: {why}"),
                crate::engine::Abort::SwitchFailed,
            )));
        }
        self.clock.note(format!(
            "nginx.switch: auto: switching with the include + nginx reload, since {why}"
        ));
        self.switch_used = Used::Reload;
        let route = if window {
            crate::engine::site_route(config)
        } else {
            crate::render::Route::Direct
        };
        Err(self.include_text(to, route))
    }

    /// Whether something listens on `to`'s port. A listener count that cannot be read is
    /// no reason to refuse: the probe proves the route either way.
    pub(super) fn nft_listens(&self, to: Color) -> bool {
        let port = self.d.loaded.config.colors.port(to);
        listens(Some(crate::host::listening(port)))
    }

    /// Puts the rule (and the include, if this switch set it up) back.
    pub(super) fn nft_undo(&self, undo: Undo) -> anyhow::Result<()> {
        let config = &self.d.loaded.config;
        // After a replacement begun beside, never before it ends: this one must be the last.
        let _superseded = self.replaced();
        self.rule.set(None);
        match undo.previous {
            Some(m) => kernel_switch(config, &m, crate::nft::Lead::No)?,
            None => kernel_remove(config)?,
        }
        self.rule.set(Some(undo.previous));
        if let Some(sw) = undo.include {
            sw.restore(&self.nginx)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The listener look beside a health gate that fails at once: it has ended when the step
    /// returns. It waits for word that the step returned (a detached look gets it and says so);
    /// the 2 s bound only keeps a look that is waited for from waiting forever.
    #[test]
    fn the_look_beside_a_failing_gate_ends_before_the_step_does() {
        let (returned, heard) = std::sync::mpsc::channel::<()>();
        let (told, answer) = std::sync::mpsc::channel::<bool>();
        let look = move || {
            let outlived = heard
                .recv_timeout(std::time::Duration::from_secs(2))
                .is_ok();
            told.send(outlived).unwrap();
            anyhow::Ok(true)
        };
        let (gate, seen) = beside(Some(look), || -> anyhow::Result<()> {
            anyhow::bail!("the gate failed")
        });
        let _ = returned.send(());
        assert!(gate.is_err());
        assert!(
            !answer.recv().unwrap(),
            "the look was still running when the step returned"
        );
        assert!(matches!(seen, Some(Ok(Ok(true)))));
        // A look that panicked is no answer: left to the probe.
        let (_, seen) = beside(Some(|| -> anyhow::Result<bool> { panic!("ss") }), || ());
        assert!(listens(seen.unwrap().ok()));
        let (done, seen) = beside(None::<fn() -> ()>, || 7);
        assert_eq!((done, seen.is_none()), (7, true));
    }

    #[test]
    fn a_switch_port_ss_cannot_answer_for_is_a_reason_not_to_take_it() {
        use crate::host::Listener;
        let ports = [9100, 9101];
        assert_eq!(why_taken(&ports, Ok(Listener::Nobody)), None);
        let on = why_taken(&ports, Ok(Listener::On(9101))).unwrap();
        assert!(
            on.contains("port 9101, the backup of nginx.switch_ports"),
            "{on}"
        );
        let one_of = why_taken(&ports, Ok(Listener::OneOf(ports.to_vec()))).unwrap();
        assert!(one_of.contains("one of ports 9100, 9101"), "{one_of}");
        let failed = why_taken(&ports, Err(anyhow::anyhow!("`ss` timed out"))).unwrap();
        assert!(
            failed.contains("cannot be told (`ss` timed out)"),
            "{failed}"
        );
    }

    fn config(extra: &str) -> Config {
        let text = format!(
            "project: p\napp: {{ name: web, image: example/web, port: 3000, memory: 64M }}\ncolors: {{ blue: 9011, green: 9012 }}\n{extra}"
        );
        Config::from_yaml(&text, std::path::Path::new("cutover.yml")).unwrap()
    }

    #[test]
    fn reload_is_the_default_and_auto_without_ports_falls_back_saying_why() {
        let (used, why, first) = decide(&config("")).unwrap();
        assert_eq!((used, why, first.is_none()), (Used::Reload, None, true));
        let (used, why, _) = decide(&config("nginx: { switch: auto }\n")).unwrap();
        assert_eq!(used, Used::Reload);
        assert!(why.unwrap().contains("nginx.switch_ports is not set"));
    }

    #[test]
    fn the_mapping_leads_the_stable_ports_to_the_colors() {
        let c = config("nginx: { switch_ports: [9100, 9101] }\n");
        let m = mapping(&c, Color::Green, Color::Blue).unwrap();
        assert_eq!(
            (m.primary, m.primary_to, m.backup, m.backup_to),
            (9100, 9012, 9101, 9011)
        );
        assert_eq!(color_of(&c, &m), Some(Color::Green));
    }
}
