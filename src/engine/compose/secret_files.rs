//! `app.secrets_delivery: files` in the deploy: each service's files written on the tmpfs
//! (`secrets::files`) before it starts, and removed once it is stopped. A rotation therefore
//! reaches only the color (and worker colors) this deploy starts; the old color keeps its
//! files until the deploy stops it, so a rollback finds its values where they were.

use std::collections::BTreeMap;

use anyhow::Context as _;
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
        let (keys, sources) = match accessory {
            Some(name) => (
                self.d.secret_keys.accessory(name),
                self.d.secret_sources.accessory(name),
            ),
            None => (
                &self.d.secret_keys.app,
                self.d.secret_sources.app.as_slice(),
            ),
        };
        // The copy first: a service whose files are written has its ciphertext kept, so a
        // reboot never falls back to the store for it.
        crate::secrets::deployed::save(&self.d.loaded.state_dir(), service, &sources.to_vec())?;
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
        dirs.remove(service)
            .and_then(|()| crate::secrets::deployed::remove(&self.d.loaded.state_dir(), service))
            .err()
            .map(|e| format!("{e:#}"))
    }
}

/// What [`restore`] wrote (or, on a dry run, would write) for one project.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    pub project: String,
    /// The services whose files were written, each with the key names (never values).
    pub services: Vec<(String, Vec<String>)>,
    /// The services deployed before their ciphertext was kept (by an older cutover): their
    /// files come from the store as it is now.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from_store: Vec<String>,
    /// Why nothing was written (env mode, nothing deployed yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Writes the files of every service of `loaded` that Docker brings back by itself (the
/// serving color, each worker's recorded color, the accessories) from the ciphertext each was
/// deployed from (`secrets::deployed`), decrypted in memory with `identity`: what the boot
/// unit runs before Docker starts, since a reboot empties the tmpfs. A service deployed
/// before that copy was kept falls back to the store (and is named in `from_store`). A
/// service not running needs none: the next deploy writes its.
pub fn restore(
    identity: Option<&std::path::Path>,
    loaded: &crate::config::Loaded,
    dry_run: bool,
) -> anyhow::Result<Restored> {
    let config = &loaded.config;
    let mut restored = Restored {
        project: config.project.to_string(),
        services: Vec::new(),
        from_store: Vec::new(),
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
    let state_dir = loaded.state_dir();
    let mut services: Vec<(String, Option<String>)> = vec![(config.service(active), None)];
    for (name, record) in &state.workers {
        if config.has_worker(name) {
            services.push((config.worker_service(name, record.color), None));
        }
    }
    for name in config.accessories.keys() {
        services.push((name.to_string(), Some(name.to_string())));
    }
    let identities = std::cell::OnceCell::new();
    let mut store = None;
    for (service, accessory) in services {
        let (keys, values) = match crate::secrets::deployed::load(&state_dir, &service)? {
            Some(kept) => {
                let ids = match identities.get() {
                    Some(ids) => ids,
                    None => {
                        let ids = crate::secrets::resolve_identity(identity).context(
                            "cannot decrypt the ciphertext the services were deployed from",
                        )?;
                        identities.get_or_init(|| ids)
                    }
                };
                let env = crate::secrets::load_env_bytes(&kept, ids).with_context(|| {
                    format!("cannot decrypt the ciphertext {service} was deployed from")
                })?;
                let registry = crate::secrets::deploy_env::registry_key(loaded);
                let values: BTreeMap<String, SecretString> = env
                    .iter()
                    .filter(|(k, _)| Some(*k) != registry)
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                (values.keys().cloned().collect::<Vec<_>>(), values)
            }
            None => {
                restored.from_store.push(service.clone());
                if store.is_none() {
                    store = Some(crate::secrets::deploy_env(identity, loaded)?);
                }
                let env = store.as_ref().expect("just loaded");
                let keys = match &accessory {
                    Some(name) => env.keys.accessory(name),
                    None => &env.keys.app,
                };
                let values = keys
                    .iter()
                    .filter_map(|k| env.values.get(k).map(|v| (k.clone(), v.clone())))
                    .collect::<BTreeMap<_, _>>();
                (keys.iter().cloned().collect(), values)
            }
        };
        if !dry_run {
            dirs.write(&service, values.iter().map(|(k, v)| (k.as_str(), v)))
                .map_err(|e| e.context(format!("cannot write the secret files of {service}")))?;
        }
        restored.services.push((service, keys));
    }
    Ok(restored)
}
