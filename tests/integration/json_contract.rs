//! The `--json` contract: every command that takes `--json` prints exactly one JSON document
//! on stdout, failures included, and each document validates against its JSON Schema in
//! docs/json/ (checked with python3-jsonschema, the validator Debian packages), so a change
//! that breaks a script's reading breaks a test.

use std::path::Path;
use std::process::Command;

use crate::common::{cutover, fixture, repo_root, require};

/// Validates `doc` against docs/json/`schema`, with the other schemas there resolvable by
/// their relative `$ref`s.
fn validate(schema: &str, doc: &serde_json::Value) {
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
resolver = jsonschema.RefResolver(schema["$id"], schema, store=store)
doc = json.loads(sys.stdin.read())
jsonschema.Draft202012Validator.check_schema(schema)
errors = list(jsonschema.Draft202012Validator(schema, resolver=resolver).iter_errors(doc))
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
    assert!(
        out.status.success(),
        "{schema} rejects the document:\n{}\n{doc:#}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let out = cutover(dir).args(args).output().unwrap();
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
    ];
    for (args, kind, needle) in cases {
        let (doc, code) = one_document(empty.path(), &args);
        assert_eq!(code, Some(1), "{args:?}");
        assert_eq!(doc["result"], "failed", "{args:?}: {doc}");
        assert_eq!(doc["error"]["kind"], kind, "{args:?}: {doc}");
        assert!(
            doc["error"]["message"].as_str().unwrap().contains(needle),
            "{args:?}: {doc}"
        );
        validate("failure.schema.json", &doc);
        let schema = match args
            .iter()
            .find(|a| !a.starts_with('-') && !a.contains('/'))
        {
            Some(&"deploy") | Some(&"rollback") => "deploy.schema.json",
            Some(&"status") => "status.schema.json",
            Some(&"bootstrap") => "bootstrap.schema.json",
            Some(&"prune") => "prune.schema.json",
            _ => "failure.schema.json",
        };
        validate(schema, &doc);
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
    for (args, schema) in [
        (&["status", "--json"][..], "status.schema.json"),
        (&["prune", "--dry-run", "--json"], "prune.schema.json"),
        (
            &["deploy", "--dry-run", "--image", "jsonapp:v1", "--json"],
            "deploy.schema.json",
        ),
    ] {
        let (doc, code) = one_document(&project, args);
        assert_eq!(code, Some(0), "{args:?}: {doc}");
        assert_eq!(doc["schema"], 1, "{args:?}: {doc}");
        validate(schema, &doc);
        if args[0] == "deploy" {
            // Decrypting is a step of the document like the others.
            assert_eq!(doc["steps"][0]["step"], "decrypt", "{doc}");
        }
    }
    // A schema that says too little would pass anything: a document missing a required
    // field is rejected (run the validator the other way once).
    let (mut doc, _) = one_document(&project, &["status", "--json"]);
    doc.as_object_mut().unwrap().remove("colors");
    let rejected = std::panic::catch_unwind(|| validate("status.schema.json", &doc));
    assert!(
        rejected.is_err(),
        "status.schema.json accepts a document without colors"
    );
}
