//! The dotenv dialect of secrets files: a hand-written, hermetic parser and the line edits
//! behind `secrets set` / `unset`.
//!
//! Why not dotenvy: it expands `$VAR` from the *host* environment (even `$HOME_X` becomes
//! `$HOME` + `_X`), so a value could silently change between a laptop and the box, and its
//! parse errors quote the offending value. Here nothing is ever substituted, and errors name
//! `file:line` and the key, never a value. The dialect is documented for users in
//! `docs/secrets-dotenv.md`; the unit tests below are its executable form.

use secrecy::{ExposeSecret, SecretString};

/// One `KEY=VALUE` assignment, with the lines it spans (1-based, inclusive) so `set` and
/// `unset` can rewrite it in place and keep the rest of the file (comments, order) intact.
pub struct Entry {
    pub key: String,
    pub value: SecretString,
    pub first_line: usize,
    pub last_line: usize,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Entry({} = [redacted], lines {}..={})",
            self.key, self.first_line, self.last_line
        )
    }
}

/// A line that is not in the dialect. `Display` never includes a value.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {}{kind}", key_prefix(.key))]
pub struct ParseError {
    /// The file as the user knows it (a path, or `prod.env` while editing).
    pub file: String,
    pub line: usize,
    pub key: Option<String>,
    pub kind: ParseErrorKind,
}

fn key_prefix(key: &Option<String>) -> String {
    match key {
        Some(key) => format!("key `{key}`: "),
        None => String::new(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("the file is not valid UTF-8")]
    NotUtf8,
    #[error("expected KEY=VALUE, found no `=` (the line is not shown in case it holds a secret)")]
    MissingEquals,
    #[error(
        "expected KEY=VALUE, found a bare word without `=` (not shown); a bare name would take \
         its value from the host environment, and secrets files are hermetic: write `KEY=` for \
         an empty value"
    )]
    BareKey,
    #[error("invalid key name: use ASCII letters, digits and `_`, not starting with a digit")]
    InvalidKey,
    #[error("duplicate key, first set on line {first_line}")]
    Duplicate { first_line: usize },
    #[error("the {quote} quote opened here is never closed")]
    UnterminatedQuote { quote: &'static str },
    #[error("unexpected text after the closing quote (only a `# comment` may follow)")]
    TrailingText,
    #[error(
        "unsupported escape in a double-quoted value: only \\n \\r \\t \\\\ \\\" \\$ are \
         recognised; use single quotes for a literal backslash"
    )]
    BadEscape,
    #[error("the value contains a NUL byte, which no process environment can hold")]
    Nul,
}

impl ParseError {
    fn new(file: &str, line: usize, key: Option<&str>, kind: ParseErrorKind) -> Self {
        ParseError {
            file: file.to_string(),
            line,
            key: key.map(str::to_string),
            kind,
        }
    }
}

/// Parses raw bytes (a decrypted file): checks UTF-8 first so the error can name a line.
pub fn parse_bytes(bytes: &[u8], file: &str) -> Result<Vec<Entry>, ParseError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text, file),
        Err(e) => {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            Err(ParseError::new(file, line, None, ParseErrorKind::NotUtf8))
        }
    }
}

/// Parses a whole dotenv text. Keys are unique; order is the file's order.
pub fn parse(text: &str, file: &str) -> Result<Vec<Entry>, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Lines without their terminator; a CR before LF is dropped so files from Windows editors
    // parse the same.
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut entries: Vec<Entry> = Vec::new();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut i = 0;
    while i < lines.len() {
        let line_no = i + 1;
        let line = lines[i].trim_start_matches([' ', '\t']);
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = strip_export(line);
        let Some((raw_key, rest)) = line.split_once('=') else {
            let kind = if is_valid_key(line.trim_end()) {
                ParseErrorKind::BareKey
            } else {
                ParseErrorKind::MissingEquals
            };
            // Not even a bare name is echoed: a pasted password can look like a key.
            return Err(ParseError::new(file, line_no, None, kind));
        };
        let key = raw_key.trim_matches([' ', '\t']);
        if !is_valid_key(key) {
            return Err(ParseError::new(
                file,
                line_no,
                Some(key),
                ParseErrorKind::InvalidKey,
            ));
        }
        let err = |line: usize, kind| ParseError::new(file, line, Some(key), kind);

        let after_eq = rest;
        let rest = rest.trim_start_matches([' ', '\t']);
        let (value, last_line) = if let Some(body) = rest.strip_prefix('"') {
            let (value, last, tail) =
                read_quoted(body, '"', &lines, &mut i).map_err(|kind| err(line_no, kind))?;
            check_tail(tail).map_err(|kind| err(last, kind))?;
            (value, last)
        } else if let Some(body) = rest.strip_prefix('\'') {
            let (value, last, tail) =
                read_quoted(body, '\'', &lines, &mut i).map_err(|kind| err(line_no, kind))?;
            check_tail(tail).map_err(|kind| err(last, kind))?;
            (value, last)
        } else {
            (unquoted(after_eq).to_string(), line_no)
        };
        if value.contains('\0') {
            return Err(err(line_no, ParseErrorKind::Nul));
        }
        // A map, not a scan of `entries`: a 10,000-key file would otherwise parse in
        // quadratic time.
        if let Some(&first_line) = seen.get(key) {
            return Err(err(line_no, ParseErrorKind::Duplicate { first_line }));
        }
        seen.insert(key.to_string(), line_no);
        entries.push(Entry {
            key: key.to_string(),
            value: SecretString::from(value),
            first_line: line_no,
            last_line,
        });
    }
    Ok(entries)
}

