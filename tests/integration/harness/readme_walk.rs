//! The README's laptop-to-box path as data: the fenced `sh` blocks between the markers
//! [`START`] and [`END`] ("From a fresh laptop to a deployed box"), split into the commands a
//! shell would run, each classified as a [`Step`] the walk knows.
//!
//! Two tests stand on it: the fast one (`cli.rs`) checks every `cutover …` command and flag
//! of the path against the parser and its `--help`, and the VM suite (`tests/vm/walk.rs`)
//! runs the path on its fresh box. So both read the same lines, and a README edit that adds
//! a command neither knows fails the fast test, naming the line, instead of being skipped.
//!
//! The lexer is a small POSIX-shell subset, enough for a README and strict about the rest:
//! words, `'…'` and `"…"` quoting, backslash escapes and `\` line continuations, `#`
//! comments, and `&&` / `;` / newlines between commands. What the walk could not run as a
//! person would (pipes, redirections, `$(…)`, backgrounding) is an error naming the line.
//! Standalone (std only): the VM suite includes this file by `#[path]`.

/// The line before the walk's first block.
pub const START: &str = "<!-- walk: laptop-to-box -->";
/// The line after its last block.
pub const END: &str = "<!-- /walk -->";

/// One command of the walk: its words after quote removal, and the README line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub line: usize,
    pub argv: Vec<String>,
}

/// What a command of the walk is, for the walk that runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `cutover ARGS…`: run as written (values substituted).
    Cutover(Vec<String>),
    /// `cd DIR`.
    Cd(String),
    /// `$EDITOR FILE`: the person writes FILE (the walk writes its secrets there).
    Edit(String),
    /// `docker build -t TAG .`: the app's image (the walk ships the demo app's).
    Build(String),
    /// `curl … install.sh` or `sudo sh install.sh VERSION`: installing cutover (the walk runs
    /// the binary under test instead; the install script has its own tests).
    Install,
}

