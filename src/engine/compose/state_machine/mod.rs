//! The compose state machine walked through its branches on a [`FakeBox`] (unit tests only):
//! for each failure, what runs, what nginx serves, what the include on disk says and what is
//! recorded afterwards. docs/ARCHITECTURE.md's "The deploy state machine" is the spec; the
//! real-engine tests (tests/integration/deploy*.rs and friends) remain the proof on docker and nginx.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::fake_box::{FakeBox, Script};
use super::{Deployer, Summary};
use crate::config::Color;
use crate::engine::{Abort, Event, Failed, Reporter, Request, Step};
use crate::render::Renderer;
use crate::secrets::SecretKeys;
use crate::state::{Action, HistoryEntry, RunResult, State, StateDir};

mod settle;

#[derive(Default)]
struct Events(Vec<Event>);

impl Reporter for Events {
    fn event(&mut self, event: Event) {
        self.0.push(event);
    }
}

struct Run<'f> {
    fake: &'f FakeBox,
    interrupted: bool,
    /// SIGINT/SIGTERM arrives this long after the deploy starts.
    interrupt_after: Option<Duration>,
    dry_run: bool,
    action: Action,
    lock_wait: Duration,
}

impl<'f> Run<'f> {
    fn deploy(fake: &'f FakeBox) -> Self {
        Run {
            fake,
            interrupted: false,
            interrupt_after: None,
            dry_run: false,
            action: Action::Deploy,
            lock_wait: Duration::ZERO,
        }
    }

    fn go(&self, image: Option<&str>) -> anyhow::Result<Summary> {
        self.go_with_events(image).0
    }

    /// The run, and the notes it reported along the way.
    fn go_with_events(&self, image: Option<&str>) -> (anyhow::Result<Summary>, Vec<String>) {
        let deployer = Deployer {
            loaded: &self.fake.loaded,
            compose: self.fake.compose(),
            renderer: Renderer::new(self.fake.dir.path()).unwrap(),
            secrets: BTreeMap::new(),
            secret_keys: SecretKeys::default(),
            secret_sources: Default::default(),
            secret_files: None,
            identity: None,
            rollback_values: Default::default(),
            interrupted: Arc::new(AtomicBool::new(self.interrupted)),
        };
        if let Some(after) = self.interrupt_after {
            let flag = Arc::clone(&deployer.interrupted);
            std::thread::spawn(move || {
                std::thread::sleep(after);
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            });
        }
        let request = Request {
            image: image.map(|i| self.fake.image(i)),
            action: self.action,
            dry_run: self.dry_run,
            force: false,
            lock_wait: self.lock_wait,
            release: true,
            decrypted: Duration::ZERO,
        };
        let mut events = Events::default();
        let result = deployer.run(&request, &mut events);
        // Notes as they are, and a failed step as a note `✗ <step>` (the printer's mark).
        let notes = events
            .0
            .into_iter()
            .filter_map(|e| match e {
                Event::Note(text) => Some(text),
                Event::Failed { step, .. } => Some(format!("✗ {step}")),
                _ => None,
            })
            .collect();
        (result, notes)
    }
}

fn state(fake: &FakeBox) -> State {
    StateDir::new(fake.loaded.state_dir()).load().unwrap()
}

fn history(fake: &FakeBox) -> Vec<HistoryEntry> {
    StateDir::new(fake.loaded.state_dir()).history().unwrap()
}

/// The project's deploy lock, held by another (pretend) deploy until dropped.
fn hold_the_lock(fake: &FakeBox) -> crate::state::DeployLock {
    let holder = crate::state::Holder {
        pid: 1,
        user: "ci".into(),
        started: "now".into(),
        action: "deploy x:v9".into(),
    };
    StateDir::new(fake.loaded.state_dir())
        .lock(Duration::ZERO, &holder)
        .unwrap()
}

fn abort_of(err: &anyhow::Error) -> Abort {
    err.downcast_ref::<Failed>()
        .unwrap_or_else(|| panic!("not a Failed: {err:#}"))
        .abort
}

/// Blue serves v1: the starting point of every failure below.
fn blue_serves_v1(app_yaml: &str, script: Script) -> FakeBox {
    let fake = FakeBox::new(app_yaml, script);
    let first = Run::deploy(&fake).go(Some("v1")).unwrap();
    assert_eq!(first.detail.to, Color::Blue);
    assert_eq!(fake.serving(), Some(Color::Blue));
    fake
}

