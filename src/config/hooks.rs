//! `app.release` and `hooks:` in cutover.yml (issue #14): the commands a deploy runs around
//! itself. An [`Argv`] is always a list (no shell unless the user writes `[sh, -c, …]`), so
//! nothing cutover passes can be re-read by a shell. A hook is either that list, or a mapping
//! with the list under `command` plus the secret keys it asks for (`env`) and its own
//! `timeout`; nothing secret reaches a hook it did not name.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use super::scalars::{check_env_key, deserialize_positive_dur, Dur};

/// A command as a list: a program and its arguments, never re-read by a shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Argv(pub Vec<String>);

impl<'de> Deserialize<'de> for Argv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Argv;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command as a list, e.g. [bin/migrate, --yes] or [sh, -c, '…']")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Argv, A::Error> {
                let mut words = Vec::new();
                while let Some(word) = seq.next_element::<String>()? {
                    words.push(word);
                }
                if words.first().is_none_or(|w| w.trim().is_empty()) {
                    return Err(de::Error::custom(
                        "the command is empty (expected a program first, e.g. [bin/migrate])",
                    ));
                }
                Ok(Argv(words))
            }
        }
        d.deserialize_seq(V)
    }
}

/// `hooks:`: commands cutover runs where it runs the deploy (this machine, or the box with
/// `--host`), never inside a container.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Before anything changes; a failure aborts the deploy.
    #[serde(default)]
    pub pre_deploy: Option<Hook>,
    /// After a successful deploy; a failure is reported, the deploy stays a success.
    #[serde(default)]
    pub post_deploy: Option<Hook>,
    /// After a failed deploy; a failure is reported beside the deploy's own.
    #[serde(default)]
    pub on_failure: Option<Hook>,
    /// The bound of every hook without its own `timeout`.
    #[serde(
        default = "default_hook_timeout",
        deserialize_with = "deserialize_positive_dur"
    )]
    pub timeout: Dur,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            pre_deploy: None,
            post_deploy: None,
            on_failure: None,
            timeout: default_hook_timeout(),
        }
    }
}

impl Hooks {
    pub fn is_unset(&self) -> bool {
        self.pre_deploy.is_none() && self.post_deploy.is_none() && self.on_failure.is_none()
    }

    /// The hook's own timeout, else `hooks.timeout`.
    pub fn timeout_of(&self, hook: &Hook) -> Duration {
        hook.timeout.unwrap_or(self.timeout).get()
    }
}

/// One hook: its command, the secret keys it asks for, its bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hook {
    pub command: Argv,
    /// Keys of the decrypted secrets this hook gets in its environment (nothing else secret).
    pub env: Vec<String>,
    pub timeout: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HookSpec {
    command: Argv,
    #[serde(default, deserialize_with = "deserialize_env_keys")]
    env: Vec<String>,
    #[serde(default, deserialize_with = "deserialize_some_positive_dur")]
    timeout: Option<Dur>,
}

impl<'de> Deserialize<'de> for Hook {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than an untagged enum, which would lose the line of a bad entry.
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Hook;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command as a list, or a mapping with `command`, `env` and `timeout`")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Hook, A::Error> {
                let command = Argv::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Hook {
                    command,
                    env: Vec::new(),
                    timeout: None,
                })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Hook, A::Error> {
                let spec = HookSpec::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Hook {
                    command: spec.command,
                    env: spec.env,
                    timeout: spec.timeout,
                })
            }
        }
        d.deserialize_any(V)
    }
}

fn deserialize_env_keys<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let keys = Vec::<String>::deserialize(d)?;
    for key in &keys {
        check_env_key(key).map_err(de::Error::custom)?;
    }
    Ok(keys)
}

fn deserialize_some_positive_dur<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Dur>, D::Error> {
    deserialize_positive_dur(d).map(Some)
}

fn default_hook_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

/// `app.release_timeout` when not set: long enough for a real migration, short enough that
/// a hung one does not hold the deploy lock for good.
pub fn default_release_timeout() -> Dur {
    Dur(Duration::from_secs(600))
}