/// The walk's commands, in order.
pub fn commands(readme: &str) -> Result<Vec<Command>, String> {
    let lines: Vec<&str> = readme.lines().collect();
    let find = |marker: &str| -> Result<usize, String> {
        let at: Vec<usize> = (0..lines.len())
            .filter(|&i| lines[i].trim() == marker)
            .collect();
        match at[..] {
            [i] => Ok(i),
            [] => Err(format!("the README has no `{marker}` line")),
            _ => Err(format!(
                "the README has `{marker}` {} times (lines {:?}): one walk only",
                at.len(),
                at.iter().map(|i| i + 1).collect::<Vec<_>>()
            )),
        }
    };
    let (start, end) = (find(START)?, find(END)?);
    if end < start {
        return Err(format!(
            "README line {}: `{END}` before `{START}` (line {})",
            end + 1,
            start + 1
        ));
    }
    // Each fenced sh block between the markers, as (first line number, text).
    let mut blocks: Vec<(usize, String)> = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in lines.iter().enumerate().take(end).skip(start + 1) {
        let trimmed = line.trim_start();
        match (&mut open, trimmed.strip_prefix("```")) {
            (None, Some(lang)) => {
                if !matches!(lang.trim(), "sh" | "bash" | "shell") {
                    return Err(format!(
                        "README line {}: the walk's block is ```{lang}, not ```sh",
                        i + 1
                    ));
                }
                open = Some((i + 2, String::new()));
            }
            (Some(_), Some(_)) => blocks.push(open.take().unwrap()),
            (Some((_, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    if let Some((first, _)) = open {
        return Err(format!(
            "README line {}: the walk's block is not closed before `{END}`",
            first - 1
        ));
    }
    if blocks.is_empty() {
        return Err(format!("no ```sh block between `{START}` and `{END}`"));
    }
    let mut all = Vec::new();
    for (first, text) in blocks {
        all.extend(lex(&text, first)?);
    }
    Ok(all)
}

/// Splits shell text (whose first line is README line `first`) into commands.
pub fn lex(text: &str, first: usize) -> Result<Vec<Command>, String> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word: Option<String> = None;
    let mut line = first;
    let mut starts = first;
    let mut chars = text.chars().peekable();
    let end_word = |word: &mut Option<String>, words: &mut Vec<String>| {
        if let Some(w) = word.take() {
            words.push(w);
        }
    };
    let end_command = |words: &mut Vec<String>, out: &mut Vec<Command>, starts: usize| {
        if !words.is_empty() {
            out.push(Command {
                line: starts,
                argv: std::mem::take(words),
            });
        }
    };
    let unsupported = |what: &str, line: usize| {
        Err(format!(
            "README line {line}: the walk cannot run {what} as written; write it as plain commands"
        ))
    };
    while let Some(c) = chars.next() {
        if word.is_none() && words.is_empty() && !c.is_whitespace() {
            starts = line;
        }
        match c {
            '\n' => {
                end_word(&mut word, &mut words);
                end_command(&mut words, &mut out, starts);
                line += 1;
            }
            ' ' | '\t' => end_word(&mut word, &mut words),
            '#' if word.is_none() => {
                while chars.peek().is_some_and(|&n| n != '\n') {
                    chars.next();
                }
            }
            '\\' => match chars.next() {
                Some('\n') => line += 1,
                Some(n) => word.get_or_insert_with(String::new).push(n),
                None => return Err(format!("README line {line}: a `\\` ends the block")),
            },
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                let opened = line;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(n) => {
                            line += usize::from(n == '\n');
                            w.push(n);
                        }
                        None => return Err(format!("README line {opened}: a `'` is never closed")),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                let opened = line;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('\n') => line += 1,
                            Some(n @ ('"' | '\\' | '$' | '`')) => w.push(n),
                            Some(n) => {
                                w.push('\\');
                                w.push(n);
                            }
                            None => {
                                return Err(format!("README line {opened}: a `\"` is never closed"))
                            }
                        },
                        Some('`') => return unsupported("a command substitution", line),
                        Some('$') if chars.peek() == Some(&'(') => {
                            return unsupported("a command substitution", line)
                        }
                        Some(n) => {
                            line += usize::from(n == '\n');
                            w.push(n);
                        }
                        None => {
                            return Err(format!("README line {opened}: a `\"` is never closed"))
                        }
                    }
                }
            }
            '&' if chars.peek() == Some(&'&') => {
                chars.next();
                end_word(&mut word, &mut words);
                if words.is_empty() {
                    return Err(format!(
                        "README line {line}: `&&` with no command before it"
                    ));
                }
                end_command(&mut words, &mut out, starts);
            }
            ';' => {
                end_word(&mut word, &mut words);
                end_command(&mut words, &mut out, starts);
            }
            '&' => return unsupported("a background command (`&`)", line),
            '|' => return unsupported("a pipe or `||`", line),
            '<' | '>' => return unsupported("a redirection", line),
            '(' | ')' => return unsupported("a subshell", line),
            '`' => return unsupported("a command substitution", line),
            '$' if chars.peek() == Some(&'(') => {
                return unsupported("a command substitution", line)
            }
            other => word.get_or_insert_with(String::new).push(other),
        }
    }
    end_word(&mut word, &mut words);
    end_command(&mut words, &mut out, starts);
    Ok(out)
}

/// What `cmd` is, or an error naming its line when the walk would not know how to run it.
pub fn step(cmd: &Command) -> Result<Step, String> {
    let argv: Vec<&str> = cmd.argv.iter().map(String::as_str).collect();
    let unknown = || {
        Err(format!(
            "README line {}: `{}` is not a step the walk knows (tests/integration/harness/readme_walk.rs \
             classifies them, tests/vm/walk.rs runs them): teach both, or keep it out of the walk",
            cmd.line,
            argv.join(" ")
        ))
    };
    // The walk runs the words as they are: what a shell would expand first is refused.
    if let Some(word) = argv[1..]
        .iter()
        .find(|w| w.contains('$') || w.starts_with('~') || w.contains(['*', '?']))
    {
        return Err(format!(
            "README line {}: `{word}` would be expanded by a shell (a variable, `~` or a glob), \
             which the walk does not do: write the value",
            cmd.line
        ));
    }
    Ok(match argv[..] {
        ["cutover", ..] => Step::Cutover(cmd.argv[1..].to_vec()),
        ["cd", dir] => Step::Cd(dir.to_string()),
        ["$EDITOR", file] => Step::Edit(file.to_string()),
        ["docker", "build", "-t", tag, "."] => Step::Build(tag.to_string()),
        ["curl", .., url] if url.ends_with("/install.sh") => Step::Install,
        ["sudo", "sh", "install.sh", _version] => Step::Install,
        _ => return unknown(),
    })
}

/// The walk as steps: [`commands`], each through [`step`].
pub fn steps(readme: &str) -> Result<Vec<(Command, Step)>, String> {
    commands(readme)?
        .into_iter()
        .map(|c| step(&c).map(|s| (c, s)))
        .collect()
}
