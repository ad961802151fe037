//! What a switch does to clients that keep their connection: 100 keep-alive HTTP/1.1 clients
//! (GETs and POSTs on one reused connection each, through nginx) and 50 WebSockets opened
//! before each deploy, on the real engine and a real nginx (issue #26).
//!
//! One core, [`deploys_under_load`], takes the switch mode:
//! - **reload** (the include + `nginx -s reload`, today's switch): each reload makes nginx's
//!   old workers close idle keep-alive client connections, so a client writing onto one at
//!   that moment sees a reset or a close without an answer: nginx's floor. The counts are
//!   printed; what is asserted is what cannot be flaky: no failure of another kind (no 5xx,
//!   no timeout, no wrong echo), at most one failure per client per reload;
//! - **nft** (an nftables DNAT, no reload): 0 failed and 0 resets over 20 deploys.
//!
//! In both, every WebSocket stays open through the switch (all 50 are open when the deploy
//! reaches its drain, whose bound they hold to the end) and, when the old color stops,
//! ends with a close frame 1001 (going away) and a FIN, never a reset.
//!
//! The site is the built-in one, which passes WebSockets on (HTTP/1.1 to the app, `Upgrade`
//! and the project's own `Connection` map).

use std::time::{Duration, Instant};

use cutover::demo::keepalive::{self, FailKind, KeepAlive};
use cutover::demo::websocket::{self, End, Sockets, TcpEnd};

use crate::harness::common::require;
use crate::harness::project::{ready, App, Project};

const CLIENTS: usize = 100;
const SOCKETS: usize = 50;

/// How the deploys switch colors (`nginx.switch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Switch {
    /// Today's include + reload (the default).
    Reload,
    /// An nftables DNAT from two stable loopback ports to the active color.
    Nft,
}

/// What the run saw.
struct Measured {
    tally: keepalive::Tally,
    deploys: usize,
}

