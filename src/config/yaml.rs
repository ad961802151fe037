//! YAML text → [`Config`], on serde-saphyr, with every error as `file:line:col: key.path: …`.
//!
//! Loading takes two passes over the (small) text, both with the same alias/size budget so a
//! "billion laughs" file is refused instead of expanded:
//!
//! 1. [`KeyIndex`] walks the whole document once, untyped. That surfaces syntax errors before
//!    any type error the streaming deserializer would otherwise hit first, finds duplicate keys
//!    (naming both lines) and records where every key path is written, so cross-key checks
//!    ([`super::validate`]) can point at a line without a hand-written line finder.
//! 2. Typed deserialization through `serde_path_to_error`, which supplies the key path while
//!    serde-saphyr supplies the location, including through `<<` merge keys and aliases.
//!
//! Top-level `x-*` keys are compose-style extension fields that hold anchors; they are skipped
//! by [`SkipExtensions`] so the structs can still refuse unknown keys.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess};
use serde::Deserialize;
use serde_saphyr::{
    DefaultMessageFormatter, DuplicateKeyPolicy, Error, Location, Locations, MessageFormatter as _,
    Options, Spanned, UserMessageFormatter,
};

use super::schema::Config;

/// Parses and validates config text; `file` is only used in messages.
pub(super) fn parse_config(text: &str, file: &Path) -> anyhow::Result<Config> {
    parse_config_with_warnings(text, file).map(|parsed| parsed.config)
}

/// A parsed config and what is said of its keys, each as `file:line:col: key: …`.
pub(super) struct Parsed {
    pub config: Config,
    /// [`Config::warnings`].
    pub warnings: Vec<String>,
    /// [`Config::compose_only`].
    pub compose_only: Vec<String>,
}

/// [`parse_config`], plus the located warnings and compose-only keys.
pub(super) fn parse_config_with_warnings(text: &str, file: &Path) -> anyhow::Result<Parsed> {
    let shown = file.display().to_string();
    let index = KeyIndex::build(text)
        .map_err(|e| anyhow!("{}", located(&shown, &e, None, None)))
        .context("the file is not valid YAML")?;
    let Some(index) = index else {
        bail!("{shown}: the file is empty (expected at least `project`, `app` and `colors`)");
    };
    let mut path = String::new();
    let config: Config =
        serde_saphyr::with_deserializer_from_str_with_options(text, options(), |de| {
            serde_path_to_error::deserialize(SkipExtensions(de)).map_err(|e| {
                path = e.path().to_string();
                e.into_inner()
            })
        })
        .map_err(|e| {
            // serde-saphyr places a missing top-level key wherever the walk stopped; the
            // mapping that lacks it starts at its first key.
            let root_missing = path == "." && matches!(e, Error::SerdeMissingField { .. });
            let at = root_missing.then(|| index.first_top_level()).flatten();
            anyhow!("{}", located(&shown, &e, Some(&path), at))
        })?;
    let locate = |e: &super::validate::Invalid| match index.get(&e.key) {
        Some((at, None)) => format!("{shown}:{at}: {}: {}", e.key, e.message),
        Some((at, Some(merge))) => format!(
            "{shown}:{at}: {}: {} (merged in by the `<<` at line {merge})",
            e.key, e.message
        ),
        None => format!("{shown}: {}: {}", e.key, e.message),
    };
    config.validate().map_err(|e| anyhow!("{}", locate(&e)))?;
    let warnings = config.warnings().iter().map(locate).collect();
    let compose_only = config.compose_only().iter().map(locate).collect();
    Ok(Parsed {
        config,
        warnings,
        compose_only,
    })
}

/// Checks that text is well-formed YAML (for rendered files), with the line of the problem.
pub(super) fn check(text: &str, name: &str) -> anyhow::Result<()> {
    serde_saphyr::from_str_with_options::<IgnoredAny>(text, options())
        .map(|_| ())
        .map_err(|e| anyhow!("{}", located(&name, &e, None, None)))
}

