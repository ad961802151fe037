//! `cutover secrets …`: turns each subcommand into calls on `crate::secrets` and decides what
//! is printed. Results (a public key, a decrypted file, JSON) go to stdout; progress lines go
//! to stderr and are silenced by `-q`. Nothing here prints a secret value except `show`,
//! whose whole point is to print it, on explicit request.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::cli::SecretsCommand;
use crate::context::Context;
use crate::process::Cmd;
use crate::report::Verbosity;
use crate::secrets::{self, edit, keys, store, SecretsError};

pub fn run(ctx: &Context, command: SecretsCommand) -> anyhow::Result<ExitCode> {
    let say = |line: &str| {
        if ctx.verbosity != Verbosity::Quiet {
            eprintln!("{line}");
        }
    };
    match command {
        SecretsCommand::Keygen { out, add, force } => keygen(ctx, out, add, force, &say),
        SecretsCommand::Encrypt {
            file,
            name,
            rm,
            force,
        } => encrypt(ctx, &file, name, rm, force, &say),
        SecretsCommand::Show { name, keys, json } => show(ctx, &name, keys, json),
        SecretsCommand::Edit { name, create } => edit(ctx, &name, create, &say),
        SecretsCommand::Set {
            name,
            key,
            create,
            generate,
        } => set(ctx, &name, &key, generate, create, &say),
        SecretsCommand::Unset { name, key } => {
            let identities = identity(ctx)?;
            let path = secrets::unset_key(&ctx.dir, &name, &key, &identities)
                .with_context(|| format!("failed to unset {key} in secrets `{name}`"))?;
            say(&format!("removed {key} from {}", rel(ctx, &path)));
            Ok(ExitCode::SUCCESS)
        }
        SecretsCommand::Rekey => {
            let identities = identity(ctx)?;
            let (kept, _lock) = kept_copies(ctx, "secrets rekey")?;
            let rekeyed = secrets::rekey(&ctx.dir, &identities, &kept)
                .context("failed to rekey; no secrets file was changed")?;
            for file in rekeyed.files.iter().chain(&rekeyed.kept) {
                say(&format!("rekeyed {}", rel(ctx, file)));
            }
            let recipients = keys::Recipients::load(&store::recipients_path(&ctx.dir))?;
            say(&format!(
                "{} file(s) re-encrypted to {} recipient(s) with fresh file keys{}",
                rekeyed.files.len(),
                recipients.lines.len(),
                kept_note(rekeyed.kept.len())
            ));
            Ok(ExitCode::SUCCESS)
        }
        SecretsCommand::RotateIdentity { out } => rotate_identity(ctx, out, &say),
        SecretsCommand::Exec { names, command } => exec(ctx, &names, &command),
        SecretsCommand::Restore { all, dry_run, json } => {
            super::secrets_restore::run(ctx, all, dry_run, json)
        }
    }
}

fn encrypt(
    ctx: &Context,
    file: &std::path::Path,
    name: Option<String>,
    rm: bool,
    force: bool,
    say: &dyn Fn(&str),
) -> anyhow::Result<ExitCode> {
    let name = match name {
        Some(name) => name,
        None => secrets::default_name(file).with_context(|| {
            format!(
                "cannot derive a secrets name from {}; pass --name NAME",
                file.display()
            )
        })?,
    };
    let (dest, count) = secrets::encrypt_file(&ctx.dir, file, &name, force)
        .with_context(|| format!("failed to encrypt {}", file.display()))?;
    say(&format!(
        "encrypted {} ({}) to {}",
        file.display(),
        crate::report::count(count, "key"),
        rel(ctx, &dest)
    ));
    if rm {
        std::fs::remove_file(file)
            .with_context(|| format!("failed to remove {}", file.display()))?;
        say(&format!("removed the plaintext {}", file.display()));
    }
    list_for_the_app(ctx, &dest, say);
    Ok(ExitCode::SUCCESS)
}

/// A new secrets file that no service lists reaches no container: add it to `app.secrets`
/// when the config writes that key as an inline list (as `init` does), checked by loading
/// the result (else the old text stays); otherwise say which line to add. Best effort: the
/// file itself is written either way, and a project without a valid config is left alone.
fn list_for_the_app(ctx: &Context, secret: &Path, say: &dyn Fn(&str)) {
    let Ok(loaded) = crate::config::load(&ctx.config_path, &ctx.dir) else {
        return;
    };
    let Some(name) = secret.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let file = format!("secrets/{name}");
    if !crate::config::unlisted_secrets(&loaded).contains(&file) {
        return;
    }
    let Ok(text) = std::fs::read_to_string(&loaded.path) else {
        return;
    };
    let written = crate::config::with_app_secret(&text, &file).is_some_and(|new| {
        let mode = std::fs::metadata(&loaded.path).map_or(0o644, |m| {
            std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777
        });
        crate::atomic::write(&loaded.path, new.as_bytes(), mode).is_ok()
            && match crate::config::load(&ctx.config_path, &ctx.dir) {
                Ok(_) => true,
                Err(_) => {
                    let _ = crate::atomic::write(&loaded.path, text.as_bytes(), mode);
                    false
                }
            }
    });
    if written {
        say(&format!(
            "listed {file} in app.secrets in {}: the app gets its keys at the next deploy",
            rel(ctx, &loaded.path)
        ));
    } else {
        say(&format!(
            "note: {}",
            crate::config::unlisted_warning(&loaded, &file)
        ));
    }
}

