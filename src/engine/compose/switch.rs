//! Step 7's proof: after the include switched and nginx reloaded, poll through nginx until
//! it serves the new color, so the old one stops only once nobody needs it.

use std::time::Duration;

use crate::config::{Color, Config};
use crate::health::{self, Answer, Outcome, Prober, Verdict};

/// Polls nginx until it serves `to`: its include answers `/.cutover/active` with the new
/// color and the health path answers through nginx. `include` is the text just written:
/// when it holds the marker, nginx must answer exactly that marker (a one-word marker from
/// some other site, or one that names another project or address, does not pass).
pub fn probe_through_nginx(
    config: &Config,
    to: Color,
    include: &str,
) -> Result<Option<String>, String> {
    let marker_wanted = expected_marker(include);
    let base = config.nginx.probe_base();
    let host = config.nginx.probe_host();
    let prober = Prober::new(Duration::from_secs(2));
    let marker_url = format!("{base}/.cutover/active");
    let health_url = format!("{base}{}", config.app.health.path);
    let expected = config.app.health.status;
    let mut note = None;
    let outcome = health::wait_until(
        || {
            let marker = prober.get(&marker_url, host);
            match &marker {
                Answer::Status { code: 200, body }
                    if marker_wanted.as_deref().is_some_and(|e| e != body.trim()) =>
                {
                    return (
                        false,
                        Answer::NoAnswer(format!(
                            "HTTP 200 {:?}, not the new include's {:?}",
                            body.trim(),
                            marker_wanted.as_deref().unwrap_or_default()
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
                        "the nginx include has no /.cutover/active; checked the health path only"
                            .to_string(),
                    );
                }
                other => return (false, other.clone()),
            }
            let health = prober.get(&health_url, host);
            (
                matches!(health, Answer::Status { code, .. } if code == expected),
                health,
            )
        },
        // The reload is asynchronous: retry quickly so the switch time is nginx's, not ours.
        Duration::from_millis(10),
        Duration::from_secs(10),
        &mut |_: Duration, _: Option<&Answer>| Verdict::<String>::Continue,
    );
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
