//! `cutover rollback` and a redeploy without `--image`, end to end: nothing to roll back to
//! after one deploy, the accessory started once and left alone, the active image moved to the
//! other color, then rolled back.

use crate::harness::project::{ready, App, Project};

#[test]
fn e2e_redeploy_without_image_and_rollback() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose().accessory());
    let stdout = project.deploy_ok("cutover-demo:v1").stdout;
    assert!(stdout.contains("to blue"), "{stdout}");
    // One deploy recorded: there is no previous image to roll back to.
    let failure = project.cutover(["rollback"]).code(1);
    assert!(
        failure.stderr.contains("nothing to roll back to"),
        "{failure}"
    );
    project.assert_stderr_snapshot("e2e-rollback-nothing-to-roll-back", &failure);
    // The first deploy starts the accessory (before the app); later deploys leave it alone.
    let accessory_id = || {
        let containers = cutover::docker::compose::containers_of(&project.name).unwrap();
        let cache: Vec<_> = containers
            .into_iter()
            .filter(|c| c.service == "cache" && c.running())
            .collect();
        assert_eq!(cache.len(), 1, "one running accessory");
        cache[0].id.clone()
    };
    let first_id = accessory_id();
    // status --json describes the accessory's container (status.schema.json's accessories).
    let status = project.status_json();
    assert_eq!(status["accessories"][0]["service"], "cache", "{status}");
    assert_eq!(
        status["accessories"][0]["id"],
        first_id.as_str(),
        "{status}"
    );
    let steps: Vec<String> = project.history()[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_string())
        .collect();
    let pos = |name: &str| steps.iter().position(|s| s == name).unwrap();
    assert!(pos("accessories") < pos("up"), "{steps:?}");
    project.deploy_ok("cutover-demo:v2");
    assert_eq!(accessory_id(), first_id, "the accessory was not recreated");
    let running = project.running_services();
    assert_eq!(running, ["cache", "web-green"]);
    // No --image: the active image moves to the other color (a config or secret change).
    let stdout = project.cutover(["deploy"]).success().stdout;
    assert!(
        stdout.contains("deployed cutover-demo:v2 to blue"),
        "{stdout}"
    );
    project.assert_serving("blue", "v2");
    let stdout = project.cutover(["rollback"]).success().stdout;
    assert!(
        stdout.contains("rolled back to cutover-demo:v1"),
        "{stdout}"
    );
    project.assert_serving("green", "v1");
    assert_eq!(project.history().pop().unwrap()["action"], "rollback");
}
