//! Encrypted secrets files on disk: naming, encrypt/decrypt, atomic replacement and rekey.
//!
//! Files are `secrets/<name>.env.age`, ASCII-armored so they diff and review sanely in git,
//! and readable by the `age` CLI. Every write goes to a temp file in the same directory and is
//! renamed over the target, so a crash leaves the old file or the new one, never half of
//! either; the result is 0644 because ciphertext is meant to be committed. Decrypted text is
//! held in `SecretString`s and never written here.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::dotenv::{self, Entry};
use super::keys::{Identities, Recipients};
use super::SecretsError;

const ARMOR_BEGIN: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";
const BINARY_MAGIC: &[u8] = b"age-encryption.org/";

pub fn secrets_dir(project: &Path) -> PathBuf {
    project.join("secrets")
}

pub fn recipients_path(project: &Path) -> PathBuf {
    secrets_dir(project).join("recipients.txt")
}

/// Names become file names and error messages: keep them plain.
pub fn validate_name(name: &str) -> Result<(), SecretsError> {
    let ok = !name.is_empty()
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(SecretsError::InvalidName {
            name: name.to_string(),
        })
    }
}

/// `prod` → `<project>/secrets/prod.env.age`; the file's own name, `prod.env.age`, means
/// the same. Something that looks like a path (has a `/`, or ends in `.age` but not
/// `.env.age`) is taken as one, relative to the project.
pub fn secret_path(project: &Path, name: &str) -> Result<PathBuf, SecretsError> {
    if let Some(stem) = name
        .strip_suffix(".env.age")
        .filter(|_| !name.contains('/'))
    {
        validate_name(stem)?;
        return Ok(secrets_dir(project).join(name));
    }
    if name.contains('/') || name.ends_with(".age") {
        return Ok(project.join(name));
    }
    validate_name(name)?;
    Ok(secrets_dir(project).join(format!("{name}.env.age")))
}

/// Every `secrets/*.env.age`, sorted so rekey output and errors are stable.
pub fn list_secret_files(project: &Path) -> Result<Vec<PathBuf>, SecretsError> {
    let dir = secrets_dir(project);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(SecretsError::io("list", &dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| SecretsError::io("list", &dir, e))?.path();
        let is_secret = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".env.age"));
        if is_secret && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A decrypted secrets file: the exact text (for `show`, `edit`) and its entries.
pub struct Decrypted {
    pub text: SecretString,
    pub entries: Vec<Entry>,
}

/// True for both armored and binary age files (the `age` CLI writes binary without `-a`).
pub fn looks_like_age(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    bytes.starts_with(ARMOR_BEGIN) || bytes.starts_with(BINARY_MAGIC)
}

/// True for bytes that are not age but read as a dotenv file (a `KEY=` line), telling a
/// plaintext secrets file apart from random junk without ever printing either.
pub fn looks_like_plaintext_dotenv(bytes: &[u8]) -> bool {
    !looks_like_age(bytes)
        && std::str::from_utf8(bytes).is_ok_and(|t| {
            t.lines().map(str::trim).any(|l| {
                l.split_once('=').is_some_and(|(k, _)| {
                    dotenv::is_valid_key(k.trim_start_matches("export ").trim())
                })
            })
        })
}

/// Reads and decrypts `path`, then parses it.
pub fn decrypt_file(path: &Path, identities: &Identities) -> Result<Decrypted, SecretsError> {
    decrypt_bytes(&read_file(path)?, path, identities)
}

/// A secrets file's bytes (ciphertext), a missing file named as such.
pub fn read_file(path: &Path) -> Result<Vec<u8>, SecretsError> {
    fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SecretsError::SecretNotFound {
                path: path.to_owned(),
            }
        } else {
            SecretsError::io("read", path, e)
        }
    })
}

/// Decrypts and parses a secrets file's bytes; `path` only names it in errors.
pub fn decrypt_bytes(
    bytes: &[u8],
    path: &Path,
    identities: &Identities,
) -> Result<Decrypted, SecretsError> {
    if !looks_like_age(bytes) {
        return Err(if looks_like_plaintext_dotenv(bytes) {
            SecretsError::PlaintextFile {
                path: path.to_owned(),
            }
        } else {
            SecretsError::NotAgeFile {
                path: path.to_owned(),
            }
        });
    }
    let corrupt = |reason: String| SecretsError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let decryptor = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(bytes))
        .map_err(|e| corrupt(describe_decrypt_error(&e)))?;
    let mut reader = decryptor
        .decrypt(identities.as_age())
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => SecretsError::WrongIdentity {
                path: path.to_owned(),
                source_name: identities.source().to_string(),
                public_keys: identities.public_keys().to_vec(),
            },
            other => corrupt(describe_decrypt_error(&other)),
        })?;
    let mut plain = Zeroizing::new(Vec::new());
    reader.read_to_end(&mut plain).map_err(|e| {
        corrupt(format!(
            "the encrypted payload is truncated or was modified ({e})"
        ))
    })?;
    let label = path.display().to_string();
    let entries = dotenv::parse_bytes(&plain, &label)?;
    // parse_bytes succeeded, so this is valid UTF-8.
    let text = SecretString::from(String::from_utf8_lossy(&plain).into_owned());
    Ok(Decrypted { text, entries })
}

