//! The way out of a failure before the switch: remove the new color, keep its last log
//! lines for the message, leave nginx alone, and say what still serves.

use crate::engine::{Abort, Failed, Step};

use super::Run;

impl Run<'_, '_> {
    /// Tears the idle color down and builds the error. nginx is not touched here.
    pub(super) fn abort_before_switch(
        &mut self,
        idle_service: &str,
        why: &str,
        abort: Abort,
    ) -> anyhow::Error {
        let config = &self.d.loaded.config;
        let interrupted = abort == Abort::Interrupted;
        // The app's own lines may print a secret: masked as every shown output is.
        let logs = crate::secrets::deploy_env::redact(
            &self.project.logs(idle_service, 20),
            self.d.values(),
        );
        self.clock.start(Step::Teardown, idle_service.to_string());
        let teardown = self
            .project
            .stop_and_remove(idle_service, config.app.stop_grace.get());
        let files_note = match &teardown {
            Ok(()) => self.remove_secret_files(idle_service),
            Err(_) => None,
        };
        self.clock.done(Step::Teardown, idle_service.to_string());
        let mut message = match (interrupted, why) {
            (true, "interrupted") => "deploy interrupted".to_string(),
            (true, _) => format!("deploy interrupted: {why}"),
            (false, _) => format!("deploy failed: {why}"),
        };
        let unchanged = match self.from {
            Some(old) => format!("nginx still serves {old}"),
            None => "nothing served before this deploy".to_string(),
        };
        match teardown {
            Ok(()) => message.push_str(&format!(
                "\n{idle_service} was stopped and removed; {unchanged}"
            )),
            Err(e) => message.push_str(&format!("\ncould not remove {idle_service}: {e}")),
        }
        if let Some(note) = files_note {
            message.push_str(&format!("\n{note}"));
        }
        if !logs.trim().is_empty() && !interrupted {
            message.push_str(&format!(
                "\nlast log lines of {idle_service}:\n{}",
                indent(&logs)
            ));
        }
        Failed { message, abort }.into()
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
