//! `cutover demo`: a clean blue/green cycle under load on the real engine and nginx, and
//! nothing left behind.

use cutover::demo::http_get;

use crate::harness::project::{ready, Project};

#[test]
fn e2e_demo_runs_a_clean_cycle_and_leaves_nothing_behind() {
    if !ready() {
        return;
    }
    let report = Project::new()
        .cutover(["demo", "--json"])
        .success()
        .stdout_json();
    crate::json_contract::validate("demo.schema.json", &report);
    assert_eq!(report["load"]["failed"], 0, "{report}");
    assert!(report["load"]["ok"].as_u64().unwrap() > 20, "{report}");
    assert_eq!(report["slow_requests"], 3);
    assert_eq!(report["slow_ok"], 3);
    assert_eq!(report["first"]["to"], "blue");
    assert_eq!(report["second"]["to"], "green");
    let project = report["project"].as_str().unwrap();
    assert!(
        cutover::docker::compose::containers_of(project)
            .unwrap()
            .is_empty(),
        "containers left behind"
    );
    let port: u16 = report["nginx"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(http_get(port, "/").is_none(), "nginx left running");
}
