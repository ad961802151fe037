//! Secrets: age-encrypted dotenv files, decrypted only in memory.
//!
//! The seed scripts kept database passwords in a plaintext `/home/ubuntu/.env`. Here they live
//! in git as `secrets/<name>.env.age`, encrypted to every public key in
//! `secrets/recipients.txt`, and files round-trip with the `age` CLI so nobody depends on
//! cutover to read their own secrets. At deploy time [`load_env`] decrypts them into a
//! [`SecretEnv`] that the deploy hands to `docker compose` as process environment, never a
//! file. Values stay in `SecretString`s and never appear in `Debug`, errors or logs.
//!
//! This module owns the domain and prints nothing: `keys` (identities, recipients),
//! `dotenv` (the hermetic dialect), `store` (encrypted files, atomic writes, rekey) and `edit`
//! (the tmpfs workspace for `$EDITOR`). The command layer is `cmd/secrets.rs`.

pub mod deploy_env;
pub mod deployed;
pub mod dotenv;
pub mod edit;
pub mod files;
pub mod keys;
pub mod store;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

pub use deploy_env::{deploy_env, secret_keys, DeployEnv, SecretKeys, SecretSources};
pub use dotenv::{ParseError, ParseErrorKind};
pub use keys::{default_identity_path, resolve_identity, Identities, IdentitySource};

/// Everything that can go wrong with secrets. Callers branch on the identity variants
/// (`NoIdentity` → say how to make one; `WrongIdentity` → say whose key is needed) versus
/// file problems. No variant ever holds a secret value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "no age identity to decrypt with: pass --identity FILE, set CUTOVER_IDENTITY=FILE or \
         CUTOVER_AGE_KEY=AGE-SECRET-KEY-1…, or create one with `cutover secrets keygen`{}",
        default_hint(.default)
    )]
    NoIdentity { default: Option<PathBuf> },
    #[error("identity file {} does not exist", .path.display())]
    IdentityNotFound { path: PathBuf },
    #[error(
        "identity file {} is readable by group or others (mode {mode:04o}); run `chmod 600 {}`",
        .path.display(), .path.display()
    )]
    IdentityPermissions { path: PathBuf, mode: u32 },
    #[error("invalid identity in {origin}{}: {reason}", line_suffix(.line))]
    InvalidIdentity {
        origin: String,
        line: Option<usize>,
        reason: String,
    },
    #[error(
        "identity file {} already exists; `cutover secrets keygen --add` adds its public key \
         to this project's recipients and keeps it, --out PATH writes a new one elsewhere, and \
         --force replaces it (the old key is lost: files encrypted only to it cannot be \
         decrypted again)",
        .path.display()
    )]
    IdentityExists { path: PathBuf },
    #[error(
        "the identity in {source_name} cannot decrypt {}: the file is not encrypted to {}. \
         Someone who can decrypt it must add that public key to secrets/recipients.txt and run \
         `cutover secrets rekey`",
        .path.display(), .public_keys.join(", ")
    )]
    WrongIdentity {
        path: PathBuf,
        source_name: String,
        public_keys: Vec<String>,
    },
    #[error(
        "refusing to write {}: the identity in {source_name} could not decrypt it afterwards, \
         because its public key is not in {}",
        .path.display(), .recipients.display()
    )]
    WouldLockOut {
        path: PathBuf,
        source_name: String,
        recipients: PathBuf,
    },
    #[error(
        "the identity in {source_name} is not listed in {}, so there is no recipient to retire",
        .recipients.display()
    )]
    OldIdentityNotRecipient {
        source_name: String,
        recipients: PathBuf,
    },
    #[error("secrets file {} does not exist", .path.display())]
    SecretNotFound { path: PathBuf },
    #[error(
        "there is no secrets file `{name}` ({}); existing: {}. Pass --create to make a new one",
        .path.display(),
        if .existing.is_empty() { "none yet".to_string() } else { .existing.join(", ") }
    )]
    UnknownSecret {
        name: String,
        path: PathBuf,
        existing: Vec<String>,
    },
    #[error(
        "{} is a plaintext dotenv file, not an age-encrypted one; encrypt it in place with \
         `cutover secrets encrypt --force {}`, and if the plaintext was ever committed, change \
         those values",
        .path.display(), .path.display()
    )]
    PlaintextFile { path: PathBuf },
    #[error("{} is not an age-encrypted file", .path.display())]
    NotAgeFile { path: PathBuf },
    #[error(
        "{} is already age-encrypted; to change it use `cutover secrets edit` or `set`",
        .path.display()
    )]
    AlreadyEncrypted { path: PathBuf },
    #[error("cannot decrypt {}: {reason}", .path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "recipients file {} does not exist; create it with `cutover secrets keygen --add`",
        .path.display()
    )]
    RecipientsMissing { path: PathBuf },
    #[error(
        "recipients file {} lists no public keys; add one (`cutover secrets keygen --add`), \
         encrypting to nobody would lock everyone out",
        .path.display()
    )]
    NoRecipients { path: PathBuf },
    #[error("{}:{line}: {reason}", .path.display())]
    RecipientLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("cannot encrypt {}: {reason}", .path.display())]
    Encrypt { path: PathBuf, reason: String },
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(
        "key `{key}` is set in both {} and {}; a key may come from one file only",
        .first.display(), .second.display()
    )]
    DuplicateAcrossFiles {
        key: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error(
        "invalid secrets name `{name}`: use letters, digits, `-`, `_` and `.` \
         (it becomes secrets/<name>.env.age)"
    )]
    InvalidName { name: String },
    #[error(
        "invalid key name `{key}`: use ASCII letters, digits and `_`, not starting with a digit"
    )]
    InvalidKey { key: String },
    #[error("key `{key}` is not set in {}", .path.display())]
    KeyNotFound { key: String, path: PathBuf },
    #[error("{} already exists; pass --force to replace it", .path.display())]
    AlreadyExists { path: PathBuf },
    #[error("the value for `{key}` contains a NUL byte, which no environment can hold")]
    NulInValue { key: String },
    #[error(
        "{}key `{key}`: `{key}=<value>` is {bytes} bytes, over Linux's limit of {limit} bytes for \
         one environment string (MAX_ARG_STRLEN, counting `KEY=` and the final NUL); compose \
         receives secrets as its process environment and could not be started with it. Keep large \
         values (certificates, key files) in a file or volume and put its path here",
        .file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default()
    )]
    TooLongForEnv {
        file: Option<PathBuf>,
        key: String,
        bytes: usize,
        limit: usize,
    },
    #[error("interrupted while the editor was running; nothing was changed")]
    Interrupted,
    #[error("the editor failed; {} was not changed", .path.display())]
    Editor {
        path: PathBuf,
        #[source]
        source: crate::process::ProcessError,
    },
    #[error("the editor exited with {status}; {} was not changed", .path.display())]
    EditorStatus { path: PathBuf, status: String },
    #[error("cannot {action} {}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SecretsError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        SecretsError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