/// After a failed deploy to green: blue still serves v1, green is gone, the include on disk
/// names blue, the record says blue, nothing is in progress, and the attempt is in history.
fn assert_blue_kept(fake: &FakeBox) {
    let v1 = fake.image("v1");
    assert_eq!(fake.running(), [format!("web-blue {v1}")]);
    assert_eq!(fake.serving(), Some(Color::Blue));
    assert_eq!(fake.include_on_disk(), Some(Color::Blue));
    let state = state(fake);
    assert_eq!(state.active, Some(Color::Blue));
    assert!(state.in_progress.is_none(), "{state:?}");
    let last = history(fake).pop().unwrap();
    assert_eq!(last.result, RunResult::Failed, "{last:?}");
    assert_eq!(last.to, Some(Color::Green));
}

#[test]
fn a_first_deploy_then_a_second_switches_and_stops_the_old_color() {
    let fake = blue_serves_v1("", Script::default());
    let summary = Run::deploy(&fake).go(Some("v2")).unwrap();
    assert_eq!(
        (summary.detail.from, summary.detail.to),
        (Some(Color::Blue), Color::Green)
    );
    assert_eq!(fake.running(), [format!("web-green {}", fake.image("v2"))]);
    assert_eq!(fake.serving(), Some(Color::Green));
    let state = state(&fake);
    assert_eq!(state.active, Some(Color::Green));
    assert_eq!(state.previous_image, Some(fake.image("v1")));
    assert_eq!(history(&fake).len(), 2);
    // Exactly one reload per deploy, each after a passing `nginx -t`.
    assert_eq!(fake.commands_with("-s reload").len(), 2);
    // The state dir a deploy creates is 0750, as bootstrap makes it.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(fake.loaded.state_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750);
}

#[test]
fn a_step_the_record_cannot_take_is_a_warning_not_lost() {
    // The switch's and the stop's steps are written on threads beside them: their errors
    // come back as warnings as the other steps' do.
    let fake = blue_serves_v1("", Script::default());
    fake.script(|s| s.up_breaks_the_state_file = true);
    let (_, notes) = Run::deploy(&fake).go_with_events(Some("v2"));
    for step in ["health", "switch", "stop"] {
        let warned = format!("could not record step `{step}`");
        assert!(
            notes.iter().any(|n| n.contains(&warned)),
            "{step}: {notes:?}"
        );
    }
    // The new color serves all the same: the record is `status`'s detail only.
    assert_eq!(fake.serving(), Some(Color::Green));
}

#[test]
fn the_dry_run_plans_exactly_the_steps_the_deploy_records() {
    let fake = blue_serves_v1("  settle: 300ms\n", Script::default());
    let plan = Run {
        dry_run: true,
        ..Run::deploy(&fake)
    }
    .go(Some("v2"))
    .unwrap();
    assert_eq!(
        fake.serving(),
        Some(Color::Blue),
        "a dry run changes nothing"
    );
    assert_eq!(history(&fake).len(), 1);
    let done = Run::deploy(&fake).go(Some("v2")).unwrap();
    let ran: Vec<Step> = done.steps.iter().map(|s| s.step).collect();
    assert_eq!(ran, plan.plan_steps);
    assert!(
        ran.contains(&Step::Settle) && ran.contains(&Step::Stop),
        "{ran:?}"
    );
    assert!(!plan.plan.is_empty());
}

#[test]
fn a_failed_up_tears_down_and_leaves_nginx_alone() {
    let fake = blue_serves_v1("", Script::default());
    fake.script(|s| {
        s.up_fails.insert("web-green".into());
    });
    let err = Run::deploy(&fake).go(Some("v2")).unwrap_err();
    assert_eq!(abort_of(&err), Abort::StartFailed, "{err:#}");
    assert!(
        format!("{err:#}").contains("nginx still serves blue"),
        "{err:#}"
    );
    assert_blue_kept(&fake);
    assert_eq!(
        fake.commands_with("-s reload").len(),
        1,
        "no reload for green"
    );
}

#[test]
fn a_health_gate_that_never_passes_tears_down() {
    let fake = blue_serves_v1("", Script::default());
    fake.script(|s| {
        s.unhealthy.insert(Color::Green);
    });
    let err = Run::deploy(&fake).go(Some("v2")).unwrap_err();
    assert_eq!(abort_of(&err), Abort::HealthTimedOut, "{err:#}");
    assert_blue_kept(&fake);
    let last = history(&fake).pop().unwrap();
    let steps: Vec<Step> = last.steps.iter().map(|s| s.step).collect();
    assert!(steps.ends_with(&[Step::Up, Step::Teardown]), "{steps:?}");
}