/// Limits far above any real config, far below what an alias bomb expands to.
fn options() -> Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_nodes: 20_000,
            max_events: 50_000,
            max_aliases: 1_000,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 10_000,
        },
        with_snippet: false,
    }
}

/// `file:line:col: key.path: message`, naming the alias or `<<` site too when the value came
/// through one.
fn located(
    file: &dyn fmt::Display,
    err: &Error,
    path: Option<&str>,
    at: Option<Location>,
) -> String {
    let (inner, through) = match err.without_snippet() {
        Error::AliasError {
            error, locations, ..
        } => (error.as_ref(), Some(*locations)),
        other => (other, None),
    };
    let mut out = file.to_string();
    let primary = at
        .or_else(|| through.map(|l| l.defined_location))
        .or_else(|| inner.location());
    if let Some(at) = primary.filter(|l| *l != Location::UNKNOWN) {
        out += &format!(":{}:{}", at.line(), at.column());
    }
    out += ": ";
    // serde_path_to_error writes `.` for the root and `?` for a key it could not name.
    if let Some(path) = path.filter(|p| !p.is_empty() && *p != "." && !p.contains('?')) {
        out += &format!("{path}: ");
    }
    out += &message(inner);
    if let Some(locs) = through.filter(|l| l.reference_location != l.defined_location) {
        let used = locs.reference_location;
        out += &format!(
            " (reached through the alias or `<<` merge at line {}, column {})",
            used.line(),
            used.column()
        );
    }
    out
}

fn message(err: &Error) -> String {
    match err {
        Error::Budget { breach, .. } => format!(
            "refusing a document that is this large or expands this far through aliases ({breach:?}); a \"billion laughs\" YAML bomb looks like this"
        ),
        Error::AliasReplayLimitExceeded { .. }
        | Error::AliasExpansionLimitExceeded { .. }
        | Error::AliasReplayStackDepthExceeded { .. } => format!(
            "refusing a document whose aliases expand past the limit ({}); a \"billion laughs\" YAML bomb looks like this",
            DefaultMessageFormatter.format_message(err)
        ),
        Error::MultipleDocuments { .. } => {
            "a second YAML document starts here (after a `---`); the file must hold exactly one".to_string()
        }
        Error::DuplicateMappingKey { key, .. } => match key {
            Some(key) => format!("duplicate key `{key}`"),
            None => "duplicate key".to_string(),
        },
        // serde-saphyr names parser events; say what the user writes instead.
        Error::Unexpected { expected, .. } => match *expected {
            "mapping start" => "expected a mapping of `key: value` entries".to_string(),
            "sequence start" => "expected a list (`[a, b]` or `- a` lines)".to_string(),
            "string scalar" | "scalar" => "expected a single value, not a list or mapping".to_string(),
            other => format!("expected {other}"),
        },
        other => UserMessageFormatter.format_message(other).into_owned(),
    }
}

/// Where each dotted key path (`app.health.timeout`, `accessories.db`) is written.
#[derive(Debug, Default)]
pub(super) struct KeyIndex(BTreeMap<String, Locations>);

impl KeyIndex {
    /// Walks the document once; `None` for a document with no content at all.
    fn build(text: &str) -> Result<Option<KeyIndex>, Error> {
        let mut index = KeyIndex::default();
        let mut duplicate = None;
        // Pass-through lets the walk see both entries of a duplicate key, so the error can
        // name both lines (serde-saphyr's own check names only the second).
        let mut options = options();
        options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
        let walked = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
            Walk {
                path: String::new(),
                index: &mut index,
                duplicate: &mut duplicate,
            }
            .deserialize(de)
        });
        match (walked, duplicate) {
            (_, Some(dup)) => Err(dup),
            (Err(Error::Eof { .. }), None) if !has_content(text) => Ok(None),
            (Err(e), None) => Err(e),
            (Ok(Shape::Empty), None) => Ok(None),
            (Ok(Shape::Content), None) => Ok(Some(index)),
        }
    }

    /// Where the top-level mapping's first key is written.
    fn first_top_level(&self) -> Option<Location> {
        self.0
            .iter()
            .filter(|(path, _)| !path.contains('.'))
            .map(|(_, locs)| locs.defined_location)
            .min_by_key(|l| (l.line(), l.column()))
    }

    /// `line:col` of a key path, and the line of the `<<` that brought it in, if one did.
    fn get(&self, key: &str) -> Option<(String, Option<u64>)> {
        let locs = self.0.get(key)?;
        let at = locs.defined_location;
        let merged = (locs.reference_location != at).then(|| locs.reference_location.line());
        Some((format!("{}:{}", at.line(), at.column()), merged))
    }
}