fn describe_decrypt_error(e: &age::DecryptError) -> String {
    match e {
        age::DecryptError::InvalidHeader | age::DecryptError::Io(_) => {
            format!("the file is truncated or its header is damaged ({e})")
        }
        age::DecryptError::InvalidMac | age::DecryptError::DecryptionFailed => {
            format!("the file was modified after it was encrypted ({e})")
        }
        age::DecryptError::UnknownFormat => format!("unknown age format version ({e})"),
        other => other.to_string(),
    }
}

/// Encrypts `plaintext` to every recipient, ASCII-armored.
pub fn encrypt(plaintext: &[u8], recipients: &Recipients) -> Result<Vec<u8>, SecretsError> {
    let fail = |e: &dyn std::fmt::Display| SecretsError::Encrypt {
        path: recipients.path.clone(),
        reason: e.to_string(),
    };
    let encryptor = age::Encryptor::with_recipients(recipients.as_age()).map_err(|e| fail(&e))?;
    let mut out = Vec::with_capacity(plaintext.len() * 4 / 3 + 512);
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(|e| fail(&e))?;
    let mut writer = encryptor.wrap_output(armor).map_err(|e| fail(&e))?;
    writer.write_all(plaintext).map_err(|e| fail(&e))?;
    writer
        .finish()
        .and_then(|armor| armor.finish())
        .map_err(|e| fail(&e))?;
    Ok(out)
}

/// Encrypts `text` after checking it parses, then proves the result decrypts with
/// `verify_with` to the same entries before anyone writes it.
pub fn seal(
    text: &SecretString,
    label: &str,
    recipients: &Recipients,
    verify_with: Option<&Identities>,
    path: &Path,
) -> Result<Vec<u8>, SecretsError> {
    let entries = dotenv::parse(text.expose_secret(), label)?;
    let ciphertext = encrypt(text.expose_secret().as_bytes(), recipients)?;
    if let Some(identities) = verify_with {
        let check = decrypt_bytes(&ciphertext, path, identities).map_err(|e| match e {
            SecretsError::WrongIdentity { .. } => SecretsError::WouldLockOut {
                path: path.to_owned(),
                source_name: identities.source().to_string(),
                recipients: recipients.path.clone(),
            },
            other => other,
        })?;
        let same =
            check.entries.len() == entries.len()
                && check.entries.iter().zip(&entries).all(|(a, b)| {
                    a.key == b.key && a.value.expose_secret() == b.value.expose_secret()
                });
        if !same {
            return Err(SecretsError::Encrypt {
                path: path.to_owned(),
                reason: "the re-encrypted file does not decrypt to the same entries".into(),
            });
        }
    }
    Ok(ciphertext)
}

/// A replacement file written next to its target and not yet renamed over it.
pub struct Staged {
    tmp: tempfile::NamedTempFile,
    pub dest: PathBuf,
}

/// Writes `bytes` to a temp file in `dest`'s directory with `mode`, synced to disk.
pub fn stage(dest: &Path, bytes: &[u8], mode: u32) -> Result<Staged, SecretsError> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| SecretsError::io("create directory", dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".cutover-tmp-")
        .tempfile_in(dir)
        .map_err(|e| SecretsError::io("create temp file in", dir, e))?;
    tmp.write_all(bytes)
        .and_then(|_| {
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(mode))
        })
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| SecretsError::io("write", tmp.path(), e))?;
    Ok(Staged {
        tmp,
        dest: dest.to_owned(),
    })
}

impl Staged {
    /// Renames the temp file over the destination (atomic on one filesystem).
    pub fn commit(self) -> Result<PathBuf, SecretsError> {
        let dest = self.dest;
        self.tmp
            .persist(&dest)
            .map_err(|e| SecretsError::io("replace", &dest, e.error))?;
        if let Some(dir) = dest.parent() {
            // Make the rename itself durable; failure here is not worth failing the command.
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(dest)
    }
}

/// Writes `bytes` to `dest` atomically with `mode`.
pub fn write_atomic(dest: &Path, bytes: &[u8], mode: u32) -> Result<(), SecretsError> {
    stage(dest, bytes, mode)?.commit().map(|_| ())
}

/// Re-encrypts every secrets file to `recipients` with fresh file keys. Each file is
/// decrypted with `decrypt_with`, re-encrypted, and the new ciphertext is decrypted with
/// `verify_with` and compared before anything is replaced: all files are staged first, so a
/// failure on any file leaves every file as it was.
pub fn rekey_all(
    project: &Path,
    decrypt_with: &Identities,
    recipients: &Recipients,
    verify_with: &Identities,
) -> Result<Vec<Staged>, SecretsError> {
    let mut staged = Vec::new();
    for path in list_secret_files(project)? {
        let plain = decrypt_file(&path, decrypt_with)?;
        let label = path.display().to_string();
        let ciphertext = seal(&plain.text, &label, recipients, Some(verify_with), &path)?;
        staged.push(stage(&path, &ciphertext, 0o644)?);
    }
    Ok(staged)
}
