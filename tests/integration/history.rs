//! `history.jsonl` written by earlier versions still reads, and `cutover history` (text and
//! `--json`'s entries) shows it as those versions did. The fixture holds today's format as of the typed
//! history: an entry from before the swarm engine (no `engine`), compose deploys that failed
//! and were interrupted (with reasons), a rollback, and swarm entries (ok and failed).

use std::time::Duration;

use crate::common::{cutover, fixture, project_from_fixture};

fn project_with_history() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    project_from_fixture(dir.path(), "minimal", |_| {});
    std::fs::create_dir_all(dir.path().join(".cutover")).unwrap();
    std::fs::copy(
        fixture("history/v0.1.jsonl"),
        dir.path().join(".cutover/history.jsonl"),
    )
    .unwrap();
    dir
}

fn fixture_entries() -> Vec<serde_json::Value> {
    std::fs::read_to_string(fixture("history/v0.1.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The entries of a `history --json` document (schema 2: an object, not a bare array).
fn entries(stdout: &[u8]) -> Vec<serde_json::Value> {
    let doc: serde_json::Value = serde_json::from_slice(stdout).unwrap();
    assert_eq!(doc["schema"], 2, "{doc}");
    serde_json::from_value(doc["entries"].clone()).unwrap()
}

#[test]
fn history_json_of_old_entries_is_unchanged() {
    let dir = project_with_history();
    let out = cutover(dir.path())
        .args(["history", "--json"])
        .assert()
        .success();
    let got = entries(&out.get_output().stdout);
    let mut want = fixture_entries();
    // An entry from before the swarm engine reads as a compose deploy, as it always did.
    want[0]["engine"] = "compose".into();
    assert_eq!(got, want);
}

#[test]
fn history_text_of_old_entries_is_unchanged() {
    let dir = project_with_history();
    let out = cutover(dir.path()).args(["history"]).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    // The table as `cutover history` printed it before the history was typed.
    let mut want = String::new();
    for e in fixture_entries() {
        let s = |k: &str| e[k].as_str().unwrap_or("-").to_string();
        let steps: Vec<String> = e["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| format!("{} {}ms", s["step"].as_str().unwrap(), s["ms"]))
            .collect();
        let (from, to) = if e["engine"] == "swarm" {
            ("swarm".to_string(), "rolling".to_string())
        } else {
            (s("from"), s("to"))
        };
        want.push_str(&format!(
            "{}  {:<8} {:<28} {:>5} → {:<5} {:<11} {:>8}  {}\n",
            s("time"),
            s("action"),
            s("image"),
            from,
            to,
            s("result"),
            cutover::report::duration(Duration::from_millis(e["total_ms"].as_u64().unwrap())),
            steps.join(", ")
        ));
        if let Some(reason) = e["reason"].as_str() {
            want.push_str(&format!("    {}\n", reason.lines().next().unwrap()));
        }
    }
    assert_eq!(text, want);
    assert!(text.contains("  rollback shop:v1 "), "{text}");
    assert!(text.contains(" swarm → rolling ok "), "{text}");
}

#[test]
fn a_corrupt_history_line_is_an_error_naming_the_line() {
    let dir = project_with_history();
    let path = dir.path().join(".cutover/history.jsonl");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.insert_str(0, "{\"time\": 1}\n");
    std::fs::write(&path, text).unwrap();
    let out = cutover(dir.path()).args(["history"]).assert().failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains("history.jsonl:1 is not a cutover history entry"),
        "{stderr}"
    );
}

#[test]
fn history_with_a_limit_reads_the_tail_past_a_torn_line() {
    let dir = project_with_history();
    let path = dir.path().join(".cutover/history.jsonl");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"time\": \"2026-11-2");
    std::fs::write(&path, text).unwrap();
    let out = cutover(dir.path())
        .args(["history", "-n", "2", "--json"])
        .assert()
        .success();
    let got = entries(&out.get_output().stdout);
    let want = fixture_entries();
    assert_eq!(got, want[want.len() - 2..]);
}

#[test]
fn history_with_a_limit_reads_only_what_it_shows() {
    let dir = project_with_history();
    let path = dir.path().join(".cutover/history.jsonl");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.insert_str(0, "{\"time\": 1}\n");
    std::fs::write(&path, text).unwrap();
    // The damaged first line is not among the last 7, so it is not read…
    let out = cutover(dir.path())
        .args(["history", "-n", "7", "--json"])
        .assert()
        .success();
    let got = entries(&out.get_output().stdout);
    assert_eq!(got.len(), 7);
    // …but the last 8 reach it, and the error names it as the whole read does.
    let out = cutover(dir.path())
        .args(["history", "-n", "8"])
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains("history.jsonl:1 is not a cutover history entry"),
        "{stderr}"
    );
}