/// Deploys blue, starts the keep-alive clients, then `deploys` times: opens the WebSockets
/// on the active color, deploys the other one, and checks how each socket lived and ended.
/// None when the test cannot run here (said loudly by the gate).
fn deploys_under_load(switch: Switch, deploys: usize) -> Option<Measured> {
    if !ready() || (switch == Switch::Nft && !require("nft", "the nft switch (nginx.switch: nft)"))
    {
        return None;
    }
    // A drain bound the sockets hold to the end (they never go idle), a short watch window.
    let app = match switch {
        Switch::Reload => App::compose().switch("reload"),
        Switch::Nft => App::compose().switch("nft"),
    }
    .drain("3s")
    .settle("1s");
    let project = Project::compose(app);
    project.deploy_ok("cutover-demo:v1");

    let load = KeepAlive::start(keepalive::Options::new(
        project.port,
        CLIENTS,
        Duration::from_secs(900),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while load.answered() < 2 * CLIENTS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        load.answered() >= 2 * CLIENTS,
        "the keep-alive clients got {} answers in a minute",
        load.answered()
    );

    for n in 0..deploys {
        let (image, old, new, version) = if n % 2 == 0 {
            ("cutover-demo:v2", "blue", "green", "v2")
        } else {
            ("cutover-demo:v1", "green", "blue", "v1")
        };
        let sockets = Sockets::open(websocket::Options::new(
            project.port,
            SOCKETS,
            Duration::from_secs(300),
        ));
        let opened = sockets.snapshot();
        assert!(
            opened
                .iter()
                .all(|o| o.end == End::Open && o.color.as_deref() == Some(old)),
            "deploy {n}: not every socket opened on {old}: {:?}",
            websocket::summary(&opened)
        );
        let child = project.spawn(["deploy", "--image", image]);
        // The switch is behind us once the deploy drains the old color.
        project.wait_for_step("drain");
        let open_in_drain = sockets.open_now();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "deploy {n} to {new}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The old color has stopped: every socket has heard of it.
        sockets.wait_all_ended(Duration::from_secs(15));
        let outcomes = sockets.finish();
        let summary = websocket::summary(&outcomes);
        eprintln!(
            "switch_clients [{switch:?}] deploy {n} ({old} -> {new}): {open_in_drain} of {SOCKETS} WebSockets open in the drain; then {summary:?}"
        );
        assert_eq!(
            open_in_drain, SOCKETS,
            "deploy {n}: sockets ended before the drain: {summary:?}"
        );
        for (i, o) in outcomes.iter().enumerate() {
            assert_eq!(
                o.end,
                End::CloseFrame {
                    code: Some(1001),
                    tcp: TcpEnd::Fin
                },
                "deploy {n}, socket {i}: {o:?}; all: {summary:?}"
            );
            assert!(
                o.echoes > 0,
                "deploy {n}, socket {i} never got an echo: {o:?}"
            );
            assert_eq!(o.wrong_echoes, 0, "deploy {n}, socket {i}: {o:?}");
        }
        let (code, body) = project.get("/").expect("nginx answers");
        assert_eq!(
            (code, body.trim()),
            (200, format!("version={version} color={new}").as_str())
        );
    }

    let tally = load.finish();
    let fresh = tally.failures.iter().filter(|f| !f.reused).count();
    let posts_failed = tally.posts_sent - tally.posts_answered;
    eprintln!(
        "switch_clients [{switch:?}] {deploys} deploys, {CLIENTS} keep-alive clients: {} sent, {} answered, {} failed ({}; {fresh} on a fresh connection), POSTs {} of {} answered ({posts_failed} failed), {} requests on a reused connection, {} connections, answers by color {:?}",
        tally.sent,
        tally.answered,
        tally.failed,
        tally.kinds_line(),
        tally.posts_answered,
        tally.posts_sent,
        tally.reused,
        tally.connections,
        tally.by_color,
    );
    for f in tally.failures.iter().take(20) {
        eprintln!("switch_clients [{switch:?}]   failure: {f:?}");
    }
    // The load crossed the switches, POSTs included.
    assert!(
        tally.by_color.contains_key("blue") && tally.by_color.contains_key("green"),
        "{:?}",
        tally.by_color
    );
    assert!(tally.posts_answered > CLIENTS, "{tally:?}");
    assert!(
        tally.reused > tally.sent / 2,
        "connections were not reused: {tally:?}"
    );
    Some(Measured { tally, deploys })
}

/// Today's switch: the WebSockets are kept until the drain and closed cleanly; keep-alive
/// failures happen (nginx's floor) and are only of the kinds a reload causes.
#[test]
fn reload_switch_keeps_websockets_until_the_drain_and_counts_keepalive_failures() {
    let Some(Measured { tally, deploys }) = deploys_under_load(Switch::Reload, 2) else {
        return;
    };
    let reload_kinds = [FailKind::Reset, FailKind::ClosedWithoutAnswer];
    assert!(
        tally
            .failures
            .iter()
            .all(|f| reload_kinds.contains(&f.kind)),
        "a failure a reload does not explain: {:?}",
        tally.failures
    );
    // A reload closes each client's idle connection at most once (the client's next
    // connection goes to the new workers), and a deploy reloads twice: the switch and the
    // end of the watch window.
    assert!(
        tally.failed <= CLIENTS * 2 * deploys,
        "{} failed: more than one per client per reload",
        tally.failed
    );
}

/// The nftables switch: no reload, so nothing is cut: 0 failed and 0 resets for 100
/// keep-alive clients and their POSTs over 20 deploys, every WebSocket kept until the drain.
#[test]
fn nft_switch_loses_no_keepalive_request_over_20_deploys() {
    let Some(Measured { tally, .. }) = deploys_under_load(Switch::Nft, 20) else {
        return;
    };
    assert_eq!(tally.failed, 0, "{:?}", tally.failures);
    assert_eq!(tally.count(FailKind::Reset), 0);
    assert_eq!(tally.posts_answered, tally.posts_sent);
}
