//! Identities (who can decrypt) and recipients (who files are encrypted to).
//!
//! An identity comes from one place, in this order: an explicit file (`--identity`, or
//! `CUTOVER_IDENTITY` through clap), the key itself in `CUTOVER_AGE_KEY` (for CI, where
//! writing a key file is awkward), or the per-user default file. Identity files are refused
//! when group or others may read them, as ssh does, because a deploy key left world-readable
//! on a shared box is the plaintext `.env` problem again. Writing follows rage: 0600 with
//! create-new semantics, so keygen never clobbers a key by accident. On a box driven by
//! `cutover --host`, a key sent on the SSH channel's stdin comes before all of these, and the
//! box identity `cutover bootstrap` makes (`/etc/cutover/identity.txt`) after them.
//!
//! `recipients.txt` is the same format `age -R` reads, so the file is the single source of
//! truth for both tools.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::SecretsError;

/// Where `cutover bootstrap` puts the box's own identity; the last place looked.
pub const BOX_IDENTITY_PATH: &str = "/etc/cutover/identity.txt";

/// The environment variable holding an identity's text (for CI).
pub const AGE_KEY_ENV: &str = "CUTOVER_AGE_KEY";

/// Where an identity was found, for messages ("the identity in CUTOVER_AGE_KEY").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    File(PathBuf),
    Env,
    /// Sent by `cutover --host` on the SSH channel's stdin (see `remote::on_box`).
    Stdin,
}

impl fmt::Display for IdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentitySource::File(path) => write!(f, "{}", path.display()),
            IdentitySource::Env => write!(f, "${AGE_KEY_ENV}"),
            IdentitySource::Stdin => write!(f, "the key sent with `cutover --host` (stdin)"),
        }
    }
}

/// The identities of one identity file (or `CUTOVER_AGE_KEY`), with their public keys.
pub struct Identities {
    source: IdentitySource,
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
    /// Canonical public keys, as they appear in recipients.txt (`age1…`, `ssh-ed25519 AAAA…`).
    public_keys: Vec<String>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("source", &self.source)
            .field("public_keys", &self.public_keys)
            .finish_non_exhaustive()
    }
}

impl Identities {
    pub fn source(&self) -> &IdentitySource {
        &self.source
    }

    pub fn public_keys(&self) -> &[String] {
        &self.public_keys
    }

    pub(crate) fn as_age(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity)
    }

    /// Reads an identity file: age identities (`AGE-SECRET-KEY-1…` lines, `#` comments) or an
    /// unencrypted OpenSSH ed25519/RSA private key.
    pub fn from_file(path: &Path) -> Result<Self, SecretsError> {
        let meta = fs::metadata(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                SecretsError::IdentityNotFound {
                    path: path.to_owned(),
                }
            } else {
                SecretsError::io("read identity file", path, source)
            }
        })?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(SecretsError::IdentityPermissions {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
        let text = Zeroizing::new(
            fs::read_to_string(path)
                .map_err(|e| SecretsError::io("read identity file", path, e))?,
        );
        Self::parse(&text, IdentitySource::File(path.to_owned()))
    }

    /// Parses identity text from a file or `CUTOVER_AGE_KEY`.
    pub fn parse(text: &str, source: IdentitySource) -> Result<Self, SecretsError> {
        let invalid = |line: Option<usize>, reason: &str| SecretsError::InvalidIdentity {
            origin: source.to_string(),
            line,
            reason: reason.to_string(),
        };
        if text.trim_start().starts_with("-----BEGIN") {
            return Self::parse_ssh(text, source.clone(), invalid);
        }
        let mut keys: Vec<Box<dyn age::Identity + Send + Sync>> = Vec::new();
        let mut public_keys = Vec::new();
        for (idx, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.parse::<age::x25519::Identity>() {
                Ok(identity) => {
                    public_keys.push(identity.to_public().to_string());
                    keys.push(Box::new(identity));
                }
                Err(_) if line.starts_with("age1") || line.starts_with("ssh-") => {
                    return Err(invalid(
                        Some(idx + 1),
                        "this is a public key (a recipient), not an identity; \
                         pass the private key file",
                    ))
                }
                // The line itself is never shown: it may be a mangled private key.
                Err(_) => {
                    return Err(invalid(
                        Some(idx + 1),
                        "not an age identity (AGE-SECRET-KEY-1…) or an OpenSSH private key",
                    ))
                }
            }
        }
        if keys.is_empty() {
            return Err(invalid(
                None,
                "no identity found (the file has only comments)",
            ));
        }
        Ok(Identities {
            source,
            keys,
            public_keys,
        })
    }

    fn parse_ssh(
        text: &str,
        source: IdentitySource,
        invalid: impl Fn(Option<usize>, &str) -> SecretsError,
    ) -> Result<Self, SecretsError> {
        let filename = match &source {
            IdentitySource::File(p) => Some(p.display().to_string()),
            IdentitySource::Env | IdentitySource::Stdin => None,
        };
        let identity = age::ssh::Identity::from_buffer(text.as_bytes(), filename)
            .map_err(|_| invalid(None, "not a valid OpenSSH private key"))?;
        match &identity {
            age::ssh::Identity::Unencrypted(_) => {}
            age::ssh::Identity::Encrypted(_) => {
                return Err(invalid(
                    None,
                    "passphrase-protected SSH keys are not supported (deploys run unattended); \
                     use an age identity from `cutover secrets keygen`",
                ))
            }
            age::ssh::Identity::Unsupported(_) => {
                return Err(invalid(
                    None,
                    "unsupported SSH key type (use ssh-ed25519 or an age identity)",
                ))
            }
        }
        let recipient = age::ssh::Recipient::try_from(identity.clone())
            .map_err(|_| invalid(None, "cannot derive the public key of this SSH key"))?;
        Ok(Identities {
            source,
            keys: vec![Box::new(identity)],
            public_keys: vec![recipient.to_string()],
        })
    }
}

