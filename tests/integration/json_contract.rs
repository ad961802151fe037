//! The `--json` contract: every command that takes `--json` prints exactly one JSON document
//! on stdout, failures included, and each document validates against its JSON Schema in
//! docs/json/ (checked with python3-jsonschema, the validator Debian packages), so a change
//! that breaks a script's reading breaks a test.

use std::path::Path;
use std::process::Command;

use crate::common::{cutover, fixture, repo_root, require};

/// Validates `doc` against docs/json/`schema`, with the other schemas there resolvable by
/// their relative `$ref`s. Without the validator (python3-jsonschema) it checks nothing,
/// said loudly (and fails under `CI`, see [`validator_ready`]).
pub fn validate(schema: &str, doc: &serde_json::Value) {
    if !validator_ready() {
        return;
    }
    if let Err(why) = check(schema, doc) {
        panic!("{schema} rejects the document:\n{why}\n{doc:#}");
    }
}

/// [`validate`]'s verdict: the validator's complaints when `schema` rejects `doc`.
fn check(schema: &str, doc: &serde_json::Value) -> Result<(), String> {
    const SCRIPT: &str = r#"
import json, sys, pathlib, warnings
warnings.simplefilter("ignore")
import jsonschema
d = pathlib.Path(sys.argv[1])
store = {}
for f in d.glob("*.schema.json"):
    s = json.loads(f.read_text())
    store[s["$id"]] = s
schema = json.loads((d / sys.argv[2]).read_text())
doc = json.loads(sys.stdin.read())
jsonschema.Draft202012Validator.check_schema(schema)
try:
    # jsonschema >= 4.18 resolves through a registry (its RefResolver is not consulted by
    # every keyword: unevaluatedProperties across a $ref to another file would fetch the URL).
    from referencing import Registry, Resource
    registry = Registry().with_resources(
        (uri, Resource.from_contents(s)) for uri, s in store.items())
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
except ImportError:
    # Older ones (Debian bookworm's 4.10) only have the resolver.
    resolver = jsonschema.RefResolver(schema["$id"], schema, store=store)
    validator = jsonschema.Draft202012Validator(schema, resolver=resolver)
errors = list(validator.iter_errors(doc))
for e in errors:
    print(f"{list(e.absolute_path)}: {e.message}", file=sys.stderr)
sys.exit(1 if errors else 0)
"#;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(repo_root().join("docs/json"))
        .arg(schema)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The gate: python3 with the jsonschema module (scripts/test.sh installs it).
fn validator_ready() -> bool {
    if !require("python3", "validate --json output against docs/json") {
        return false;
    }
    let ok = Command::new("python3")
        .args(["-c", "import jsonschema"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok && std::env::var_os("CI").is_some() {
        panic!(
            "python3-jsonschema is missing (CI is set, so this is a failure; run scripts/test.sh)"
        );
    }
    ok
}

/// Runs `cutover ARGS` in `dir`: stdout must be exactly one JSON document; returns it and
/// the exit code.
fn one_document(dir: &Path, args: &[&str]) -> (serde_json::Value, Option<i32>) {
    let mut cmd = cutover(dir);
    cmd.args(args);
    document_of(cmd, args)
}

/// [`one_document`] of a command built by the caller (its environment changed).
fn document_of(mut cmd: assert_cmd::Command, args: &[&str]) -> (serde_json::Value, Option<i32>) {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut docs = serde_json::Deserializer::from_str(&stdout).into_iter::<serde_json::Value>();
    let doc = docs
        .next()
        .unwrap_or_else(|| {
            panic!(
                "{args:?}: no JSON on stdout; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}): {stdout}"));
    assert!(
        docs.next().is_none(),
        "{args:?}: more than one document: {stdout}"
    );
    (doc, out.status.code())
}

#[test]
fn every_json_command_that_fails_prints_one_failure_document_that_says_why() {
    if !validator_ready() {
        return;
    }
    let empty = tempfile::tempdir().unwrap();
    let bad = fixture("configs/bad/image-with-tag.yml");
    let bad = bad.to_str().unwrap();
    let good = fixture("configs/good/minimal.yml");
    let good = good.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["--config", bad, "deploy", "--json"],
            "config",
            "app.image",
        ),
        (
            vec!["--config", bad, "rollback", "--json"],
            "config",
            "app.image",
        ),
        (vec!["status", "--json"], "config", "no such file"),
        (vec!["history", "--json"], "config", "no such file"),
        (
            vec!["--config", bad, "history", "--json", "-n", "3"],
            "config",
            "app.image",
        ),
        (vec!["prune", "--json"], "config", "no such file"),
        (
            vec!["--config", bad, "bootstrap", "--json", "--dry-run"],
            "config",
            "app.image",
        ),
        (
            vec!["maintenance", "on", "--json"],
            "config",
            "no such file",
        ),
        (
            vec![
                "--identity",
                "/nonexistent/id.txt",
                "secrets",
                "show",
                "prod",
                "--json",
            ],
            "identity",
            "/nonexistent/id.txt",
        ),
        (
            vec![
                "--config",
                good,
                "--host",
                "nobody@127.0.0.1:1",
                "status",
                "--json",
            ],
            "ssh",
            "could not connect",
        ),
        (
            vec!["secrets", "restore", "--json"],
            "config",
            "no such file",
        ),
        (
            vec!["--config", bad, "secrets", "restore", "--dry-run", "--json"],
            "config",
            "app.image",
        ),
        (
            vec!["--config", bad, "tls", "issue", "--dry-run", "--json"],
            "config",
            "app.image",
        ),
        (
            vec!["--config", good, "status", "--engine", "swarm", "--json"],
            "other",
            "swarm",
        ),
        // The cheapest real failure of the demo: no Docker engine to talk to.
        (vec!["demo", "--json"], "other", "Docker engine"),
    ];
    for (args, kind, needle) in cases {
        let mut cmd = cutover(empty.path());
        cmd.args(&args)
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
        let (doc, code) = document_of(cmd, &args);
        assert_eq!(code, Some(1), "{args:?}");
        assert_eq!(doc["result"], "failed", "{args:?}: {doc}");
        assert_eq!(doc["error"]["kind"], kind, "{args:?}: {doc}");
        assert!(
            doc["error"]["message"].as_str().unwrap().contains(needle),
            "{args:?}: {doc}"
        );
        validate("failure.schema.json", &doc);
        // The failure document carries its command's document version, which that
        // document's schema pins.
        let words: Vec<&str> = args
            .iter()
            .copied()
            .filter(|a| !a.starts_with('-') && !a.contains('/') && !a.contains('@'))
            .collect();
        let (schema, version) = match words[..] {
            ["deploy", ..] | ["rollback", ..] => ("deploy.schema.json", 2),
            ["history", ..] => ("history.schema.json", 2),
            ["status", ..] if args.contains(&"swarm") => ("status-swarm.schema.json", 1),
            ["status", ..] => ("status.schema.json", 1),
            ["bootstrap", ..] => ("bootstrap.schema.json", 1),
            ["prune", ..] => ("prune.schema.json", 1),
            ["maintenance", ..] => ("maintenance.schema.json", 1),
            ["tls", ..] => ("tls.schema.json", 1),
            ["demo", ..] => ("demo.schema.json", 1),
            ["secrets", "show", ..] => ("secrets-show.schema.json", 2),
            ["secrets", "restore", ..] => ("secrets-restore.schema.json", 1),
            _ => panic!("{args:?}: which document?"),
        };
        assert_eq!(doc["schema"], version, "{args:?}: {doc}");
        validate(schema, &doc);
    }
}

/// Hostile: an error naming a path with quotes, a backslash, a newline and a tab is still
/// one valid document, the message holding them as they are (JSON escapes them).
#[test]
fn a_failure_message_with_quotes_and_newlines_is_one_valid_document() {
    if !validator_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("we\"ird\\\nna\tme").join("cutover.yml");
    let odd_str = odd.to_str().unwrap();
    for args in [
        &["--config", odd_str, "deploy", "--json"][..],
        &["--config", odd_str, "status", "--json"],
    ] {
        let (doc, code) = one_document(dir.path(), args);
        assert_eq!(code, Some(1), "{doc}");
        assert_eq!(doc["error"]["kind"], "config", "{doc}");
        let message = doc["error"]["message"].as_str().unwrap();
        assert!(message.contains(odd_str), "{message:?}");
        validate("failure.schema.json", &doc);
    }
}

#[test]
fn json_documents_of_bootstrap_status_prune_and_a_planned_deploy_match_their_schemas() {
    if !validator_ready() || !require("docker", "read the box for status, prune and deploy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    cutover(dir.path())
        .args(["init", "jsonapp"])
        .assert()
        .success();
    let project = dir.path().join("jsonapp");
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let (boot, code) = one_document(
        &project,
        &[
            "bootstrap",
            "--json",
            "--root",
            r,
            "--swap",
            "off",
            "--no-install",
        ],
    );
    assert_eq!(code, Some(0), "{boot}");
    assert_eq!(boot["schema"], 1);
    validate("bootstrap.schema.json", &boot);
    for (args, schema, version) in [
        (&["status", "--json"][..], "status.schema.json", 1),
        (&["prune", "--dry-run", "--json"], "prune.schema.json", 1),
        (&["history", "--json"], "history.schema.json", 2),
        (
            &["deploy", "--dry-run", "--image", "jsonapp:v1", "--json"],
            "deploy.schema.json",
            2,
        ),
    ] {
        let (doc, code) = one_document(&project, args);
        assert_eq!(code, Some(0), "{args:?}: {doc}");
        assert_eq!(doc["schema"], version, "{args:?}: {doc}");
        validate(schema, &doc);
        match args[0] {
            "deploy" => {
                // Decrypting is a step of the document like the others, and the plan's
                // first step; each operation of the plan is an object naming its step.
                assert_eq!(doc["steps"][0]["step"], "decrypt", "{doc}");
                assert_eq!(doc["plan_steps"][0], "decrypt", "{doc}");
                assert_eq!(doc["result"], "ok", "{doc}");
                let plan = doc["plan"].as_array().unwrap();
                assert!(
                    plan.iter()
                        .any(|p| p["step"] == "up"
                            && p["detail"].as_str().unwrap().contains("up -d")),
                    "{doc}"
                );
            }
            // No probe answers here (no nginx on :80 for this project): the reason the
            // text shows is in the document too.
            "status" => {
                assert_eq!(doc["nginx_serves"], serde_json::Value::Null, "{doc}");
                let why = doc["nginx_serves_reason"].as_str().unwrap_or_default();
                assert!(why.starts_with("no answer from its probe: "), "{doc}");
                let text = cutover(&project).arg("status").output().unwrap();
                let text = String::from_utf8_lossy(&text.stdout);
                assert!(text.contains(&format!("nginx serves ? ({why})")), "{text}");
            }
            _ => {}
        }
    }
    // Real entries of every kind (the history fixture: compose and swarm, ok, failed,
    // interrupted, a rollback, workers) validate as history's and as status's last deploy.
    std::fs::create_dir_all(project.join(".cutover")).unwrap();
    std::fs::copy(
        fixture("history/v0.1.jsonl"),
        project.join(".cutover/history.jsonl"),
    )
    .unwrap();
    let (history, _) = one_document(&project, &["history", "--json"]);
    assert!(
        history["entries"].as_array().unwrap().len() >= 5,
        "{history}"
    );
    validate("history.schema.json", &history);
    let (status, _) = one_document(&project, &["status", "--json"]);
    assert!(status["last_deploy"].is_object(), "{status}");
    validate("status.schema.json", &status);
    // A schema that says too little would pass anything: each rejects a document that a
    // careless change would print (run the validator the other way).
    let (status, _) = one_document(&project, &["status", "--json"]);
    let (plan, _) = one_document(
        &project,
        &["deploy", "--dry-run", "--image", "jsonapp:v1", "--json"],
    );
    let edited = |doc: &serde_json::Value, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut doc = doc.clone();
        edit(&mut doc);
        doc
    };
    let rejected: Vec<(&str, &str, serde_json::Value)> = vec![
        (
            "status.schema.json",
            "status without colors",
            edited(&status, &|d| {
                d.as_object_mut().unwrap().remove("colors");
            }),
        ),
        (
            "status.schema.json",
            "status with a field no schema names",
            edited(&status, &|d| d["nginx_reason"] = "typo".into()),
        ),
        (
            "status.schema.json",
            "a last deploy with a step of no known name",
            edited(&status, &|d| {
                d["last_deploy"]["steps"][0]["step"] = "upp".into();
            }),
        ),
        (
            "deploy.schema.json",
            "a plan of free-text lines (schema 1's shape)",
            edited(&plan, &|d| {
                d["plan"] = serde_json::json!(["write compose.yml"])
            }),
        ),
        (
            "deploy.schema.json",
            "a deploy document claiming schema 1",
            edited(&plan, &|d| d["schema"] = 1.into()),
        ),
        (
            "deploy.schema.json",
            "a compose summary without its colors",
            edited(&plan, &|d| {
                d.as_object_mut().unwrap().remove("to");
            }),
        ),
        (
            "deploy.schema.json",
            "a summary with an error beside it",
            edited(&plan, &|d| {
                d["error"] = serde_json::json!({"kind": "other", "message": "x"})
            }),
        ),
        (
            "deploy.schema.json",
            "a deploy's failure document in history's version 1",
            serde_json::json!({"schema": 1, "result": "failed", "error": {"kind": "config", "message": "x"}}),
        ),
        (
            "history.schema.json",
            "history as a bare array (before schema 2)",
            history["entries"].clone(),
        ),
        (
            "history.schema.json",
            "an entry without its result",
            edited(&history, &|d| {
                d["entries"][0].as_object_mut().unwrap().remove("result");
            }),
        ),
        (
            "failure.schema.json",
            "a failure with an unknown kind",
            serde_json::json!({"schema": 1, "result": "failed", "error": {"kind": "oops", "message": "x"}}),
        ),
    ];
    for (schema, what, doc) in rejected {
        assert!(
            check(schema, &doc).is_err(),
            "{schema} accepts {what}:\n{doc:#}"
        );
    }

    // Secrets: show (values, and keys only) and restore (this project delivers by env, so
    // it is skipped, saying why), for real.
    let id = dir.path().join("id.txt");
    let id = id.to_str().unwrap();
    cutover(&project)
        .args(["secrets", "keygen", "--add", "--out", id])
        .assert()
        .success();
    std::fs::write(
        project.join("prod.env"),
        "DB_PASSWORD=\"a \\\"quoted\\\" one\"\nAPI_KEY=k\n",
    )
    .unwrap();
    cutover(&project)
        .args(["secrets", "encrypt", "prod.env", "--rm"])
        .assert()
        .success();
    let (shown, code) = one_document(
        &project,
        &["--identity", id, "secrets", "show", "prod", "--json"],
    );
    assert_eq!(code, Some(0), "{shown}");
    assert_eq!(shown["schema"], 2, "{shown}");
    assert_eq!(shown["file"], "secrets/prod.env.age", "{shown}");
    assert_eq!(
        shown["values"]["DB_PASSWORD"], "a \"quoted\" one",
        "{shown}"
    );
    validate("secrets-show.schema.json", &shown);
    let (keys, _) = one_document(
        &project,
        &[
            "--identity",
            id,
            "secrets",
            "show",
            "prod.env.age",
            "--keys",
            "--json",
        ],
    );
    assert_eq!(keys["keys"], serde_json::json!(["DB_PASSWORD", "API_KEY"]));
    validate("secrets-show.schema.json", &keys);
    for args in [
        &["--identity", id, "secrets", "restore", "--json"][..],
        &[
            "--identity",
            id,
            "secrets",
            "restore",
            "--dry-run",
            "--json",
        ],
    ] {
        let (restored, code) = one_document(&project, args);
        assert_eq!(code, Some(0), "{args:?}: {restored}");
        assert_eq!(restored["schema"], 1, "{restored}");
        assert!(restored["projects"][0]["skipped"].is_string(), "{restored}");
        validate("secrets-restore.schema.json", &restored);
    }

    // Hostile: a config warning (a secrets file no service lists) goes to stderr, never
    // into the document: the commands that print it (and those that do not) still print
    // exactly one valid document on stdout (maintenance fails here, having no include: its
    // failure document counts the same).
    std::fs::copy(
        project.join("secrets/prod.env.age"),
        project.join("secrets/stray.env.age"),
    )
    .unwrap();
    let plan = [
        "--identity",
        id,
        "deploy",
        "--dry-run",
        "--image",
        "jsonapp:v1",
        "--json",
    ];
    for (args, schema, warns) in [
        (&plan[..], "deploy.schema.json", true),
        (
            &["maintenance", "on", "--dry-run", "--json"],
            "maintenance.schema.json",
            true,
        ),
        (&["status", "--json"], "status.schema.json", false),
        (&["history", "--json"], "history.schema.json", false),
        (
            &["prune", "--dry-run", "--json"],
            "prune.schema.json",
            false,
        ),
        (
            &["--identity", id, "secrets", "restore", "--json"],
            "secrets-restore.schema.json",
            false,
        ),
    ] {
        let out = cutover(&project).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.contains("warning: secrets/stray.env.age"),
            warns,
            "{args:?}: {stderr}"
        );
        let (doc, _) = one_document(&project, args);
        assert!(!doc.to_string().contains("stray"), "{args:?}: {doc}");
        validate(schema, &doc);
    }
}

/// Every object a schema describes is closed (`additionalProperties` or
/// `unevaluatedProperties`: an unknown or misspelled field fails) and names what it requires:
/// a nested object without them would silently accept anything a careless change prints.
/// Only deploy's `run`, closed by each schema that refers to it, is open on purpose.
#[test]
fn every_object_in_every_schema_is_closed_and_names_its_required_fields() {
    fn walk(file: &str, at: &str, v: &serde_json::Value, bad: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                let object = map.get("type") == Some(&serde_json::json!("object"));
                let open_on_purpose = file == "deploy.schema.json" && at == "/$defs/run";
                if object && !open_on_purpose {
                    if !map.contains_key("additionalProperties")
                        && !map.contains_key("unevaluatedProperties")
                    {
                        bad.push(format!("{file}#{at}: an object that accepts any field"));
                    }
                    if map.contains_key("properties") && !map.contains_key("required") {
                        bad.push(format!("{file}#{at}: properties without `required`"));
                    }
                }
                for (k, child) in map {
                    walk(file, &format!("{at}/{k}"), child, bad);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(file, &format!("{at}/{i}"), child, bad);
                }
            }
            _ => {}
        }
    }
    let mut bad = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(repo_root().join("docs/json")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        files += 1;
        walk(&name, "", &schema, &mut bad);
    }
    assert!(files >= 12, "docs/json/ holds {files} schemas");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