fn strip_export(line: &str) -> &str {
    match line.strip_prefix("export") {
        Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start_matches([' ', '\t']),
        _ => line,
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`: what POSIX shells and compose's `- KEY` lists accept.
pub fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An unquoted value: everything after `=`, up to a `#` that follows whitespace (or opens the
/// value), with surrounding whitespace trimmed. Inner spaces are kept: `A=hello world` is
/// `hello world`, as compose reads it.
fn unquoted(after_eq: &str) -> &str {
    let bytes = after_eq.as_bytes();
    let mut end = after_eq.len();
    for (idx, &b) in bytes.iter().enumerate() {
        if b == b'#' && (idx == 0 || bytes[idx - 1] == b' ' || bytes[idx - 1] == b'\t') {
            end = idx;
            break;
        }
    }
    after_eq[..end].trim_matches([' ', '\t'])
}

/// Reads a quoted value starting just after the opening quote, continuing onto following
/// lines (joined with `\n`) until the closing quote. Returns the value, the line the value
/// ends on (1-based) and the text after the closing quote.
fn read_quoted<'a>(
    first: &'a str,
    quote: char,
    lines: &[&'a str],
    next: &mut usize,
) -> Result<(String, usize, &'a str), ParseErrorKind> {
    let mut value = String::new();
    let mut current = first;
    let mut line_no = *next; // the 1-based number of the line holding `current`
    loop {
        let mut chars = current.char_indices();
        while let Some((idx, c)) = chars.next() {
            if c == quote {
                return Ok((value, line_no, &current[idx + 1..]));
            }
            if c == '\\' && quote == '"' {
                match chars.next().map(|(_, c)| c) {
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some('t') => value.push('\t'),
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('$') => value.push('$'),
                    _ => return Err(ParseErrorKind::BadEscape),
                }
            } else {
                value.push(c);
            }
        }
        if *next >= lines.len() {
            return Err(ParseErrorKind::UnterminatedQuote {
                quote: if quote == '"' { "double" } else { "single" },
            });
        }
        value.push('\n');
        current = lines[*next];
        *next += 1;
        line_no = *next;
    }
}

fn check_tail(tail: &str) -> Result<(), ParseErrorKind> {
    let tail = tail.trim_start_matches([' ', '\t']);
    if tail.is_empty() || tail.starts_with('#') {
        Ok(())
    } else {
        Err(ParseErrorKind::TrailingText)
    }
}

/// Writes a value so that [`parse`] reads it back unchanged: bare when it is made of
/// unambiguous characters, else double-quoted with escapes.
pub fn quote(value: &str) -> String {
    let bare = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@+=,%~^*!?".contains(c));
    if bare {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Returns `text` with `key` set to `value`: its lines replaced in place when present,
/// else a line appended. Comments and other entries are kept as written.
pub fn set_in_text(
    text: &str,
    file: &str,
    key: &str,
    value: &SecretString,
) -> Result<SecretString, ParseError> {
    let entries = parse(text, file)?;
    let line = format!("{key}={}", quote(value.expose_secret()));
    let mut lines = split_lines(text);
    match entries.iter().find(|e| e.key == key) {
        Some(e) => {
            lines.splice(e.first_line - 1..e.last_line, [line]);
        }
        None => lines.push(line),
    }
    Ok(SecretString::from(join_lines(lines)))
}

/// Returns `text` without `key`'s lines, or `None` when the key is absent.
pub fn unset_in_text(
    text: &str,
    file: &str,
    key: &str,
) -> Result<Option<SecretString>, ParseError> {
    let entries = parse(text, file)?;
    let Some(e) = entries.iter().find(|e| e.key == key) else {
        return Ok(None);
    };
    let mut lines = split_lines(text);
    lines.drain(e.first_line - 1..e.last_line);
    Ok(Some(SecretString::from(join_lines(lines))))
}

fn split_lines(text: &str) -> Vec<String> {
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    if trimmed.is_empty() {
        return Vec::new();
    }
    trimmed.split('\n').map(str::to_string).collect()
}

fn join_lines(lines: Vec<String>) -> String {
    let mut out = lines.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Vec<(String, String)> {
        parse(text, "t.env")
            .unwrap()
            .into_iter()
            .map(|e| (e.key, e.value.expose_secret().to_string()))
            .collect()
    }

    fn one(text: &str) -> String {
        let v = values(text);
        assert_eq!(v.len(), 1, "{text:?}");
        v[0].1.clone()
    }

    fn kind(text: &str) -> (usize, Option<String>, ParseErrorKind) {
        let e = parse(text, "t.env").unwrap_err();
        (e.line, e.key, e.kind)
    }

    #[test]
    fn the_documented_example_parses_as_documented() {
        let doc = include_str!("../../docs/secrets-dotenv.md");
        let block = doc
            .split("```sh\n")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap();
        let v: std::collections::BTreeMap<String, String> = values(block).into_iter().collect();
        assert_eq!(v["DB_PASSWORD"], "correct horse battery staple");
        assert_eq!(v["API_KEY"], "abc123");
        assert_eq!(v["EMPTY"], "");
        assert_eq!(v["URL"], "postgres://u@db/app?sslmode=require#x");
        assert_eq!(v["PRICE"], "$5");
        assert_eq!(
            v["QUOTED"],
            "tab\there, newline\n, quote \", backslash \\, dollar $"
        );
        assert_eq!(v["LITERAL"], r"C:\no\escapes\here $HOME");
        assert!(v["JWT_KEY"].starts_with("-----BEGIN PRIVATE KEY-----\nMII"));
        assert!(v["JWT_KEY"].ends_with("\n-----END PRIVATE KEY-----"));
        assert_eq!(v.len(), 8);
    }

    #[test]
    fn basics_comments_blank_lines_export() {
        let text = "# comment\n\n  A=1\nexport B=two\n\tC = 3 \n";
        assert_eq!(
            values(text),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two".into()),
                ("C".into(), "3".into())
            ]
        );
    }

    #[test]
    fn unquoted_keeps_inner_spaces_like_compose() {
        assert_eq!(one("A=hello world"), "hello world");
        assert_eq!(one("A=  padded  "), "padded");
        assert_eq!(one("A="), "");
    }

    #[test]
    fn inline_comments_need_whitespace_before_hash() {
        assert_eq!(one("A=abc # note"), "abc");
        assert_eq!(one("A=abc#def"), "abc#def");
        assert_eq!(one("A= # only a comment"), "");
        assert_eq!(one("A=#x"), "");
    }

    #[test]
    fn dollar_is_always_literal() {
        // Hermetic: nothing is substituted, from the host or from earlier keys.
        std::env::set_var("CUTOVER_UNIT_LEAK", "LEAKED");
        let v = values(
            "A=$CUTOVER_UNIT_LEAK\nB=\"${CUTOVER_UNIT_LEAK}\"\nC='$CUTOVER_UNIT_LEAK'\nD=$A\n",
        );
        assert_eq!(v[0].1, "$CUTOVER_UNIT_LEAK");
        assert_eq!(v[1].1, "${CUTOVER_UNIT_LEAK}");
        assert_eq!(v[2].1, "$CUTOVER_UNIT_LEAK");
        assert_eq!(v[3].1, "$A");
    }

    #[test]
    fn double_quotes_escape_and_span_lines() {
        assert_eq!(one(r#"A="a\nb\t\"c\" \\ \$""#), "a\nb\t\"c\" \\ $");
        assert_eq!(one("A=\"line1\nline2\" # c\n"), "line1\nline2");
        assert_eq!(one("A=\" # not a comment \""), " # not a comment ");
    }

    #[test]
    fn single_quotes_are_literal_and_span_lines() {
        assert_eq!(one(r"A='C:\path\n'"), r"C:\path\n");
        assert_eq!(
            one("KEY='-----BEGIN-----\nabc\n-----END-----'\n"),
            "-----BEGIN-----\nabc\n-----END-----"
        );
    }

    #[test]
    fn multi_line_entry_records_its_span() {
        let e = parse("X=1\nA=\"x\ny\nz\"\nB=2\n", "t").unwrap();
        assert_eq!((e[1].first_line, e[1].last_line), (2, 4));
        assert_eq!(e[2].first_line, 5);
    }

    #[test]
    fn crlf_and_bom_are_accepted() {
        assert_eq!(values("\u{feff}A=1\r\nB=2\r\n").len(), 2);
        assert_eq!(one("A=1\r\n"), "1");
    }

    #[test]
    fn duplicate_key_is_an_error_naming_both_lines() {
        let (line, key, kind) = kind("A=1\nB=2\nA=3\n");
        assert_eq!(line, 3);
        assert_eq!(key.as_deref(), Some("A"));
        assert_eq!(kind, ParseErrorKind::Duplicate { first_line: 1 });
    }

    #[test]
    fn rejected_lines() {
        assert_eq!(kind("A=1\nnot a pair\n").2, ParseErrorKind::MissingEquals);
        assert_eq!(kind("A=1\nnot a pair\n").0, 2);
        assert_eq!(kind("BARE\n").2, ParseErrorKind::BareKey);
        assert_eq!(kind("1A=x").2, ParseErrorKind::InvalidKey);
        assert_eq!(kind("A-B=x").2, ParseErrorKind::InvalidKey);
        assert_eq!(kind("A B=x").2, ParseErrorKind::InvalidKey);
        assert_eq!(
            kind("A=\"open\nB=2\n").2,
            ParseErrorKind::UnterminatedQuote { quote: "double" }
        );
        assert_eq!(kind("A=\"open\nB=2\n").0, 1);
        assert_eq!(kind("A='x' y").2, ParseErrorKind::TrailingText);
        assert_eq!(kind(r#"A="\q""#).2, ParseErrorKind::BadEscape);
        assert_eq!(kind("A=\"a\0b\"").2, ParseErrorKind::Nul);
    }

    #[test]
    fn errors_never_contain_the_value() {
        let marker = "s3cr3t-marker-value";
        for text in [
            format!("{marker}\n"),
            "Hunter2Alnum\n".to_string(),
            format!("A='{marker}"),
            format!("A=\"{marker}\\q\""),
            format!("A='{marker}' trailing"),
            format!("A={marker}\nA={marker}"),
            format!("A=\"{marker}\0\""),
        ] {
            let msg = parse(&text, "t.env").unwrap_err().to_string();
            assert!(!msg.contains(marker) && !msg.contains("Hunter2"), "{msg}");
            assert!(msg.starts_with("t.env:"), "{msg}");
        }
        let mut bytes = b"A=1\nB=".to_vec();
        bytes.extend([0xff, 0xfe]);
        let e = parse_bytes(&bytes, "t.env").unwrap_err();
        assert_eq!((e.line, e.kind), (2, ParseErrorKind::NotUtf8));
    }

    #[test]
    fn quote_round_trips() {
        for v in [
            "plain",
            "",
            "hello world",
            "a#b",
            " lead",
            "q\"uote'",
            "back\\slash",
            "multi\nline\r\n",
            "$HOME ${X}",
            "tab\there",
            "ünïcode",
        ] {
            let text = format!("K={}\n", quote(v));
            assert_eq!(one(&text), v, "{text:?}");
        }
    }

    #[test]
    fn set_replaces_in_place_and_appends() {
        let text = "# head\nA=1\nB=\"x\ny\"\nC=3\n";
        let out = set_in_text(text, "t", "B", &SecretString::from("new")).unwrap();
        assert_eq!(out.expose_secret(), "# head\nA=1\nB=new\nC=3\n");
        let out = set_in_text(text, "t", "D", &SecretString::from("a b")).unwrap();
        assert_eq!(out.expose_secret(), format!("{text}D=\"a b\"\n"));
        let out = set_in_text("", "t", "A", &SecretString::from("1")).unwrap();
        assert_eq!(out.expose_secret(), "A=1\n");
        let out = set_in_text("A=1", "t", "B", &SecretString::from("2")).unwrap();
        assert_eq!(out.expose_secret(), "A=1\nB=2\n");
    }

    #[test]
    fn unset_removes_every_line_of_the_entry() {
        let text = "A=1\nB=\"x\ny\"\nC=3\n";
        let out = unset_in_text(text, "t", "B").unwrap().unwrap();
        assert_eq!(out.expose_secret(), "A=1\nC=3\n");
        assert!(unset_in_text(text, "t", "Z").unwrap().is_none());
    }
}