fn has_content(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim().trim_start_matches('\u{feff}');
        !line.is_empty() && !line.starts_with('#') && line != "---" && line != "..."
    })
}

enum Shape {
    Empty,
    Content,
}

/// One node of the untyped walk that fills a [`KeyIndex`].
struct Walk<'a> {
    path: String,
    index: &'a mut KeyIndex,
    duplicate: &'a mut Option<Error>,
}

impl Walk<'_> {
    fn child(&mut self, key: &str) -> Walk<'_> {
        let path = if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        };
        Walk {
            path,
            index: self.index,
            duplicate: self.duplicate,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = Shape;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Shape, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> de::Visitor<'de> for Walk<'_> {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Shape, A::Error> {
        let mut seen: BTreeMap<String, Location> = BTreeMap::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let name = key.value.0;
            if let Some(first) = seen.get(&name) {
                let again = key.referenced;
                *self.duplicate = Some(Error::Message {
                    msg: format!(
                        "duplicate key `{name}` (first at line {}, column {}; a mapping holds each key once)",
                        first.line(),
                        first.column()
                    ),
                    location: again,
                });
                return Err(de::Error::custom("duplicate key"));
            }
            seen.insert(name.clone(), key.referenced);
            let child = self.child(&name);
            let locs = Locations {
                reference_location: key.referenced,
                defined_location: key.defined,
            };
            child.index.0.entry(child.path.clone()).or_insert(locs);
            map.next_value_seed(child)?;
        }
        Ok(Shape::Content)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<Shape, A::Error> {
        let mut i = 0usize;
        while seq.next_element_seed(self.child(&i.to_string()))?.is_some() {
            i += 1;
        }
        Ok(Shape::Content)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Shape, E> {
        Ok(Shape::Empty)
    }
    fn visit_none<E: de::Error>(self) -> Result<Shape, E> {
        Ok(Shape::Empty)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Shape, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Content)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Content)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Content)
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Shape, E> {
        Ok(Shape::Content)
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Shape, E> {
        Ok(Shape::Content)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Content)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::Content)
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Shape, E> {
        Ok(Shape::Content)
    }
}

/// A mapping key as text, whatever scalar it is written as.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText("~".to_string()))
            }
        }
        // Asking for a string keeps a key such as `010` as written.
        d.deserialize_string(V)
    }
}

/// Skips top-level `x-*` keys (compose-style extension fields holding anchors) and forwards
/// everything else, so locations and unknown-key errors stay the deserializer's own.
struct SkipExtensions<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for SkipExtensions<D> {
    type Error = D::Error;

    fn deserialize_any<V: de::Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(v)
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.0
            .deserialize_struct(name, fields, SkipExtensionsVisitor(v))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

struct SkipExtensionsVisitor<V>(V);

impl<'de, V: de::Visitor<'de>> de::Visitor<'de> for SkipExtensionsVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.0.visit_map(SkipExtensionsMap(map))
    }
}

struct SkipExtensionsMap<A>(A);

impl<'de, A: MapAccess<'de>> MapAccess<'de> for SkipExtensionsMap<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(key) = self.0.next_key::<String>()? {
            if key.starts_with("x-") {
                self.0.next_value::<IgnoredAny>()?;
                continue;
            }
            return seed.deserialize(key.into_deserializer()).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.0.next_value_seed(seed)
    }
}