/// The per-user identity file: `$XDG_CONFIG_HOME/cutover/identity.txt`, else
/// `~/.config/cutover/identity.txt`.
pub fn default_identity_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".config"),
    };
    Some(base.join("cutover").join("identity.txt"))
}

/// The identity `cutover --host` sent on stdin, held in memory only; it takes precedence over
/// every other source on the box because the caller asked for it explicitly.
static STDIN_KEY: std::sync::OnceLock<Zeroizing<String>> = std::sync::OnceLock::new();

/// Installs the identity read from stdin (once per process).
pub fn set_stdin_identity(key: Zeroizing<String>) {
    let _ = STDIN_KEY.set(key);
}

/// Finds the identity to decrypt with; see the module docs for the order.
pub fn resolve_identity(explicit: Option<&Path>) -> Result<Identities, SecretsError> {
    if let Some(key) = STDIN_KEY.get() {
        return Identities::parse(key, IdentitySource::Stdin);
    }
    if let Some(path) = explicit {
        return Identities::from_file(path);
    }
    if let Some(key) = std::env::var_os(AGE_KEY_ENV).filter(|v| !v.is_empty()) {
        let key = Zeroizing::new(
            key.into_string()
                .map_err(|_| SecretsError::InvalidIdentity {
                    origin: IdentitySource::Env.to_string(),
                    line: None,
                    reason: "not valid UTF-8".into(),
                })?,
        );
        return Identities::parse(&key, IdentitySource::Env);
    }
    match default_identity_path() {
        Some(path) if path.exists() => Identities::from_file(&path),
        // The box identity `cutover bootstrap` makes (owned by the deploy user), so a box
        // driven by `cutover --host` decrypts with its own key without further setup.
        _ if Path::new(BOX_IDENTITY_PATH).exists() => {
            Identities::from_file(Path::new(BOX_IDENTITY_PATH))
        }
        default => Err(SecretsError::NoIdentity { default }),
    }
}

/// A freshly generated identity, not yet written anywhere.
pub struct NewIdentity {
    pub public_key: String,
    /// The whole identity file, in the format `age-keygen` writes.
    pub file_text: SecretString,
    identity: age::x25519::Identity,
}

impl NewIdentity {
    pub fn generate() -> Self {
        let identity = age::x25519::Identity::generate();
        let public_key = identity.to_public().to_string();
        let file_text = SecretString::from(format!(
            "# age identity created by `cutover secrets keygen`; keep it private\n\
             # public key: {public_key}\n{}\n",
            identity.to_string().expose_secret()
        ));
        NewIdentity {
            public_key,
            file_text,
            identity,
        }
    }

    /// The new identity as something that can decrypt (for verifying a rekey before any
    /// file is written).
    pub fn identities(&self, path: &Path) -> Identities {
        Identities {
            source: IdentitySource::File(path.to_owned()),
            keys: vec![Box::new(self.identity.clone())],
            public_keys: vec![self.public_key.clone()],
        }
    }
}

/// Writes an identity file with mode 0600. Without `overwrite` an existing file is an error
/// (create-new, no race between the check and the write); with it the old file is replaced
/// atomically. A missing parent directory is created 0700.
pub fn write_identity_file(
    path: &Path,
    text: &SecretString,
    overwrite: bool,
) -> Result<(), SecretsError> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| SecretsError::io("create identity directory", parent, e))?;
    }
    if overwrite {
        // tempfile creates its files 0600.
        let mut tmp = tempfile::NamedTempFile::new_in(parent)
            .map_err(|e| SecretsError::io("create temp file in", parent, e))?;
        tmp.write_all(text.expose_secret().as_bytes())
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| SecretsError::io("write identity file", path, e))?;
        tmp.persist(path)
            .map_err(|e| SecretsError::io("write identity file", path, e.error))?;
        return Ok(());
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                SecretsError::IdentityExists {
                    path: path.to_owned(),
                }
            } else {
                SecretsError::io("create identity file", path, e)
            }
        })?;
    file.write_all(text.expose_secret().as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| SecretsError::io("write identity file", path, e))
}

