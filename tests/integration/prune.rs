//! `cutover prune` and the auto-prune after a deploy (`app.keep_images`): the newest images
//! kept, the rest removed, a dry run removing nothing, and never an image another project
//! records for its rollback.

use std::process::Command;

use crate::harness::project::{edit_config, ready, App, Project, Run};

#[test]
fn prune_keeps_the_newest_and_removes_the_rest() {
    if !ready() {
        return;
    }
    let project = Project::compose(App::compose());
    // A private repository (tags of the demo image), so other tests' images are never touched.
    let repo = format!("cutover-prune-{}", project.name);
    let tag = |t: &str| format!("{repo}:{t}");
    for t in ["a", "b", "c"] {
        let ok = std::process::Command::new("docker")
            .args(["tag", "cutover-demo:v1", &tag(t)])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    project.write_config(&App::compose().image(&repo));
    let plan = project
        .cutover(["prune", "--keep", "1", "--dry-run", "--json"])
        .success()
        .stdout_json();
    assert_eq!(
        plan["removed"],
        serde_json::json!([tag("b"), tag("a")]),
        "{plan}"
    );
    assert!(
        cutover::docker::images::exists(&tag("a")),
        "dry run removes nothing"
    );
    project.cutover(["prune", "--keep", "1"]).success();
    assert!(cutover::docker::images::exists(&tag("c")));
    assert!(
        !cutover::docker::images::exists(&tag("b")) && !cutover::docker::images::exists(&tag("a"))
    );
    let _ = std::process::Command::new("docker")
        .args(["rmi", &tag("c")])
        .output();
}

/// `docker tag SRC DST`.
fn tag(src: &str, dst: &str) {
    let ok = Command::new("docker")
        .args(["tag", src, dst])
        .status()
        .unwrap();
    assert!(ok.success(), "docker tag {src} {dst}");
}

/// Issue #11, defect 4: two projects on one box share an image repository (prod and staging).
/// Staging's auto-prune (`keep_images: 1`) and `cutover prune --keep 1` must not remove the
/// image prod needs for `rollback`; prod's rollback then works. `--image` from another
/// repository than `app.image` gets a warning.
#[test]
fn prune_never_removes_another_projects_rollback_image() {
    if !ready() {
        return;
    }
    let registry = tempfile::tempdir().unwrap();
    let prod = Project::compose(App::compose());
    let repo = format!("cutover-shared-{}", prod.name);
    let (a, b, c) = (
        format!("{repo}:a"),
        format!("{repo}:b"),
        format!("{repo}:c"),
    );
    tag("cutover-demo:v1", &a);
    tag("cutover-demo:v2", &b);
    tag("cutover-demo:v2", &c);
    prod.write_config(&App::compose().image(&repo));
    let staging = Project::compose(App::compose().image(&repo));
    edit_config(&staging, |c| c["app"]["keep_images"] = serde_json::json!(1));
    let run = |project: &Project, args: &[&str]| {
        let mut cmd = project.command(args);
        cmd.env("CUTOVER_REGISTRY_DIR", registry.path());
        Run::of(cmd).success()
    };
    run(&prod, &["deploy", "--image", &a]);
    run(&prod, &["deploy", "--image", &b]);
    // prod: green runs b, a is the rollback target with no container left.
    assert!(cutover::docker::images::exists(&a));
    let said = run(&staging, &["deploy", "--image", &c]);
    assert!(
        cutover::docker::images::exists(&a),
        "staging's auto-prune removed prod's rollback image:\n{said}"
    );
    let pruned = run(&staging, &["prune", "--keep", "1", "--json"]);
    assert!(
        cutover::docker::images::exists(&a),
        "prune --keep 1 removed it:\n{pruned}"
    );
    assert!(cutover::docker::images::exists(&b) && cutover::docker::images::exists(&c));
    run(&prod, &["rollback"]);
    assert_eq!(prod.get("/").unwrap().1.trim(), "version=v1 color=blue");

    // A deploy from another repository than app.image is allowed, with a warning.
    let said = run(&staging, &["deploy", "--image", "cutover-demo:v1"]);
    assert!(
        said.stderr.contains(&format!(
            "warning: cutover-demo:v1 is not from app.image's repository {repo}"
        )),
        "{said}"
    );

    // Once prod is gone (its state dir vanishes), its images are fair game.
    drop(prod);
    let pruned = run(&staging, &["prune", "--keep", "1", "--json"]).stdout_json();
    assert!(pruned["removed"].to_string().contains(&a), "{pruned}");
    for image in [a, b, c] {
        let _ = Command::new("docker").args(["rmi", &image]).output();
    }
}