fn default_hint(default: &Option<PathBuf>) -> String {
    match default {
        Some(path) => format!(" (writes {}, the default)", path.display()),
        None => String::new(),
    }
}

fn line_suffix(line: &Option<usize>) -> String {
    line.map(|l| format!(", line {l}")).unwrap_or_default()
}

/// Decrypted variables, ready to become a child process's environment. Keys are sorted;
/// values never appear in `Debug`.
#[derive(Default)]
pub struct SecretEnv {
    vars: BTreeMap<String, SecretString>,
}

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

impl SecretEnv {
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &SecretString)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn get(&self, key: &str) -> Option<&SecretString> {
        self.vars.get(key)
    }

    pub fn len(&self) -> usize {
        self.vars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        SecretEnv {
            vars: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), SecretString::from(*v)))
                .collect(),
        }
    }
}

/// Checks that every decrypted value fits in one environment string, before a command that
/// receives them as its environment (compose, `secrets exec`) is started and fails with a
/// bare E2BIG. Names the key and the limit, never the value.
pub fn check_env_sizes<'a>(
    vars: impl IntoIterator<Item = (&'a str, &'a SecretString)>,
) -> Result<(), SecretsError> {
    vars.into_iter()
        .try_for_each(|(key, value)| check_env_size(key, value.expose_secret(), None))
}

/// The longest single environment string Linux's `execve` accepts: `MAX_ARG_STRLEN`, 32
/// pages of 4 KiB, counting `KEY=`, the value and the terminating NUL. A longer one fails
/// with E2BIG before the program even starts.
pub const MAX_ENV_STRING: usize = 32 * 4096;

