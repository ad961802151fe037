//! Image references as text: `[host[:port]/]name[:tag][@digest]`, split, checked and
//! normalized without asking docker. The config checks `app.image` with it, render checks
//! every reference it writes, and `docker/images.rs` compares what the engine lists.

/// The repository part of an image reference: `myuser/app:1.2` → `myuser/app`.
pub fn repository(reference: &str) -> &str {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    match without_digest.rsplit_once(':') {
        // A colon after the last slash is a tag; before it, a registry port.
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => without_digest,
    }
}

/// Checks that `reference` is a docker image reference, `[host[:port]/]name[:tag][@digest]`.
///
/// The characters matter beyond docker's own grammar: a reference is written into the
/// compose file, and compose interpolates `$` from an environment that holds every decrypted
/// secret, so `app:${DB_PASSWORD}` must never get that far. The error says what is allowed.
pub fn check_reference(reference: &str) -> Result<(), String> {
    const GRAMMAR: &str = "expected [host[:port]/]name[:tag][@sha256:hex]: name parts of lowercase letters, digits and `.` `_` `-`, separated by `/`; a tag of letters, digits and `_` `.` `-` (at most 128)";
    if let Some((i, c)) = reference
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || "._-/:@".contains(*c)))
    {
        let shown = if c.is_control() || c.is_whitespace() {
            format!("{:?}", c)
        } else {
            format!("`{c}`")
        };
        return Err(format!(
            "{shown} at byte {i} is not allowed in an image reference ({GRAMMAR})"
        ));
    }
    let bad = |what: &str| Err(format!("{what} ({GRAMMAR})"));
    let (named, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let Some((algo, hex)) = digest.split_once(':') else {
            return bad("the digest after `@` has no `algorithm:`");
        };
        if algo.is_empty()
            || !algo
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            || hex.len() < 32
            || !hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return bad(
                "the digest after `@` is not `algorithm:hex` (e.g. sha256: and 64 hex digits)",
            );
        }
    }
    let repo = repository(named);
    if repo.len() < named.len() {
        let tag = &named[repo.len() + 1..];
        let first_ok = tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !first_ok || tag.len() > 128 || tag.contains(['/', ':', '@']) {
            return bad(&format!("the tag `{tag}` is not valid"));
        }
    }
    if repo.is_empty() {
        return bad("the name is empty");
    }
    let mut parts = repo.split('/').peekable();
    // The first part is a registry host when it looks like one (a dot, a port, localhost).
    let first = parts.peek().copied().unwrap_or_default();
    if repo.contains('/') && (first.contains(['.', ':']) || first == "localhost") {
        let (host, port) = first.split_once(':').unwrap_or((first, "0"));
        if host.is_empty() || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return bad(&format!("the registry host `{first}` is not host[:port]"));
        }
        parts.next();
    }
    for part in parts {
        let edges_ok = part
            .bytes()
            .next()
            .zip(part.bytes().last())
            .is_some_and(|(a, z)| a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric());
        if !edges_ok || part.bytes().any(|b| b.is_ascii_uppercase() || b == b':') {
            return bad(&format!("the name part `{part}` is not valid"));
        }
    }
    Ok(())
}

/// Checks that `reference` is a repository alone, as `app.image` must be: `deploy --image`
/// picks the tag, and the CI workflow appends `:<commit sha>` to it (`myapp:latest` there
/// would become `myapp:latest:<sha>`, which cannot build).
pub fn check_repository(reference: &str) -> Result<(), String> {
    check_reference(reference)?;
    let named = reference.split('@').next().unwrap_or(reference);
    let repo = repository(named);
    if repo.len() < reference.len() {
        return Err(format!(
            "`{reference}` names a tag or digest; app.image is the repository alone (`{repo}`): \
             the tag comes from `cutover deploy --image {repo}:v1` (CI: the commit sha)"
        ));
    }
    Ok(())
}

/// Why `reference` names no particular release: no tag (docker reads it as `:latest`) or
/// `:latest` itself; `None` for a tag or a digest, which do.
pub fn indistinct_tag(reference: &str) -> Option<&'static str> {
    if reference.contains('@') {
        return None;
    }
    let repo = repository(reference);
    match reference.get(repo.len() + 1..) {
        None => Some("no tag, so docker takes `:latest`"),
        Some("latest") => Some("`:latest` is whatever was built last"),
        Some(_) => None,
    }
}

/// `app` → `app:latest`, `docker.io/library/app:v1` → `app:v1`: references as `docker images`
/// names them, so a container's reference and a listed image compare equal.
pub fn normalize(reference: &str) -> String {
    let short = reference
        .strip_prefix("docker.io/library/")
        .or_else(|| reference.strip_prefix("docker.io/"))
        .unwrap_or(reference);
    if short.contains('@') || repository(short).len() < short.len() {
        short.to_string()
    } else {
        format!("{short}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untagged_and_latest_name_no_release_and_app_image_takes_no_tag() {
        assert!(indistinct_tag("myapp").is_some());
        assert!(indistinct_tag("registry:5000/app").is_some());
        assert!(indistinct_tag("myapp:latest").is_some());
        assert_eq!(indistinct_tag("myapp:v1"), None);
        assert_eq!(indistinct_tag("registry:5000/app:v1"), None);
        let digest = format!("myapp@sha256:{}", "a".repeat(64));
        assert_eq!(indistinct_tag(&digest), None);
        assert!(check_repository("registry:5000/app").is_ok());
        let err = check_repository("myapp:latest").unwrap_err();
        assert!(
            err.contains("app.image is the repository alone (`myapp`)"),
            "{err}"
        );
        assert!(check_repository(&digest).is_err());
    }

    #[test]
    fn repository_strips_tag_and_digest_but_not_registry_port() {
        assert_eq!(repository("myuser/app:1.2"), "myuser/app");
        assert_eq!(repository("registry:5000/app"), "registry:5000/app");
        assert_eq!(repository("registry:5000/app:v1"), "registry:5000/app");
        assert_eq!(repository("app@sha256:abc"), "app");
        assert_eq!(repository("app"), "app");
    }

    #[test]
    fn references_are_checked_and_dollars_refused() {
        for ok in [
            "app",
            "myuser/app:1.2",
            "registry:5000/team/app:v1",
            "localhost/app",
            "ghcr.io/o/app:2024-05-01_1",
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "cutover-demo:v2",
        ] {
            assert_eq!(check_reference(ok), Ok(()), "{ok}");
        }
        let err = check_reference("app:${DB_PASSWORD}").unwrap_err();
        assert!(err.starts_with("`$` at byte 4 is not allowed"), "{err}");
        for bad in [
            "",
            "App:v1",
            "app:-v1",
            "app name",
            "app:v1\n",
            "app:",
            "/app",
            "app@sha256:12",
            "a//b",
        ] {
            assert!(check_reference(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
