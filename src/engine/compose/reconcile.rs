//! Before a deploy touches any color: put the nginx include back in line with what nginx
//! serves. A deploy killed between writing the include and reloading nginx leaves the file
//! naming the new color while nginx still serves the old one; the next deploy must treat the
//! served color as live (and the file as the stale one), never the other way round.

use anyhow::Context as _;

use super::observe::{Observed, Served};
use super::Run;

impl Run<'_, '_> {
    /// Makes the include and what nginx serves agree, changing nothing on a dry run.
    pub(super) fn reconcile(&mut self, o: &mut Observed, dry_run: bool) -> anyhow::Result<()> {
        let Some(served) = o.served.color() else {
            return Ok(());
        };
        if o.nginx_color == Some(served) {
            return self.close_a_fallback_left_open(o, served, dry_run);
        }
        // A worker from before the last reload can still answer for a while (a busy box
        // schedules it late), with the include before this one: ask again before taking the
        // file for the stale one. Any answer naming the file's color is nginx's current
        // config speaking.
        if let Some(file) = o.nginx_color {
            for _ in 0..10 {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if super::observe::ask_nginx(&self.d.loaded.config).color() == Some(file) {
                    o.served = Served::Color(file);
                    return self.close_a_fallback_left_open(o, file, dry_run);
                }
            }
        }
        let served = o.served.color().unwrap_or(served);
        let file = o
            .nginx_color
            .map_or("neither color".to_string(), |c| c.to_string());
        let file_runs = o.nginx_color.is_some_and(|c| o.running.contains(&c));
        if dry_run {
            self.clock.note(format!(
                "nginx serves {served} but its include names {file}: a deploy would fix the include first"
            ));
            return Ok(());
        }
        if o.running.contains(&served) || !file_runs {
            // nginx serves a color that runs: the file is the stale one.
            let text = self.include_text(served, crate::render::Route::Direct)?;
            self.nginx.switch(&text).with_context(|| {
                format!("could not put the nginx include back to {served}, the color nginx serves")
            })?;
            self.clock.note(format!(
                "nginx served {served} but its include named {file} (a switch stopped before the \
                 reload): restored the include for {served}"
            ));
            o.nginx_color = Some(served);
        } else {
            // nginx serves a color that is gone, the file names one that runs: apply the file.
            self.nginx
                .test_config()
                .and_then(|()| self.nginx.reload_config())
                .with_context(|| {
                    format!("could not apply the nginx include naming {file} (nginx serves {served}, which is not running)")
                })?;
            self.clock.note(format!(
                "nginx served {served}, which is not running, and its include named {file}: reloaded nginx onto {file}"
            ));
            o.served = Served::Color(o.nginx_color.unwrap_or(served));
        }
        Ok(())
    }
}

impl Run<'_, '_> {
    /// A deploy killed inside its watch window left the include routing through the site's
    /// upstream group, whose backup is the other color's port: closed before this deploy
    /// starts a color there that has not passed its gate.
    fn close_a_fallback_left_open(
        &mut self,
        o: &mut Observed,
        served: crate::config::Color,
        dry_run: bool,
    ) -> anyhow::Result<()> {
        if !o.fallback_open {
            return Ok(());
        }
        if dry_run {
            self.clock.note(format!(
                "the include for {served} still has the other color as nginx's backup (a deploy \
                 stopped in its watch window): a deploy would route nginx to {served} alone first"
            ));
            return Ok(());
        }
        let text = self.include_text(served, crate::render::Route::Direct)?;
        self.nginx.switch(&text).with_context(|| {
            format!("could not route nginx to {served} alone (a deploy stopped in its watch window left the other color as its backup)")
        })?;
        self.clock.note(format!(
            "a deploy stopped in its watch window left the other color as nginx's backup for \
             {served}: nginx → {served} alone"
        ));
        o.fallback_open = false;
        Ok(())
    }
}

impl Run<'_, '_> {
    /// Brings `state.json` in line with what serves when a previous run could not write it
    /// (a full disk after the switch): the served color, its running image, and the image the
    /// record last had active as the rollback target. Only when one color runs and nginx
    /// serves it, so a deploy in progress is never taken for a finished one. A repair that
    /// cannot be written is only a note: the deploy records again at its end.
    pub(super) fn repair_record(&mut self, o: &mut Observed, dry_run: bool) {
        let Some(active) = o.active() else { return };
        let serves = o.served.color().or(o.nginx_color) == Some(active);
        if !serves || o.running.len() != 1 || !o.running.contains(&active) {
            return;
        }
        let service = self.d.loaded.config.service(active);
        let Some(image) = o
            .containers
            .iter()
            .find(|c| c.service == service && c.running())
            .map(|c| c.image.clone())
        else {
            return;
        };
        let rec = &o.recorded;
        if rec.active == Some(active) && rec.images.get(&active) == Some(&image) {
            return;
        }
        let mut repaired = rec.clone();
        if let Some(old_image) = rec
            .active
            .filter(|old| *old != active)
            .and_then(|old| rec.images.get(&old))
            .filter(|old_image| **old_image != image)
        {
            repaired.previous_image = Some(old_image.clone());
        }
        repaired.active = Some(active);
        repaired.images.insert(active, image.clone());
        let what = format!(
            "the record said {} is active; {active} serves {image}",
            rec.active.map_or("nothing".to_string(), |c| c.to_string())
        );
        if dry_run {
            self.clock
                .note(format!("{what}: a deploy would repair the record first"));
            return;
        }
        match self.state_dir.save(&repaired) {
            Ok(()) => {
                self.clock.note(format!(
                    "{what}: repaired the record (rollback target {})",
                    repaired.previous_image.as_deref().unwrap_or("none")
                ));
                o.recorded = repaired;
            }
            Err(e) => self
                .clock
                .note(format!("{what}: could not repair the record: {e:#}")),
        }
    }
}