/// Refuses a `key`/`value` pair that could not be passed as one environment string.
pub fn check_env_size(key: &str, value: &str, file: Option<&Path>) -> Result<(), SecretsError> {
    let bytes = key.len() + 1 + value.len() + 1;
    if bytes > MAX_ENV_STRING {
        return Err(SecretsError::TooLongForEnv {
            file: file.map(Path::to_owned),
            key: key.to_string(),
            bytes,
            limit: MAX_ENV_STRING,
        });
    }
    Ok(())
}

fn check_entries(entries: &[dotenv::Entry], file: &Path) -> Result<(), SecretsError> {
    entries
        .iter()
        .try_for_each(|e| check_env_size(&e.key, e.value.expose_secret(), Some(file)))
}

/// Decrypts and parses every file into one environment. A key defined in two files is an
/// error rather than a silent override: with secrets, "which file won" is not something to
/// discover in production.
pub fn load_env(files: &[PathBuf], identities: &Identities) -> Result<SecretEnv, SecretsError> {
    let read = files
        .iter()
        .map(|p| store::read_file(p).map(|bytes| (p.clone(), bytes)))
        .collect::<Result<Vec<_>, _>>()?;
    load_env_bytes(&read, identities)
}

/// [`load_env`] on files already read: each path (named in errors) with its ciphertext.
pub fn load_env_bytes(
    files: &[(PathBuf, Vec<u8>)],
    identities: &Identities,
) -> Result<SecretEnv, SecretsError> {
    let mut vars: BTreeMap<String, SecretString> = BTreeMap::new();
    let mut origin: BTreeMap<String, PathBuf> = BTreeMap::new();
    for (path, bytes) in files {
        let decrypted = store::decrypt_bytes(bytes, path, identities)?;
        for entry in decrypted.entries {
            if let Some(first) = origin.get(&entry.key) {
                return Err(SecretsError::DuplicateAcrossFiles {
                    key: entry.key,
                    first: first.clone(),
                    second: path.clone(),
                });
            }
            origin.insert(entry.key.clone(), path.clone());
            vars.insert(entry.key, entry.value);
        }
    }
    Ok(SecretEnv { vars })
}

/// The secrets name a plaintext file gets by default: `prod.env` → `prod`, `.env.prod` →
/// `prod`, `prod` → `prod`, and a plaintext `secrets/prod.env.age` → `prod` (so the fix for
/// an unencrypted file in `secrets/` is to encrypt it in place). A bare `.env` has none (the caller asks for `--name`).
pub fn default_name(file: &Path) -> Option<String> {
    let base = file.file_name()?.to_str()?;
    let name = base
        .strip_prefix(".env.")
        .or_else(|| base.strip_suffix(".env.age"))
        .or_else(|| base.strip_suffix(".env"))
        .unwrap_or(base);
    store::validate_name(name).ok()?;
    Some(name.to_string())
}

/// `secrets encrypt`: validates a plaintext dotenv file and writes `secrets/<name>.env.age`.
pub fn encrypt_file(
    project: &Path,
    file: &Path,
    name: &str,
    force: bool,
) -> Result<(PathBuf, usize), SecretsError> {
    let dest = store::secret_path(project, name)?;
    let bytes = Zeroizing::new(fs::read(file).map_err(|e| SecretsError::io("read", file, e))?);
    if store::looks_like_age(&bytes) {
        return Err(SecretsError::AlreadyEncrypted {
            path: file.to_owned(),
        });
    }
    let label = file.display().to_string();
    let entries = dotenv::parse_bytes(&bytes, &label)?;
    check_entries(&entries, file)?;
    let count = entries.len();
    if dest.exists() && !force {
        return Err(SecretsError::AlreadyExists { path: dest });
    }
    let recipients = keys::Recipients::load(&store::recipients_path(project))?;
    let ciphertext = store::encrypt(&bytes, &recipients)?;
    store::write_atomic(&dest, &ciphertext, 0o644)?;
    Ok((dest, count))
}

/// The file `name` names: an existing one, or, with `create`, a new one; else the error
/// lists the files there are.
fn existing_or_created(project: &Path, name: &str, create: bool) -> Result<PathBuf, SecretsError> {
    let path = store::secret_path(project, name)?;
    if create || path.exists() {
        return Ok(path);
    }
    let existing = store::list_secret_files(project)?
        .iter()
        .filter_map(|p| {
            p.file_name()?
                .to_str()?
                .strip_suffix(".env.age")
                .map(String::from)
        })
        .collect();
    Err(SecretsError::UnknownSecret {
        name: name.to_string(),
        path,
        existing,
    })
}

