//! `app.secrets_delivery: files` in the deploy: each service's files written on the tmpfs
//! (`secrets::files`) before it starts, and removed once it is stopped. A rotation therefore
//! reaches only the color (and worker colors) this deploy starts; the old color keeps its
//! files until the deploy stops it.
//!
//! A rollback, in either delivery, gives the color it brings back the values that color was
//! deployed with: the ciphertext kept when it stopped (`secrets::deployed::retire`),
//! decrypted in memory, not the store as it is now ([`Given`]). With nothing kept for it
//! (stopped by a cutover that kept none), the store's values, and the rollback says so. A
//! kept copy that cannot be decrypted refuses the rollback, naming the file: giving the old
//! code today's values silently is what this exists to prevent.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use secrecy::SecretString;

use super::{Deployer, Run, Target};
use crate::config::Color;
use crate::secrets::{SecretKeys, SecretSources};

/// What compose's process environment gets: every value in env mode, nothing in files mode
/// (the compose file then names no variable to interpolate).
pub(super) fn compose_env<'m>(d: &'m Deployer<'_>) -> &'m BTreeMap<String, SecretString> {
    static NONE: BTreeMap<String, SecretString> = BTreeMap::new();
    match d.secret_files {
        Some(_) => &NONE,
        None => d.values(),
    }
}

/// A rollback's values: the store's, with the app's replaced by those the color it brings
/// back was deployed with.
#[derive(Debug)]
pub struct Given {
    values: BTreeMap<String, SecretString>,
    keys: SecretKeys,
    sources: SecretSources,
    pub(super) from: SecretsFrom,
}

/// Where a rollback's values came from (`--json`: `secrets_from`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum SecretsFrom {
    /// The ciphertext `service` (the color the last deploy stopped) was deployed with.
    Kept { service: String, file: PathBuf },
    /// The store as it is now: nothing usable was kept for `service` (`why`).
    Store { service: String, why: String },
}

impl std::fmt::Display for SecretsFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretsFrom::Kept { service, file } => write!(
                f,
                "secrets: the values {service} was deployed with, kept when it stopped (decrypted from {})",
                file.display()
            ),
            SecretsFrom::Store { service: _, why } => {
                write!(f, "secrets: the store's values as they are now ({why})")
            }
        }
    }
}

impl Deployer<'_> {
    /// Every value this run gives its services and hooks: a rollback's [`Given`] once set,
    /// else the store's.
    pub(super) fn values(&self) -> &BTreeMap<String, SecretString> {
        self.rollback_values
            .get()
            .map_or(&self.secrets, |g| &g.values)
    }

    /// The key names per service, as [`Deployer::values`].
    pub(super) fn keys(&self) -> &SecretKeys {
        self.rollback_values
            .get()
            .map_or(&self.secret_keys, |g| &g.keys)
    }

    /// The ciphertext the values came from, as [`Deployer::values`].
    pub(super) fn sources(&self) -> &SecretSources {
        self.rollback_values
            .get()
            .map_or(&self.secret_sources, |g| &g.sources)
    }
}

impl Run<'_, '_> {
    /// Writes the files of `service`, which gets the app's keys or, for an accessory, its own;
    /// `image`: what it starts (kept with the ciphertext, for a rollback to match).
    pub(super) fn write_secret_files(
        &self,
        service: &str,
        accessory: Option<&str>,
        image: Option<&str>,
    ) -> anyhow::Result<()> {
        let Some(dirs) = &self.d.secret_files else {
            return Ok(());
        };
        let (keys, sources) = match accessory {
            Some(name) => (
                self.d.keys().accessory(name),
                self.d.sources().accessory(name),
            ),
            None => (&self.d.keys().app, self.d.sources().app.as_slice()),
        };
        // The copy first: a service whose files are written has its ciphertext kept, so a
        // reboot never falls back to the store for it.
        crate::secrets::deployed::save(
            &self.d.loaded.state_dir(),
            service,
            image,
            &sources.to_vec(),
        )?;
        let values = keys
            .iter()
            .filter_map(|k| self.d.values().get(k).map(|v| (k.as_str(), v)));
        dirs.write(service, values)
            .map(|_| ())
            .map_err(|e| e.context(format!("cannot write the secret files of {service}")))
    }

    /// Removes the files of a service that no longer runs, and its kept ciphertext; a
    /// failure is a note, since the service is already stopped.
    pub(super) fn remove_secret_files(&self, service: &str) -> Option<String> {
        self.remove_files_only(service).or_else(|| {
            crate::secrets::deployed::remove(&self.d.loaded.state_dir(), service)
                .err()
                .map(|e| format!("{e:#}"))
        })
    }

    /// Removes the tmpfs files of a service that no longer runs (files mode), a note on
    /// failure.
    pub(super) fn remove_files_only(&self, service: &str) -> Option<String> {
        let dirs = self.d.secret_files.as_ref()?;
        dirs.remove(service).err().map(|e| format!("{e:#}"))
    }

    /// The old web color is stopping: its kept ciphertext moves aside for a rollback to it
    /// (both deliveries); a failure is a note (that rollback then uses the store, and says
    /// so).
    pub(super) fn retire_secret_files(&self, service: &str) -> Option<String> {
        crate::secrets::deployed::retire(&self.d.loaded.state_dir(), service)
            .err()
            .map(|e| format!("warning: {e:#}; a rollback to it gets the store's values"))
    }