#[test]
fn a_container_that_exits_during_the_gate_fails_fast() {
    let fake = blue_serves_v1("", Script::default());
    fake.script(|s| {
        s.dies_on_start.insert(Color::Green);
    });
    let started = std::time::Instant::now();
    let err = Run::deploy(&fake).go(Some("v2")).unwrap_err();
    assert_eq!(abort_of(&err), Abort::ContainerDied, "{err:#}");
    // The watcher saw the death: the 2 s health timeout did not run out.
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    assert_blue_kept(&fake);
}

#[test]
fn a_restart_the_watcher_has_not_seen_yet_fails_the_gate_when_it_passes() {
    // The watcher looks every 250 ms: the pass asks the engine once more (from the first
    // healthy answer on, beside the confirmations), and with no settle window (the
    // stand-in's default) nothing else would.
    let fake = blue_serves_v1("", Script::default());
    fake.script(|s| s.restarts_during_gate = Some(Color::Green));
    let err = Run::deploy(&fake).go(Some("v2")).unwrap_err();
    assert_eq!(abort_of(&err), Abort::ContainerDied, "{err:#}");
    assert!(format!("{err:#}").contains("restarts 1"), "{err:#}");
    assert_blue_kept(&fake);
}

#[test]
fn a_failing_nginx_test_restores_the_include_and_never_reloads() {
    let fake = blue_serves_v1("", Script::default());
    fake.script(|s| s.nginx_test_fails = true);
    let err = Run::deploy(&fake).go(Some("v2")).unwrap_err();
    assert_eq!(abort_of(&err), Abort::SwitchFailed, "{err:#}");
    assert_blue_kept(&fake);
    assert_eq!(fake.commands_with("-s reload").len(), 1);
}

#[test]
fn a_reload_nginx_does_not_apply_fails_the_probe_and_restores_the_include() {
    let fake = blue_serves_v1("", Script::default());
    fake.script(|s| s.reload_ignored = true);
    let err = Run::deploy(&fake).go(Some("v2")).unwrap_err();
    assert_eq!(abort_of(&err), Abort::ProbeFailed, "{err:#}");
    assert!(
        format!("{err:#}").contains("restored the previous nginx include"),
        "{err:#}"
    );
    assert_blue_kept(&fake);
}

#[test]
fn an_interrupt_before_the_switch_tears_down_and_records_interrupted() {
    let fake = blue_serves_v1("", Script::default());
    let err = Run {
        interrupted: true,
        ..Run::deploy(&fake)
    }
    .go(Some("v2"))
    .unwrap_err();
    assert_eq!(abort_of(&err), Abort::Interrupted, "{err:#}");
    let v1 = fake.image("v1");
    assert_eq!(fake.running(), [format!("web-blue {v1}")]);
    assert_eq!(fake.serving(), Some(Color::Blue));
    let last = history(&fake).pop().unwrap();
    assert_eq!(last.result, RunResult::Interrupted, "{last:?}");
}

