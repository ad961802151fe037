//! The settle window on the fake box: switching back, not switching back to a dead color,
//! late restarts, a first deploy that does not settle, a color failing every poll.

use super::*;

#[test]
fn a_new_color_that_fails_in_the_settle_window_is_switched_back_from() {
    let fake = blue_serves_v1("  settle: 1s\n", Script::default());
    fake.script(|s| s.sick_once_serving = Some(Color::Green));
    let (result, notes) = Run::deploy(&fake).go_with_events(Some("v2"));
    let err = result.unwrap_err();
    assert_eq!(abort_of(&err), Abort::SettleFailed, "{err:#}");
    assert!(
        notes.contains(&"✗ settle".to_string()),
        "a failed settle has no check mark: {notes:?}"
    );
    assert_blue_kept(&fake);
    // The old color never stopped: nothing had to boot to switch back.
    assert!(fake
        .commands_with("docker stop")
        .iter()
        .all(|c| !c.contains("blue")));
    assert_eq!(
        fake.commands_with("-s reload").len(),
        3,
        "v1, green, back to blue"
    );
}

#[test]
fn with_no_healthy_color_nginx_stays_on_the_new_one_and_says_so() {
    let fake = blue_serves_v1("  settle: 2s\n", Script::default());
    fake.script(|s| {
        s.sick_once_serving = Some(Color::Green);
        s.dies_once_other_serves = Some(Color::Blue);
    });
    let err = Run::deploy(&fake).go(Some("v2")).unwrap_err();
    assert_eq!(abort_of(&err), Abort::SettleFailed, "{err:#}");
    let message = format!("{err:#}");
    assert!(message.contains("no healthy color exists"), "{message}");
    assert!(message.contains("web-blue is exited"), "{message}");
    assert!(!message.contains("blue still runs"), "{message}");
    // Not switched back to the dead blue: green still answers some requests.
    assert_eq!(fake.serving(), Some(Color::Green));
    assert_eq!(fake.include_on_disk(), Some(Color::Green));
    assert_eq!(fake.running(), [format!("web-green {}", fake.image("v2"))]);
    assert_eq!(
        state(&fake).active,
        Some(Color::Green),
        "the record says where nginx points"
    );
    assert_eq!(fake.commands_with("-s reload").len(), 2, "no switch back");
}

#[test]
fn a_switch_back_nginx_does_not_apply_puts_the_new_include_back() {
    let fake = blue_serves_v1("  settle: 2s\n", Script::default());
    fake.script(|s| {
        s.sick_once_serving = Some(Color::Green);
        s.reloads_ignored_from = Some(3);
    });
    let err = Run::deploy(&fake).go(Some("v2")).unwrap_err();
    assert_eq!(abort_of(&err), Abort::SettleFailed, "{err:#}");
    let message = format!("{err:#}");
    assert!(
        message.contains("nginx did not serve blue after switching back"),
        "{message}"
    );
    assert!(
        message.contains("the include is back on green"),
        "{message}"
    );
    assert_eq!(fake.serving(), Some(Color::Green));
    assert_eq!(
        fake.include_on_disk(),
        Some(Color::Green),
        "the include says what nginx serves"
    );
    assert_eq!(state(&fake).active, Some(Color::Green));
}

#[test]
fn a_restart_late_in_the_settle_window_is_seen_not_missed() {
    let fake = blue_serves_v1("  settle: 1s\n", Script::default());
    fake.script(|s| s.restarts_once_serving = Some((Color::Green, Duration::from_millis(900))));
    let err = Run::deploy(&fake).go(Some("v2")).unwrap_err();
    assert_eq!(abort_of(&err), Abort::SettleFailed, "{err:#}");
    assert!(format!("{err:#}").contains("restarts 1"), "{err:#}");
    assert_blue_kept(&fake);
}

#[test]
fn a_first_deploy_whose_app_crashes_in_the_watch_window_fails_and_says_what_it_saw() {
    let fake = FakeBox::new("  settle: 1s\n", Script::default());
    fake.script(|s| s.restarts_once_serving = Some((Color::Blue, Duration::from_millis(300))));
    let err = Run::deploy(&fake).go(Some("v1")).unwrap_err();
    assert_eq!(abort_of(&err), Abort::SettleFailed, "{err:#}");
    let message = format!("{err:#}");
    assert!(message.contains("restarts 1"), "{message}");
    assert!(
        message.contains("no older color to switch back to"),
        "{message}"
    );
    assert!(message.contains("last log lines of web-blue"), "{message}");
    assert_eq!(history(&fake).pop().unwrap().result, RunResult::Failed);
    // Left in place, and recorded as what nginx points at.
    assert_eq!(fake.serving(), Some(Color::Blue));
    assert_eq!(state(&fake).active, Some(Color::Blue));
}

/// A color failing every poll of the window fails it, however large `healthy_checks` is.
#[test]
fn a_color_failing_every_settle_poll_never_settles() {
    let fake = blue_serves_v1(
        "  settle: 2s\n  health: { path: /up, interval: 500ms, timeout: 8s, healthy_checks: 8 }\n",
        Script::default(),
    );
    fake.script(|s| s.sick_once_serving = Some(Color::Green));
    let err = Run::deploy(&fake).go(Some("v2")).unwrap_err();
    assert_eq!(abort_of(&err), Abort::SettleFailed, "{err:#}");
    assert_eq!(fake.serving(), Some(Color::Blue));
}
