//! The `--json` contract's failure half: a command that promised one JSON document on
//! stdout and fails before printing it prints this one instead,
//! `{"schema":N,"result":"failed","error":{"kind":…,"message":…}}` (N: the command's
//! document's version, [`Document::version`]), so a script (the CI
//! job summary) reads why instead of finding nothing. `kind` is what a script branches on;
//! `message` is the error chain a person reads (it never holds a secret value: no error
//! does). docs/json/failure.schema.json describes it; the tests validate real failures.

use serde::Serialize;

use crate::cli::{Command, MaintenanceCommand, SecretsCommand, TlsCommand};

/// The `--json` documents, each with its own shape and version (`schema`): a change that
/// breaks a reader of one bumps that one's version only, and its failure document carries the
/// same version, so a script checks one number per command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    /// `deploy` and `rollback` (docs/json/deploy.schema.json).
    Deploy,
    Status,
    History,
    Prune,
    Bootstrap,
    Demo,
    Tls,
    Maintenance,
    /// `secrets show` (docs/json/secrets-show.schema.json).
    SecretsShow,
    /// `secrets restore` (docs/json/secrets-restore.schema.json).
    SecretsRestore,
}

impl Document {
    /// This document's `schema`. Deploy 2: `plan` holds objects (`step`, `detail`), not lines;
    /// `result` and `time` on success, `reason` on failure, as in history. History 2: an
    /// object (`schema`, `entries`), not a bare array, with `switch_ms` in its entries.
    /// Secrets show 2: an object (`schema`, `file`, then `values` or, with `--keys`, `keys`),
    /// not a bare map or array.
    pub fn version(self) -> u32 {
        match self {
            Document::Deploy | Document::History | Document::SecretsShow => 2,
            _ => 1,
        }
    }
}

/// Which document `command` was asked for with `--json`, if it was.
pub fn wants_json(command: &Command) -> Option<Document> {
    let (json, doc) = match command {
        Command::Deploy(a) => (a.common.json, Document::Deploy),
        Command::Rollback(a) => (a.common.json, Document::Deploy),
        Command::Status(a) => (a.json, Document::Status),
        Command::History(a) => (a.json, Document::History),
        Command::Prune(a) => (a.json, Document::Prune),
        Command::Bootstrap(a) => (a.json, Document::Bootstrap),
        Command::Demo(a) => (a.json, Document::Demo),
        Command::Tls(TlsCommand::Issue(a)) => (a.json, Document::Tls),
        Command::Maintenance(MaintenanceCommand::On(a)) => (a.common.json, Document::Maintenance),
        Command::Maintenance(MaintenanceCommand::Off(a)) => (a.common.json, Document::Maintenance),
        Command::Secrets(SecretsCommand::Show { json, .. }) => (*json, Document::SecretsShow),
        Command::Secrets(SecretsCommand::Restore { json, .. }) => (*json, Document::SecretsRestore),
        _ => return None,
    };
    json.then_some(doc)
}

/// A command's own document with its version (`schema`) beside its fields.
#[derive(Serialize)]
pub struct Versioned<'a, T: Serialize> {
    schema: u32,
    #[serde(flatten)]
    document: &'a T,
}

/// `document` (a struct: its fields) with `"schema"` added.
pub fn versioned<T: Serialize>(kind: Document, document: &T) -> Versioned<'_, T> {
    Versioned {
        schema: kind.version(),
        document,
    }
}

/// What went wrong, for a script to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// cutover.yml is missing or invalid.
    Config,
    /// No identity, or one that cannot decrypt the secrets.
    Identity,
    /// Another secrets problem (a file, a key, recipients).
    Secrets,
    /// The deploy lock is held by another deploy.
    Lock,
    /// The box could not be reached over SSH, or refused us.
    Ssh,
    /// A deploy (or rollback) that started and failed; what was undone is in the message.
    Deploy,
    /// Anything else.
    Other,
}

/// Sorts `err` by the typed errors in its chain (and the config loader's context).
pub fn kind(err: &anyhow::Error) -> Kind {
    use crate::secrets::SecretsError as S;
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<S>() {
            return match e {
                S::NoIdentity { .. }
                | S::IdentityNotFound { .. }
                | S::IdentityPermissions { .. }
                | S::InvalidIdentity { .. }
                | S::WrongIdentity { .. } => Kind::Identity,
                _ => Kind::Secrets,
            };
        }
        if cause.downcast_ref::<crate::state::LockError>().is_some() {
            return Kind::Lock;
        }
        if cause
            .downcast_ref::<crate::remote::ssh::SshError>()
            .is_some()
        {
            return Kind::Ssh;
        }
        if cause
            .downcast_ref::<crate::engine::failure::Failed>()
            .is_some()
        {
            return Kind::Deploy;
        }
    }
    // Typed, not the message's text: a caller's context in front (`cannot restore the secret
    // files of …: invalid config …`) once made a config error `other`. (A context value is
    // not a link of `chain()`; anyhow's own downcast looks through every context layer.)
    if err.downcast_ref::<crate::config::ConfigError>().is_some() {
        return Kind::Config;
    }
    Kind::Other
}

/// The failure document for `err`, in `doc`'s version.
pub fn document(doc: Document, err: &anyhow::Error) -> serde_json::Value {
    serde_json::json!({
        "schema": doc.version(),
        "result": "failed",
        "error": { "kind": kind(err), "message": format!("{err:#}") },
    })
}

/// Prints the failure document, unless the command already printed its own.
pub fn print_unless_printed(doc: Document, err: &anyhow::Error) {
    if crate::report::stdout_written() {
        return;
    }
    let _ = outln!("{}", document(doc, err));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_typed_errors_in_the_chain() {
        let lock = anyhow::Error::new(crate::state::LockError::Held {
            holder: "ci".into(),
            path: "/x/lock".into(),
        })
        .context("cannot deploy");
        assert_eq!(kind(&lock), Kind::Lock);
        let ssh = anyhow::Error::new(crate::remote::ssh::SshError("refused".into()));
        assert_eq!(kind(&ssh), Kind::Ssh);
        let missing =
            anyhow::Error::new(crate::secrets::SecretsError::NoIdentity { default: None });
        assert_eq!(kind(&missing), Kind::Identity);
        assert_eq!(kind(&anyhow::anyhow!("something else")), Kind::Other);
        // A config error is `config` under a caller's context too, and text that merely
        // reads like one is not.
        let config = anyhow::anyhow!("app.image: bad")
            .context(crate::config::ConfigError::Invalid("cutover.yml".into()))
            .context("cannot restore the secret files of cutover.yml");
        assert_eq!(kind(&config), Kind::Config);
        assert_eq!(kind(&anyhow::anyhow!("invalid config x: y")), Kind::Other);
        let doc = document(Document::Deploy, &lock);
        assert_eq!(doc["schema"], 2);
        assert_eq!(document(Document::Status, &lock)["schema"], 1);
        assert_eq!(doc["error"]["kind"], "lock");
        assert!(doc["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("cannot deploy: another deploy is running: ci"));
    }
}