fn set(
    ctx: &Context,
    name: &str,
    key: &str,
    generate: Option<usize>,
    create: bool,
    say: &dyn Fn(&str),
) -> anyhow::Result<ExitCode> {
    let identities = identity(ctx)?;
    let (value, dropped) = match generate {
        Some(0) => bail!("--generate needs a length of at least 1"),
        Some(n) => (generated(n), None),
        None => read_value_from_stdin(key)?,
    };
    let outcome = secrets::set_key(&ctx.dir, name, key, &value, &identities, create)
        .with_context(|| format!("failed to set {key} in secrets `{name}`"))?;
    let what = match (outcome.created_file, outcome.replaced) {
        (true, _) => "created",
        (false, true) => "replaced",
        (false, false) => "added",
    };
    let how = match generate {
        Some(n) => format!(" (generated, {n} characters)"),
        None => String::new(),
    };
    if outcome.created_file {
        list_for_the_app(ctx, &outcome.path, say);
    }
    let verb = if outcome.created_file { "set" } else { what };
    say(&format!(
        "{verb} {key}{how} in {}{}",
        rel(ctx, &outcome.path),
        if outcome.created_file {
            " (new file)"
        } else {
            ""
        }
    ));
    if let Some(ending) = dropped {
        say(&format!(
            "note: the value is stdin without the one trailing {ending} it ended with (what echo adds); send one more to keep a value that ends in a newline"
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// `secrets rotate-identity`: the new public key on stdout, what changed on stderr.
fn rotate_identity(
    ctx: &Context,
    out: Option<std::path::PathBuf>,
    say: &dyn Fn(&str),
) -> anyhow::Result<ExitCode> {
    let old = identity(ctx)?;
    let out = match out {
        Some(out) => out,
        None => default_identity_path()?,
    };
    let (kept, _lock) = kept_copies(ctx, "secrets rotate-identity")?;
    let rotation = secrets::rotate_identity(&ctx.dir, &old, &out, &kept)
        .context("failed to rotate the identity; nothing was changed")?;
    say(&format!(
        "wrote the new identity to {} (0600)",
        rotation.identity_path.display()
    ));
    if let Some(backup) = &rotation.old_identity_backup {
        say(&format!(
            "kept the old identity as {} (it still reads files in git history; delete \
             it when you no longer need them)",
            backup.display()
        ));
    }
    for file in rotation.files.iter().chain(&rotation.kept) {
        say(&format!("rekeyed {}", rel(ctx, file)));
    }
    for key in &rotation.retired {
        say(&format!("retired recipient {key}"));
    }
    outln!("{}", rotation.new_public_key)?;
    Ok(ExitCode::SUCCESS)
}

/// The deployed ciphertext (`secrets::deployed`) a rekey re-encrypts with the store, and the
/// deploy lock held while it does: a deploy or rollback meanwhile moves and rewrites those
/// copies, and one rewritten under a rekey would be lost or left to the old key. No config
/// and no `.cutover/`: nothing deployed here. A config that does not load is an error, since
/// it says where the copies are.
fn kept_copies(
    ctx: &Context,
    action: &str,
) -> anyhow::Result<(Vec<PathBuf>, Option<crate::state::DeployLock>)> {
    let state_dir = if ctx.config_path.exists() {
        crate::config::load(&ctx.config_path, &ctx.dir)
            .context("cannot tell where the deployed ciphertext is kept, which is re-encrypted with the secrets files; nothing was changed")?
            .state_dir()
    } else {
        ctx.dir.join(".cutover")
    };
    if !state_dir.join(secrets::deployed::DIR).exists() {
        return Ok((Vec::new(), None));
    }
    let lock = crate::engine::record::lock(
        &crate::state::StateDir::new(&state_dir),
        std::time::Duration::ZERO,
        action.to_string(),
    )
    .context("the deployed ciphertext is re-encrypted under the deploy lock; run this again once the deploy is done. Nothing was changed")?;
    let kept = secrets::deployed::all(&state_dir).context("nothing was changed")?;
    Ok((kept, Some(lock)))
}

/// The tail of rekey's summary: how many kept copies went with the files.
fn kept_note(count: usize) -> String {
    match count {
        0 => String::new(),
        1 => ", and 1 kept copy of the ciphertext a service was deployed with".into(),
        n => format!(", and {n} kept copies of the ciphertext services were deployed with"),
    }
}

fn identity(ctx: &Context) -> anyhow::Result<secrets::Identities> {
    Ok(secrets::resolve_identity(ctx.identity.as_deref())?)
}

fn default_identity_path() -> anyhow::Result<PathBuf> {
    keys::default_identity_path()
        .context("cannot find a per-user config directory (HOME is unset); pass --out PATH")
}

/// A path as the user would type it from the project directory.
fn rel(ctx: &Context, path: &Path) -> String {
    path.strip_prefix(&ctx.dir)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn keygen(
    ctx: &Context,
    out: Option<PathBuf>,
    add: bool,
    force: bool,
    say: &dyn Fn(&str),
) -> anyhow::Result<ExitCode> {
    let out = match out {
        Some(out) => out,
        None => default_identity_path()?,
    };
    let recipients_path = store::recipients_path(&ctx.dir);
    // Validate recipients.txt before writing the key, so --add cannot fail half-way.
    let recipients = if add {
        let text = match std::fs::read_to_string(&recipients_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("failed to read {}", rel(ctx, &recipients_path)))
            }
        };
        Some(keys::Recipients::parse(&recipients_path, text)?)
    } else {
        None
    };
    // A second project on the same laptop: its identity already exists, so --add makes that
    // identity a recipient here and keeps it; only --force ever replaces a key.
    let existing = if out.exists() {
        Some(secrets::Identities::from_file(&out)?)
    } else {
        None
    };
    let public_key = match (&existing, add, force) {
        (Some(identity), true, false) => {
            let key = identity
                .public_keys()
                .first()
                .cloned()
                .with_context(|| format!("the identity file {} holds no key", out.display()))?;
            say(&format!(
                "kept the existing identity {} (only --force replaces it)",
                out.display()
            ));
            key
        }
        _ => {
            if let (Some(identity), true) = (&existing, force) {
                say(&format!(
                    "replacing {}: its key {} is lost, and a file encrypted only to it can \
                     no longer be decrypted",
                    out.display(),
                    identity.public_keys().join(", ")
                ));
            }
            let new = keys::NewIdentity::generate();
            keys::write_identity_file(&out, &new.file_text, force)
                .with_context(|| format!("failed to write the identity to {}", out.display()))?;
            say(&format!("wrote a new identity to {} (0600)", out.display()));
            new.public_key
        }
    };
    if let Some(recipients) = recipients {
        if recipients.contains(&public_key) {
            say(&format!(
                "the public key is already in {}",
                rel(ctx, &recipients_path)
            ));
            outln!("{public_key}")?;
            return Ok(ExitCode::SUCCESS);
        }
        let text = recipients.text_with(&public_key, "`cutover secrets keygen --add`");
        store::write_atomic(&recipients_path, text.as_bytes(), 0o644)
            .with_context(|| format!("failed to update {}", rel(ctx, &recipients_path)))?;
        say(&format!(
            "added the public key to {}; run `cutover secrets rekey` so existing files include it",
            rel(ctx, &recipients_path)
        ));
    }
    outln!("{public_key}")?;
    Ok(ExitCode::SUCCESS)
}

fn show(ctx: &Context, name: &str, keys_only: bool, json: bool) -> anyhow::Result<ExitCode> {
    let identities = identity(ctx)?;
    let path = store::secret_path(&ctx.dir, name)?;
    let decrypted = store::decrypt_file(&path, &identities)
        .with_context(|| format!("failed to read secrets `{name}`"))?;
    let mut stdout = crate::report::stdout();
    match (keys_only, json) {
        (true, false) => {
            for entry in &decrypted.entries {
                writeln!(stdout, "{}", entry.key)?;
            }
        }
        (true, true) => {
            let keys: Vec<&str> = decrypted.entries.iter().map(|e| e.key.as_str()).collect();
            let doc = serde_json::json!({ "file": rel(ctx, &path), "keys": keys });
            writeln!(stdout, "{}", show_document(&doc)?)?;
        }
        (false, false) => stdout.write_all(decrypted.text.expose_secret().as_bytes())?,
        (false, true) => {
            let map: serde_json::Map<String, serde_json::Value> = decrypted
                .entries
                .iter()
                .map(|e| (e.key.clone(), e.value.expose_secret().into()))
                .collect();
            let doc = serde_json::json!({ "file": rel(ctx, &path), "values": map });
            let text = Zeroizing::new(show_document(&doc)?);
            writeln!(stdout, "{}", text.as_str())?;
        }
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `secrets show --json`'s document (docs/json/secrets-show.schema.json): `doc`'s fields with
/// its version.
fn show_document(doc: &serde_json::Value) -> anyhow::Result<String> {
    let doc = super::failure::versioned(super::failure::Document::SecretsShow, doc);
    Ok(serde_json::to_string_pretty(&doc)?)
}

fn edit(ctx: &Context, name: &str, create: bool, say: &dyn Fn(&str)) -> anyhow::Result<ExitCode> {
    let identities = identity(ctx)?;
    let existed = store::secret_path(&ctx.dir, name).is_ok_and(|p| p.exists());
    let editor = edit::editor_command();
    let report = secrets::edit_secret(&ctx.dir, name, &identities, create, |path| {
        let cmd = Cmd::new(&editor[0], "run the editor")
            .args(&editor[1..])
            .arg(path);
        let target = store::secret_path(&ctx.dir, name).unwrap_or_default();
        match cmd.run_interactive() {
            Ok(Some(0)) => Ok(()),
            Ok(code) => Err(SecretsError::EditorStatus {
                path: target,
                status: code.map_or("a signal".into(), |c| format!("exit code {c}")),
            }),
            Err(source) => Err(SecretsError::Editor {
                path: target,
                source,
            }),
        }
    })
    .with_context(|| format!("failed to edit secrets `{name}`"))?;
    if !report.on_tmpfs {
        say(
            "warning: no tmpfs was available, so the plaintext sat in a 0600 file under the \
             temp directory while the editor ran (it has been removed)",
        );
    }
    match report.outcome {
        edit::Outcome::Unchanged => say(&format!(
            "no changes; {} left as it was",
            rel(ctx, &report.path)
        )),
        edit::Outcome::Changed {
            added,
            removed,
            changed,
            ..
        } => {
            let mut parts = Vec::new();
            for (label, keys) in [("added", added), ("changed", changed), ("removed", removed)] {
                if !keys.is_empty() {
                    parts.push(format!("{label} {}", keys.join(", ")));
                }
            }
            if parts.is_empty() {
                parts.push("comments or layout only".into());
            }
            say(&format!(
                "updated {}: {}",
                rel(ctx, &report.path),
                parts.join("; ")
            ));
        }
    }
    if !existed && report.path.exists() {
        list_for_the_app(ctx, &report.path, say);
    }
    Ok(ExitCode::SUCCESS)
}

fn generated(len: usize) -> SecretString {
    use rand::distributions::{Alphanumeric, DistString};
    SecretString::from(Alphanumeric.sample_string(&mut rand::rngs::OsRng, len))
}

/// The value comes from stdin so it never shows up in `ps`, shell history or audit logs.
/// Exactly one trailing newline (`\n` or `\r\n`, what `echo` and a terminal add) is dropped,
/// and which one is returned so the caller says so: a value that must end in a newline is
/// sent with one more.
fn read_value_from_stdin(key: &str) -> anyhow::Result<(SecretString, Option<&'static str>)> {
    let mut stdin = std::io::stdin().lock();
    if stdin.is_terminal() {
        eprintln!("enter the value for {key}, then press Ctrl-D (the input is echoed)");
    }
    let mut bytes = Zeroizing::new(Vec::new());
    stdin
        .read_to_end(&mut bytes)
        .context("failed to read the value from stdin")?;
    let mut dropped = None;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        dropped = Some("newline");
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
            dropped = Some("CRLF");
        }
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| anyhow::anyhow!("the value for {key} on stdin is not valid UTF-8"))?;
    Ok((SecretString::from(text.to_string()), dropped))
}

fn exec(ctx: &Context, names: &[String], command: &[String]) -> anyhow::Result<ExitCode> {
    let identities = identity(ctx)?;
    let files = names
        .iter()
        .map(|name| store::secret_path(&ctx.dir, name))
        .collect::<Result<Vec<_>, _>>()?;
    let env = secrets::load_env(&files, &identities).context("failed to load secrets")?;
    secrets::check_env_sizes(env.iter()).context("cannot run the command with these secrets")?;
    // The child gets the decrypted variables, not the key that decrypts everything.
    let keep: Vec<std::ffi::OsString> = std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| k != keys::AGE_KEY_ENV && k != "CUTOVER_IDENTITY")
        .collect();
    let Some((program, args)) = command.split_first() else {
        bail!("no command given after `--`");
    };
    let mut cmd = Cmd::new(program, format!("run `{program}`"))
        .args(args)
        .env_clear_except(keep);
    for (key, value) in env.iter() {
        cmd = cmd.env(key, value.clone());
    }
    drop(env);
    Err(cmd.exec_replace().into())
}
