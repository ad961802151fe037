//! Step 7's proof: after the include switched and nginx reloaded, poll through nginx until
//! it serves the new color, so the old one stops only once nobody needs it.

use std::time::Duration;

use crate::config::{Color, Config};
use crate::health::{self, Answer, Outcome, Prober, Verdict};

/// Polls nginx until it serves `to` through `include`, the text just written.
///
/// With the include's `/.cutover/health` (the built-in template): until one answer of the
/// health path through it carries the include's own marker (`X-Cutover-Active`), which no
/// worker from before the reload, nor another project's site, can send. Without it (a custom
/// template): until `/.cutover/active` answers the include's marker (or, for an include with
/// no marker, any of this project's) and then the health path answers through nginx, counted
/// only once the workers from before the reload (`workers_before`) have exited, since one of
/// them could be the one answering.
pub fn probe_through_nginx(
    config: &Config,
    to: Color,
    include: &str,
    workers_before: &[u32],
) -> Result<Option<String>, String> {
    let marker_wanted = expected_marker(include);
    match marker_wanted {
        Some(marker) if include.contains("location = /.cutover/health") => {
            probe_route(config, to, &marker)
        }
        marker => probe_marker_then_health(config, to, marker.as_deref(), workers_before),
    }
}

/// Polls `probe` until it passes, for at most 10 s. The reload is asynchronous: retry
/// quickly so the switch time is nginx's, not ours.
fn poll_nginx(probe: impl FnMut() -> (bool, Answer)) -> Outcome<String> {
    health::wait_until(
        probe,
        Duration::from_millis(10),
        Duration::from_secs(10),
        &mut |_: Duration, _: Option<&Answer>| Verdict::<String>::Continue,
    )
}

/// The headers `/.cutover/health` answers with: the include's marker, and the address nginx
/// got the answer from (`$upstream_addr`: every address it tried, comma-separated).
const MARKER_HEADER: &str = "X-Cutover-Active";
const UPSTREAM_HEADER: &str = "X-Cutover-Upstream";

fn probe_route(config: &Config, to: Color, marker: &str) -> Result<Option<String>, String> {
    let url = format!("{}/.cutover/health", config.nginx.probe_base());
    let host = config.nginx.probe_host();
    let host = host.as_deref();
    let prober = Prober::new(Duration::from_secs(2));
    let expected = config.app.health.status;
    // The nft include's route names the switch's primary port: nginx sees the address before
    // the kernel's DNAT, and the rule, read back by the switch, says which color it leads to.
    let address = match crate::render::switch_addresses(config) {
        Some([primary, _]) if marker.starts_with("nft ") => primary,
        _ => crate::render::upstream_address(config, to),
    };
    let address = address.as_str();
    let outcome = poll_nginx(|| {
        let (answer, headers) =
            prober.get_with_headers(&url, host, &[MARKER_HEADER, UPSTREAM_HEADER]);
        let [from, via] = [&headers[0], &headers[1]];
        match from {
            // The new include answered: its route must have reached this color itself
            // (a stale group, or a backup standing in, names other addresses).
            Some(from) if from.trim() == marker => match via.as_deref().map(str::trim) {
                Some(via) if via == address => (
                    matches!(answer, Answer::Status { code, .. } if code == expected),
                    answer,
                ),
                via => (
                    false,
                    Answer::NoAnswer(format!(
                        "{} through {}, not {to} at {address}",
                        answer.describe(),
                        via.filter(|v| !v.is_empty() && *v != "-")
                            .unwrap_or("no upstream")
                    )),
                ),
            },
            // An old worker's include, or another project's site answering this name.
            Some(from) => (
                false,
                Answer::NoAnswer(format!(
                    "{} from an include whose marker is {:?}, not the new include's {marker:?}",
                    answer.describe(),
                    from.trim()
                )),
            ),
            None => (false, answer),
        }
    });
    match outcome {
        Outcome::Passed { .. } => Ok(None),
        Outcome::TimedOut { last, .. } => Err(format!(
            "nginx did not serve {to} after the reload: {url} last answered {}",
            last.map(|a| a.describe())
                .unwrap_or_else(|| "nothing".into())
        )),
        Outcome::Aborted { reason, .. } => Err(reason),
    }
}