/// Every wait answers an interrupt within a second, however long its interval: the polls of
/// an app that answers, never healthy. (The confirmations of one that does are at most 2 ms
/// apart, whatever the interval: `health_gate::CONFIRM_EVERY`.)
#[test]
fn an_interrupt_during_long_health_intervals_is_answered_at_once() {
    // A 30 s poll interval, and green answers 503.
    let fake = blue_serves_v1(
        "  health: { path: /up, interval: 30s, timeout: 60s, healthy_checks: 1 }\n",
        Script::default(),
    );
    fake.script(|s| {
        s.unhealthy.insert(Color::Green);
    });
    let started = std::time::Instant::now();
    let err = Run {
        interrupt_after: Some(Duration::from_millis(300)),
        ..Run::deploy(&fake)
    }
    .go(Some("v2"))
    .unwrap_err();
    assert_eq!(abort_of(&err), Abort::Interrupted, "{err:#}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(fake.serving(), Some(Color::Blue));
    assert_eq!(fake.running(), [format!("web-blue {}", fake.image("v1"))]);
    let last = history(&fake).pop().unwrap();
    assert_eq!(last.result, RunResult::Interrupted);
    assert_eq!(
        last.reason.as_deref(),
        Some("deploy interrupted"),
        "{last:?}"
    );
}

#[test]
fn a_failing_pre_deploy_hook_is_a_recorded_refusal_that_changes_nothing() {
    let fake = FakeBox::with_sections(
        "",
        "hooks:\n  pre_deploy: { command: [sh, -c, \"exit 3\"] }\n",
        Script::default(),
    );
    let err = Run::deploy(&fake).go(Some("v1")).unwrap_err();
    assert_eq!(abort_of(&err), Abort::HookFailed, "{err:#}");
    assert!(fake.running().is_empty());
    assert!(fake.commands_with(" up ").is_empty(), "nothing was started");
    assert_eq!(fake.serving(), None);
    let last = history(&fake).pop().unwrap();
    assert_eq!(last.result, RunResult::Failed);
    assert!(state(&fake).in_progress.is_none());
}

#[test]
fn an_interrupt_during_pre_deploy_is_an_interrupt_not_a_timeout() {
    let fake = FakeBox::with_sections(
        "",
        "hooks:\n  timeout: 1m\n  pre_deploy: { command: [sleep, \"30\"] }\n  \
         on_failure: { command: [sh, -c, 'echo \"$CUTOVER_RESULT\" > on_failure.out'] }\n",
        Script::default(),
    );
    let started = std::time::Instant::now();
    let err = Run {
        interrupt_after: Some(Duration::from_millis(300)),
        ..Run::deploy(&fake)
    }
    .go(Some("v1"))
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(abort_of(&err), Abort::Interrupted, "{err:#}");
    let message = format!("{err:#}");
    assert!(
        message.contains("was interrupted (SIGINT/SIGTERM)"),
        "{message}"
    );
    assert!(!message.contains("timed out"), "{message}");
    let last = history(&fake).pop().unwrap();
    assert_eq!(last.result, RunResult::Interrupted, "{last:?}");
    let seen = std::fs::read_to_string(fake.dir.path().join("on_failure.out")).unwrap();
    assert_eq!(seen.trim(), "interrupted");
    assert!(fake.running().is_empty());
}

/// A signal that arrived before the first change (while the config loaded, the lock was
/// taken or the box observed) stops the deploy before its pre_deploy hook runs.
#[test]
fn an_interrupt_before_the_first_change_runs_no_hook_and_starts_nothing() {
    let fake = FakeBox::with_sections(
        "",
        "hooks:\n  timeout: 1m\n  pre_deploy: { command: [touch, pre_deploy.ran] }\n",
        Script::default(),
    );
    let err = Run {
        interrupted: true,
        ..Run::deploy(&fake)
    }
    .go(Some("v1"))
    .unwrap_err();
    assert_eq!(abort_of(&err), Abort::Interrupted, "{err:#}");
    assert!(
        format!("{err:#}").contains("before anything changed"),
        "{err:#}"
    );
    assert!(!fake.dir.path().join("pre_deploy.ran").exists());
    assert!(fake.running().is_empty());
    let last = history(&fake).pop().unwrap();
    assert_eq!(last.result, RunResult::Interrupted, "{last:?}");
}

/// `--lock-wait 1m` behind another deploy answers a SIGINT at once instead of waiting the
/// minute: an interrupted deploy that changed nothing, recorded as such.
#[test]
fn an_interrupt_while_waiting_for_the_lock_ends_the_wait() {
    let fake = blue_serves_v1("", Script::default());
    let _held = hold_the_lock(&fake);
    let started = std::time::Instant::now();
    let err = Run {
        interrupt_after: Some(Duration::from_millis(300)),
        lock_wait: Duration::from_secs(60),
        ..Run::deploy(&fake)
    }
    .go(Some("v2"))
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the wait went on for {:?}",
        started.elapsed()
    );
    assert_eq!(abort_of(&err), Abort::Interrupted, "{err:#}");
    assert!(
        format!("{err:#}").contains("waiting for the deploy lock"),
        "{err:#}"
    );
    assert_eq!(fake.running(), [format!("web-blue {}", fake.image("v1"))]);
    let last = history(&fake).pop().unwrap();
    assert_eq!(last.result, RunResult::Interrupted, "{last:?}");
    assert_eq!(last.image, fake.image("v2"));
}

#[test]
fn a_redeploy_after_an_outage_is_a_recovery_of_what_served_not_a_downgrade() {
    let fake = blue_serves_v1("", Script::default());
    Run::deploy(&fake).go(Some("v2")).unwrap();
    fake.reboot_with_nothing_restarted();
    let status = super::status::status(&fake.loaded).unwrap();
    assert!(
        status.down.as_deref().is_some_and(|d| d.contains("nginx points at green, but no green container is running")),
        "status must say the site is down (and exit 1): {:?}",
        status.down
    );
    let (summary, notes) = Run::deploy(&fake).go_with_events(None);
    let summary = summary.unwrap();
    assert!(!summary.first_deploy, "a recovery is not a first deploy");
    assert_eq!(
        summary.image,
        fake.image("v2"),
        "green's v2, not blue's older v1"
    );
    assert_eq!(summary.detail.to, Color::Green);
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("recovery: nothing runs, but green served")),
        "{notes:?}"
    );
    assert_eq!(fake.serving(), Some(Color::Green));
    assert_eq!(fake.running(), [format!("web-green {}", fake.image("v2"))]);
    let state = state(&fake);
    assert_eq!(state.active, Some(Color::Green));
    assert_eq!(
        state.previous_image,
        Some(fake.image("v1")),
        "rollback still goes to v1"
    );
    assert_eq!(super::status::status(&fake.loaded).unwrap().down, None);
}

