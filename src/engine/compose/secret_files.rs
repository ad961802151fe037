//! `app.secrets_delivery: files` in the deploy: each service's files written on the tmpfs
//! (`secrets::files`) before it starts, and removed once it is stopped. A rotation therefore
//! reaches only the color (and worker colors) this deploy starts; the old color keeps its
//! files until the deploy stops it, so a rollback finds its values where they were.

use std::collections::BTreeMap;

use secrecy::SecretString;

use super::Run;

/// What compose's process environment gets: every value in env mode, nothing in files mode
/// (the compose file then names no variable to interpolate).
pub(super) fn compose_env<'m>(d: &'m super::Deployer<'_>) -> &'m BTreeMap<String, SecretString> {
    static NONE: BTreeMap<String, SecretString> = BTreeMap::new();
    match d.secret_files {
        Some(_) => &NONE,
        None => &d.secrets,
    }
}

impl Run<'_, '_> {
    /// Writes the files of `service`, which gets the app's keys or, for an accessory, its own.
    pub(super) fn write_secret_files(
        &self,
        service: &str,
        accessory: Option<&str>,
    ) -> anyhow::Result<()> {
        let Some(dirs) = &self.d.secret_files else {
            return Ok(());
        };
        let keys = match accessory {
            Some(name) => self.d.secret_keys.accessory(name),
            None => &self.d.secret_keys.app,
        };
        let values = keys
            .iter()
            .filter_map(|k| self.d.secrets.get(k).map(|v| (k.as_str(), v)));
        dirs.write(service, values)
            .map(|_| ())
            .map_err(|e| e.context(format!("cannot write the secret files of {service}")))
    }

    /// Removes the files of a service that no longer runs; a failure is a note, since the
    /// service is already stopped.
    pub(super) fn remove_secret_files(&self, service: &str) -> Option<String> {
        let dirs = self.d.secret_files.as_ref()?;
        dirs.remove(service).err().map(|e| format!("{e:#}"))
    }
}