/// What `set` did.
pub struct SetOutcome {
    pub path: PathBuf,
    pub created_file: bool,
    pub replaced: bool,
}

/// `secrets set`: sets one key, creating the file when missing only with `create` (a typo
/// in the name must not make a new file). The new ciphertext is verified to decrypt with
/// `identities` before it replaces the old one.
pub fn set_key(
    project: &Path,
    name: &str,
    key: &str,
    value: &SecretString,
    identities: &Identities,
    create: bool,
) -> Result<SetOutcome, SecretsError> {
    if !dotenv::is_valid_key(key) {
        return Err(SecretsError::InvalidKey {
            key: key.to_string(),
        });
    }
    if value.expose_secret().contains('\0') {
        return Err(SecretsError::NulInValue {
            key: key.to_string(),
        });
    }
    check_env_size(key, value.expose_secret(), None)?;
    let path = existing_or_created(project, name, create)?;
    let recipients = keys::Recipients::load(&store::recipients_path(project))?;
    let label = path.display().to_string();
    let (old_text, created_file, replaced) = if path.exists() {
        let current = store::decrypt_file(&path, identities)?;
        let replaced = current.entries.iter().any(|e| e.key == key);
        (current.text, false, replaced)
    } else {
        (SecretString::from(String::new()), true, false)
    };
    let text = dotenv::set_in_text(old_text.expose_secret(), &label, key, value)?;
    let ciphertext = store::seal(&text, &label, &recipients, Some(identities), &path)?;
    store::write_atomic(&path, &ciphertext, 0o644)?;
    Ok(SetOutcome {
        path,
        created_file,
        replaced,
    })
}

/// `secrets unset`: removes one key; a missing key is an error so typos do not pass silently.
pub fn unset_key(
    project: &Path,
    name: &str,
    key: &str,
    identities: &Identities,
) -> Result<PathBuf, SecretsError> {
    let path = store::secret_path(project, name)?;
    let recipients = keys::Recipients::load(&store::recipients_path(project))?;
    let current = store::decrypt_file(&path, identities)?;
    let label = path.display().to_string();
    let text =
        dotenv::unset_in_text(current.text.expose_secret(), &label, key)?.ok_or_else(|| {
            SecretsError::KeyNotFound {
                key: key.to_string(),
                path: path.clone(),
            }
        })?;
    let ciphertext = store::seal(&text, &label, &recipients, Some(identities), &path)?;
    store::write_atomic(&path, &ciphertext, 0o644)?;
    Ok(path)
}

/// What `edit` did, for the command layer to report (key names only).
pub struct EditReport {
    pub path: PathBuf,
    pub outcome: edit::Outcome,
    pub on_tmpfs: bool,
}

/// `secrets edit`: decrypt to the tmpfs workspace, run the editor, validate, re-encrypt.
/// A missing file (only with `create`) starts from a comment header and is created only if
/// something was added.
pub fn edit_secret(
    project: &Path,
    name: &str,
    identities: &Identities,
    create: bool,
    run_editor: impl FnMut(&Path) -> Result<(), SecretsError>,
) -> Result<EditReport, SecretsError> {
    let path = existing_or_created(project, name, create)?;
    let recipients = keys::Recipients::load(&store::recipients_path(project))?;
    let original = if path.exists() {
        store::decrypt_file(&path, identities)?.text
    } else {
        SecretString::from(format!(
            "# {} (KEY=VALUE lines; see docs/secrets-dotenv.md)\n",
            path.display()
        ))
    };
    let label = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.trim_end_matches(".age").to_string())
        .unwrap_or_else(|| "secrets.env".into());
    let check = |entries: &[dotenv::Entry]| check_entries(entries, &path);
    let (outcome, on_tmpfs) = edit::edit_text(&original, &label, run_editor, check)?;
    if let edit::Outcome::Changed { text, .. } = &outcome {
        let ciphertext = store::seal(text, &label, &recipients, Some(identities), &path)?;
        store::write_atomic(&path, &ciphertext, 0o644)?;
    }
    Ok(EditReport {
        path,
        outcome,
        on_tmpfs,
    })
}

/// What `secrets rekey` re-encrypted.
pub struct Rekeyed {
    pub files: Vec<PathBuf>,
    /// The ciphertext kept for the services and stopped colors (`deployed::all`).
    pub kept: Vec<PathBuf>,
}

