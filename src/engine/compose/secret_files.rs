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

/// What [`restore`] wrote (or, on a dry run, would write) for one project.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    pub project: String,
    /// The services whose files were written, each with the key names (never values).
    pub services: Vec<(String, Vec<String>)>,
    /// Why nothing was written (env mode, nothing deployed yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Writes the files of every service of `loaded` that Docker brings back by itself (the
/// serving color, each worker's recorded color, the accessories) from the encrypted store,
/// decrypted in memory with `identity`: what the boot unit runs before Docker starts, since
/// a reboot empties the tmpfs. A service not running needs none: the next deploy writes its.
pub fn restore(
    identity: Option<&std::path::Path>,
    loaded: &crate::config::Loaded,
    dry_run: bool,
) -> anyhow::Result<Restored> {
    let config = &loaded.config;
    let mut restored = Restored {
        project: config.project.to_string(),
        services: Vec::new(),
        skipped: None,
    };
    let Some(dirs) = crate::secrets::files::for_project(config)? else {
        restored.skipped = Some("app.secrets_delivery is env: nothing on tmpfs".into());
        return Ok(restored);
    };
    let state = crate::state::StateDir::new(loaded.state_dir()).load()?;
    let Some(active) = state.active else {
        restored.skipped = Some("nothing deployed yet".into());
        return Ok(restored);
    };
    let env = crate::secrets::deploy_env(identity, loaded)?;
    let mut services: Vec<(String, Option<String>)> = vec![(config.service(active), None)];
    for (name, record) in &state.workers {
        if config.has_worker(name) {
            services.push((config.worker_service(name, record.color), None));
        }
    }
    for name in config.accessories.keys() {
        services.push((name.to_string(), Some(name.to_string())));
    }
    for (service, accessory) in services {
        let keys = match &accessory {
            Some(name) => env.keys.accessory(name),
            None => &env.keys.app,
        };
        if !dry_run {
            let values = keys
                .iter()
                .filter_map(|k| env.values.get(k).map(|v| (k.as_str(), v)));
            dirs.write(&service, values)
                .map_err(|e| e.context(format!("cannot write the secret files of {service}")))?;
        }
        restored
            .services
            .push((service, keys.iter().cloned().collect()));
    }
    Ok(restored)
}