/// The start of the comment cutover writes above a recipient it adds.
const ADDED_BY: &str = "# added by ";

/// One usable line of recipients.txt.
pub struct RecipientLine {
    pub line: usize,
    /// Canonical form (an ssh key's trailing comment dropped), to compare with identities.
    pub public_key: String,
    recipient: Box<dyn age::Recipient + Send + Sync>,
}

/// A parsed recipients.txt.
pub struct Recipients {
    pub path: PathBuf,
    pub text: String,
    pub lines: Vec<RecipientLine>,
}

impl Recipients {
    /// Reads and validates recipients.txt; an empty file (only comments) is an error, since
    /// encrypting to nobody would lock everyone out.
    pub fn load(path: &Path) -> Result<Self, SecretsError> {
        let text = fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SecretsError::RecipientsMissing {
                    path: path.to_owned(),
                }
            } else {
                SecretsError::io("read recipients file", path, e)
            }
        })?;
        let recipients = Self::parse(path, text)?;
        if recipients.lines.is_empty() {
            return Err(SecretsError::NoRecipients {
                path: path.to_owned(),
            });
        }
        Ok(recipients)
    }

    /// Parses without requiring any recipient (for editing the file).
    pub fn parse(path: &Path, text: String) -> Result<Self, SecretsError> {
        let mut lines = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| SecretsError::RecipientLine {
                path: path.to_owned(),
                line: idx + 1,
                reason,
            };
            let (public_key, recipient): (String, Box<dyn age::Recipient + Send + Sync>) =
                if line.starts_with("age1") {
                    let r = line
                        .parse::<age::x25519::Recipient>()
                        .map_err(|e| bad(format!("not a valid age public key ({e})")))?;
                    (r.to_string(), Box::new(r))
                } else if line.starts_with("ssh-") {
                    let r = line.parse::<age::ssh::Recipient>().map_err(|e| {
                        bad(match e {
                            age::ssh::ParseRecipientKeyError::Unsupported(t) => {
                                format!("unsupported SSH key type `{t}` (use ssh-ed25519)")
                            }
                            _ => "not a valid SSH public key".to_string(),
                        })
                    })?;
                    (r.to_string(), Box::new(r))
                } else if line.starts_with("AGE-SECRET-KEY-") {
                    return Err(bad(
                        "this is a PRIVATE key: remove it from this file (and from git history) \
                         and add its public key instead"
                            .into(),
                    ));
                } else {
                    return Err(bad(
                        "expected an age public key (age1…) or an ssh-ed25519 public key".into(),
                    ));
                };
            lines.push(RecipientLine {
                line: idx + 1,
                public_key,
                recipient,
            });
        }
        Ok(Recipients {
            path: path.to_owned(),
            text,
            lines,
        })
    }

    pub(crate) fn as_age(&self) -> impl Iterator<Item = &dyn age::Recipient> {
        self.lines
            .iter()
            .map(|l| l.recipient.as_ref() as &dyn age::Recipient)
    }

    pub fn contains(&self, public_key: &str) -> bool {
        self.lines.iter().any(|l| l.public_key == public_key)
    }

    /// The file's text with `public_key` appended (with a comment line saying by whom),
    /// unchanged when already present.
    pub fn text_with(&self, public_key: &str, comment: &str) -> String {
        if self.contains(public_key) {
            return self.text.clone();
        }
        let mut text = self.text.clone();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("{ADDED_BY}{comment}\n{public_key}\n"));
        text
    }

    /// The file's text without the lines of `public_keys`, and without the `# added by
    /// cutover …` comment that cutover wrote above them.
    pub fn text_without(&self, public_keys: &[String]) -> String {
        let text_lines: Vec<&str> = self.text.lines().collect();
        let mut drop: Vec<usize> = Vec::new();
        for l in self
            .lines
            .iter()
            .filter(|l| public_keys.contains(&l.public_key))
        {
            drop.push(l.line);
            if l.line >= 2 && text_lines[l.line - 2].starts_with(ADDED_BY) {
                drop.push(l.line - 1);
            }
        }
        let mut out = String::new();
        for (idx, line) in text_lines.iter().enumerate() {
            if !drop.contains(&(idx + 1)) {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}