    /// A rollback: decides its values ([`Given`]) for the image it brings back, under the
    /// lock, before anything starts. They are kept with the color the last deploy stopped:
    /// the one it starts, or, when nothing runs (a recovery onto the recorded color), the
    /// other one. A copy kept for another image is not taken (the store, named).
    pub(super) fn rollback_values(&mut self, t: &Target) -> anyhow::Result<()> {
        let loaded = self.d.loaded;
        let stopped = match t.from {
            Some(_) => t.to,
            None => t.to.other(),
        };
        let service = loaded.config.service(stopped);
        let state_dir = loaded.state_dir();
        let file = crate::secrets::deployed::stopped_path(&state_dir, &service);
        let refused = |e: anyhow::Error| {
            e.context(format!(
                "rollback refused: {} holds the ciphertext {service} was last deployed with, and it cannot be used; remove it to roll back with the store's values as they are now (every `secrets set` since included)",
                file.display()
            ))
        };
        let kept = crate::secrets::deployed::load_stopped(&state_dir, &service).map_err(refused)?;
        let other_image = kept
            .as_ref()
            .and_then(|k| k.image.as_ref())
            .filter(|image| **image != t.image)
            .cloned();
        let given = match kept {
            Some(kept) if other_image.is_none() => {
                let kept = kept.files;
                let env = if kept.is_empty() {
                    crate::secrets::SecretEnv::default()
                } else {
                    let ids = crate::secrets::resolve_identity(self.d.identity.as_deref())
                        .map_err(|e| refused(e.into()))?;
                    crate::secrets::load_env_bytes(&kept, &ids).map_err(|e| refused(e.into()))?
                };
                let registry = crate::secrets::deploy_env::registry_key(loaded);
                let mut values = self.d.secrets.clone();
                let mut keys = self.d.secret_keys.clone();
                keys.app.clear();
                // The registry password stays today's: it logs in, it reaches no container.
                for (key, value) in env.iter().filter(|(k, _)| Some(*k) != registry) {
                    values.insert(key.to_string(), value.clone());
                    keys.app.insert(key.to_string());
                }
                let mut sources = self.d.secret_sources.clone();
                sources.app = kept;
                Given {
                    values,
                    keys,
                    sources,
                    from: SecretsFrom::Kept {
                        service: service.clone(),
                        file,
                    },
                }
            }
            _ => Given {
                values: self.d.secrets.clone(),
                keys: self.d.secret_keys.clone(),
                sources: self.d.secret_sources.clone(),
                from: SecretsFrom::Store {
                    service: service.clone(),
                    why: match other_image {
                        Some(image) => format!(
                            "the ciphertext kept when it stopped ({}) is for {image}, not {}",
                            file.display(),
                            t.image
                        ),
                        None => format!(
                            "no ciphertext was kept when it stopped: {} does not exist",
                            file.display()
                        ),
                    },
                },
            },
        };
        // A project without secrets has nothing to say (`--json` says it all the same).
        if !given.keys.app.is_empty() {
            self.clock.note(given.from.to_string());
        }
        self.d
            .rollback_values
            .set(given)
            .map_err(|_| anyhow::anyhow!("a rollback decided its values twice"))
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

/// The ciphertext `service` runs with: its copy kept as running or, for the recorded web
/// color, the copy moved to `stopped/` for the image it is recorded with. That is a deploy
/// killed in its stop step, between moving the copy aside and the stop: the color may still
/// run and come back at boot, with the values it ran, not the store's.
fn kept_copy(
    state_dir: &std::path::Path,
    state: &crate::state::State,
    config: &crate::config::Config,
    service: &str,
) -> anyhow::Result<Option<crate::secrets::deploy_env::Ciphertext>> {
    use crate::secrets::deployed;
    if let Some(kept) = deployed::load(state_dir, service)? {
        return Ok(Some(kept));
    }
    let Some(active) = state.active.filter(|c| config.service(*c) == service) else {
        return Ok(None);
    };
    Ok(deployed::load_stopped(state_dir, service)?
        .filter(|s| s.image.is_some() && s.image.as_ref() == state.images.get(&active))
        .map(|s| s.files))
}

/// Writes the files of every service of `loaded` that Docker brings back by itself (the
/// serving color, each worker's recorded color, the accessories, any other color whose copy is
/// kept as running) from the ciphertext each was
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
    let state_dir = loaded.state_dir();
    // What the record names (the serving color, each worker's color, the accessories), and
    // every other color whose ciphertext is kept as running: a deploy killed after starting
    // its new color (past its switch, even: nginx serving it, the record not yet saying so)
    // leaves it to come back at boot, and Docker does not start it without its files.
    let mut services: Vec<(String, Option<String>)> = Vec::new();
    let mut running: Vec<String> = Vec::new();
    for color in [Color::Blue, Color::Green] {
        match state.active == Some(color) {
            true => services.push((config.service(color), None)),
            false => running.push(config.service(color)),
        }
    }
    for name in config.workers.keys() {
        for color in [Color::Blue, Color::Green] {
            let service = config.worker_service(name.as_str(), color);
            match state.workers.get(name.as_str()).map(|r| r.color) == Some(color) {
                true => services.push((service, None)),
                false => running.push(service),
            }
        }
    }
    for service in running {
        if crate::secrets::deployed::load(&state_dir, &service)?.is_some() {
            services.push((service, None));
        }
    }
    if state.active.is_none() && services.is_empty() {
        restored.skipped = Some("nothing deployed yet".into());
        return Ok(restored);
    }
    for name in config.accessories.keys() {
        services.push((name.to_string(), Some(name.to_string())));
    }
    let identities = std::cell::OnceCell::new();
    let mut store = None;
    for (service, accessory) in services {
        let (keys, values) = match kept_copy(&state_dir, &state, config, &service)? {
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