/// `secrets rekey`: every file re-encrypted to the current recipients, and with them every
/// copy in `kept` (the deployed ciphertext, `deployed::all`), all or none. The current
/// identity must still be able to decrypt the results (no self-lockout).
pub fn rekey(project: &Path, identities: &Identities, kept: &[PathBuf]) -> anyhow::Result<Rekeyed> {
    let recipients = keys::Recipients::load(&store::recipients_path(project))?;
    let staged = store::rekey_all(project, identities, &recipients, identities)?;
    let staged_kept = kept
        .iter()
        .map(|file| deployed::rekey(file, identities, &recipients, identities))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Rekeyed {
        files: commit_all(staged)?,
        kept: commit_all(staged_kept)?,
    })
}

fn commit_all(staged: Vec<store::Staged>) -> Result<Vec<PathBuf>, SecretsError> {
    staged.into_iter().map(store::Staged::commit).collect()
}

/// What `rotate-identity` did.
pub struct Rotation {
    pub new_public_key: String,
    pub retired: Vec<String>,
    pub identity_path: PathBuf,
    /// Where the old identity file was moved when the new one replaced it in place.
    pub old_identity_backup: Option<PathBuf>,
    pub files: Vec<PathBuf>,
    /// The deployed ciphertext re-encrypted with them (`deployed::all`).
    pub kept: Vec<PathBuf>,
}

/// `secrets rotate-identity`: a new identity replaces `old` in recipients.txt and every file
/// is re-encrypted to the new recipient set, verified with the new identity, before anything
/// is written. When `out` is the old identity's own file, the old one is kept as
/// `<out>.old` (it is still needed to read files in git history) and the new one takes its
/// place. The copies in `kept` (the deployed ciphertext) are re-encrypted with the files.
pub fn rotate_identity(
    project: &Path,
    old: &Identities,
    out: &Path,
    kept: &[PathBuf],
) -> anyhow::Result<Rotation> {
    let recipients_path = store::recipients_path(project);
    let current = keys::Recipients::load(&recipients_path)?;
    let retired: Vec<String> = old
        .public_keys()
        .iter()
        .filter(|k| current.contains(k))
        .cloned()
        .collect();
    if retired.is_empty() {
        return Err(SecretsError::OldIdentityNotRecipient {
            source_name: old.source().to_string(),
            recipients: recipients_path,
        }
        .into());
    }

    // Decide where things go before any write, so every refusal leaves the disk untouched.
    let replaces_old = match old.source() {
        IdentitySource::File(old_path) => same_file(old_path, out),
        IdentitySource::Env | IdentitySource::Stdin => false,
    };
    let backup = replaces_old.then(|| {
        let mut name = out.as_os_str().to_owned();
        name.push(".old");
        PathBuf::from(name)
    });
    if let Some(backup) = &backup {
        if backup.exists() {
            return Err(SecretsError::AlreadyExists {
                path: backup.clone(),
            }
            .into());
        }
    } else if out.exists() {
        return Err(SecretsError::IdentityExists {
            path: out.to_owned(),
        }
        .into());
    }

    let new = keys::NewIdentity::generate();
    let without = keys::Recipients::parse(&recipients_path, current.text_without(&retired))?;
    let next_text = without.text_with(&new.public_key, "`cutover secrets rotate-identity`");
    let next = keys::Recipients::parse(&recipients_path, next_text.clone())?;
    let verify = new.identities(out);
    let staged = store::rekey_all(project, old, &next, &verify)?;
    let staged_kept = kept
        .iter()
        .map(|file| deployed::rekey(file, old, &next, &verify))
        .collect::<anyhow::Result<Vec<_>>>()?;

    // Writes, ordered so that a crash at any point leaves a key that can read every file.
    if let Some(backup) = &backup {
        fs::hard_link(out, backup).map_err(|e| SecretsError::io("back up", out, e))?;
    }
    keys::write_identity_file(out, &new.file_text, replaces_old)?;
    let files = commit_all(staged)?;
    let kept = commit_all(staged_kept)?;
    store::write_atomic(&recipients_path, next_text.as_bytes(), 0o644)?;
    Ok(Rotation {
        new_public_key: new.public_key,
        retired,
        identity_path: out.to_owned(),
        old_identity_backup: backup,
        files,
        kept,
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