#[test]
fn a_deploy_refused_by_the_lock_changes_nothing_and_is_recorded() {
    let fake = blue_serves_v1("", Script::default());
    let _held = hold_the_lock(&fake);
    let err = Run::deploy(&fake).go(Some("v2")).unwrap_err();
    assert!(
        format!("{err:#}").contains("another deploy is running"),
        "{err:#}"
    );
    assert_eq!(fake.running(), [format!("web-blue {}", fake.image("v1"))]);
    let last = history(&fake).pop().unwrap();
    assert_eq!(last.result, RunResult::Failed);
    assert_eq!(last.image, fake.image("v2"));
    assert!(
        last.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("refused: another deploy is running")),
        "{last:?}"
    );
    assert_eq!(history(&fake).len(), 2);
}

#[test]
fn a_rollback_goes_back_to_the_previous_image_on_the_other_color() {
    let fake = blue_serves_v1("", Script::default());
    Run::deploy(&fake).go(Some("v2")).unwrap();
    let back = Run {
        action: Action::Rollback,
        ..Run::deploy(&fake)
    }
    .go(None)
    .unwrap();
    assert_eq!(back.detail.to, Color::Blue);
    assert_eq!(fake.running(), [format!("web-blue {}", fake.image("v1"))]);
    assert_eq!(fake.serving(), Some(Color::Blue));
}

#[test]
fn the_plan_for_a_first_deploy_has_no_stop_and_waits_only_for_old_workers() {
    let fake = FakeBox::new("", Script::default());
    let plan = Run {
        dry_run: true,
        ..Run::deploy(&fake)
    }
    .go(Some("v1"))
    .unwrap();
    assert!(
        !plan.plan_steps.contains(&Step::Stop),
        "{:?}",
        plan.plan_steps
    );
    assert!(plan.first_deploy);
    let ops_free_of_stop = plan
        .plan
        .iter()
        .all(|line| !line.detail.starts_with("stop -t"));
    assert!(ops_free_of_stop, "{:?}", plan.plan);
}

/// The switch time is the health gate's pass to nginx serving the new color: not the settle
/// window, the drain and the stop after it.
#[test]
fn switch_ms_ends_when_nginx_serves_the_new_color() {
    let fake = blue_serves_v1("  settle: 1500ms\n", Script::default());
    let summary = Run::deploy(&fake).go(Some("v2")).unwrap();
    let ms = summary.detail.switch_ms.unwrap();
    assert!(ms < 1000, "switch_ms {ms} includes the 1.5 s settle window");
}

/// A failure before the switch records nothing new, even where the include on disk already
/// names the new color (a recovery's, bootstrap's).
#[test]
fn a_failure_before_the_switch_never_records_the_new_color_or_image() {
    let fake = blue_serves_v1("", Script::default());
    Run::deploy(&fake).go(Some("v2")).unwrap();
    fake.reboot_with_nothing_restarted();
    fake.script(|s| {
        s.unhealthy.insert(Color::Green);
    });
    Run::deploy(&fake).go(Some("v3")).unwrap_err();
    let st = state(&fake);
    assert_eq!(
        st.images.get(&Color::Green),
        Some(&fake.image("v2")),
        "{st:?}"
    );

    let fresh = FakeBox::new("", Script::default());
    // bootstrap wrote the include, pointing at blue, and nginx loaded it.
    let text = Renderer::new(&fresh.loaded.dir)
        .unwrap()
        .include(
            &fresh.loaded.config,
            Color::Blue,
            None,
            crate::render::Route::Direct,
        )
        .unwrap();
    std::fs::write(&fresh.loaded.config.nginx.include, text).unwrap();
    fresh.reboot_with_nothing_restarted();
    fresh.script(|s| {
        s.unhealthy.insert(Color::Blue);
    });
    Run::deploy(&fresh).go(Some("v1")).unwrap_err();
    let st = state(&fresh);
    assert_eq!(st.active, None, "{st:?}");
}