fn probe_marker_then_health(
    config: &Config,
    to: Color,
    marker_wanted: Option<&str>,
    workers_before: &[u32],
) -> Result<Option<String>, String> {
    let base = config.nginx.probe_base();
    let host = config.nginx.probe_host();
    let host = host.as_deref();
    let prober = Prober::new(Duration::from_secs(2));
    let marker_url = format!("{base}/.cutover/active");
    let health_url = format!("{base}{}", config.app.health.path);
    let expected = config.app.health.status;
    let mut note = Some(
        "the nginx include has no /.cutover/health (a custom template): the health path \
         through nginx counted only once nginx's workers from before the reload had exited"
            .to_string(),
    );
    let outcome = poll_nginx(|| {
        let marker = prober.get(&marker_url, host);
        match &marker {
            Answer::Status { code: 200, body }
                if marker_wanted.is_some_and(|e| e != body.trim()) =>
            {
                return (
                    false,
                    Answer::NoAnswer(format!(
                        "HTTP 200 {:?}, not the new include's {:?}",
                        body.trim(),
                        marker_wanted.unwrap_or_default()
                    )),
                );
            }
            Answer::Status { code: 200, body } => {
                match super::observe::Marker::parse(body).ours(config) {
                    Ok(color) if color == to => {}
                    Ok(color) => {
                        return (
                            false,
                            Answer::NoAnswer(format!("HTTP 200 naming {color}, not {to}")),
                        )
                    }
                    // Another project's include answers this project's name: say whose.
                    Err(why) => {
                        return (
                            false,
                            Answer::NoAnswer(format!("HTTP 200 {:?}: {why}", body.trim())),
                        )
                    }
                }
            }
            Answer::Status { code: 404, .. } => {
                note = Some(
                    "the nginx include has no /.cutover/active nor /.cutover/health: checked \
                         the health path only, once nginx's workers from before the reload had \
                         exited"
                        .to_string(),
                );
            }
            other => return (false, other.clone()),
        }
        if let Some(pid) = workers_before
            .iter()
            .find(|pid| crate::nginx::process_alive(**pid))
        {
            return (
                false,
                Answer::NoAnswer(format!(
                    "nginx worker {pid} from before the reload still runs: an answer of the \
                         health path could be its"
                )),
            );
        }
        let health = prober.get(&health_url, host);
        (
            matches!(health, Answer::Status { code, .. } if code == expected),
            health,
        )
    });
    match outcome {
        Outcome::Passed { .. } => Ok(note),
        Outcome::TimedOut { last, .. } => Err(format!(
            "nginx did not serve {to} after the reload: {marker_url} / {health_url} last answered {}",
            last.map(|a| a.describe()).unwrap_or_else(|| "nothing".into())
        )),
        Outcome::Aborted { reason, .. } => Err(reason),
    }
}

/// What the include's `/.cutover/active` location answers (`return 200 "…";`), trimmed;
/// `None` for an include without it (a custom template).
fn expected_marker(include: &str) -> Option<String> {
    let (_, after) = include.split_once("location = /.cutover/active")?;
    let (_, quoted) = after.split_once("return 200 \"")?;
    let (body, _) = quoted.split_once('"')?;
    Some(body.replace("\\n", "\n").trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_marker_is_read_from_the_include() {
        let include = "set $x y;\nlocation = /.cutover/active {\n    if ($a) { return 403; }\n    \
                       return 200 \"green http://127.0.0.1:9 shop\\n\";\n}\n";
        assert_eq!(
            expected_marker(include).as_deref(),
            Some("green http://127.0.0.1:9 shop")
        );
        assert_eq!(expected_marker("set $service_url http://x;"), None);
    }
}
