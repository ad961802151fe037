//! Which distribution a box runs: `/etc/os-release` as read on the box, and the
//! [`Distro`]s cutover knows how to set up (`--cloud-init --os` names one directly).
//!
//! `/etc/os-release` is the one file every current distribution has; `ID`, then `ID_LIKE`,
//! decide the family, so a derivative (Mint, Pop!_OS) gets its parent's packages. What a
//! distribution means for a box (its packages, its cloud image's login user) is decided
//! here and in `packages.rs`, never by the command layer.

use std::collections::BTreeMap;
use std::path::Path;

/// The fields of `/etc/os-release` that choose the packages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub id: String,
    pub id_like: Vec<String>,
    pub version_id: String,
    pub pretty_name: String,
}

impl OsRelease {
    pub fn parse(text: &str) -> OsRelease {
        let vars: BTreeMap<&str, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim().trim_matches(['"', '\'']).to_string()))
            .collect();
        let get = |k: &str| vars.get(k).cloned().unwrap_or_default();
        OsRelease {
            id: get("ID"),
            id_like: get("ID_LIKE")
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            version_id: get("VERSION_ID"),
            pretty_name: get("PRETTY_NAME"),
        }
    }

    /// Reads `<root>/etc/os-release` (falling back to `/usr/lib/os-release`, as the spec says).
    pub fn read(root: &Path) -> Option<OsRelease> {
        ["etc/os-release", "usr/lib/os-release"]
            .iter()
            .find_map(|rel| std::fs::read_to_string(root.join(rel)).ok())
            .map(|t| OsRelease::parse(&t))
    }

    fn is(&self, id: &str) -> bool {
        self.id == id || self.id_like.iter().any(|l| l == id)
    }
}

/// The distributions cutover has a package plan for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Distro {
    /// `--cloud-init`'s default image: the most used one on EC2, and its compose is v2
    /// (`docker-compose-v2`), so the user-data leaves nothing to do by hand.
    #[default]
    Ubuntu,
    /// Debian, and every other distribution like Debian or Ubuntu.
    Debian,
    /// Amazon Linux 2023 (no compose package).
    Amzn,
    Fedora,
}

impl Distro {
    /// The distribution a box's os-release belongs to, or `None` when cutover has no plan
    /// for it. Only Ubuntu itself counts as Ubuntu (its `docker-compose-v2`); a derivative
    /// (`ID_LIKE` ubuntu or debian) gets Debian's package names.
    pub fn of(os: &OsRelease) -> Option<Distro> {
        if os.id == "ubuntu" {
            Some(Distro::Ubuntu)
        } else if os.is("debian") || os.is("ubuntu") {
            Some(Distro::Debian)
        } else if os.id == "amzn" {
            Some(Distro::Amzn)
        } else if os.id == "fedora" {
            Some(Distro::Fedora)
        } else {
            None
        }
    }

    /// Its os-release `ID`: how the user-data names the image.
    pub fn id(self) -> &'static str {
        match self {
            Distro::Ubuntu => "ubuntu",
            Distro::Debian => "debian",
            Distro::Amzn => "amzn",
            Distro::Fedora => "fedora",
        }
    }

    /// The user its EC2 image logs in with: the deploy user of a `--cloud-init` box without
    /// `--user` (no `sudo` there to name one), added to the docker group and owning the box
    /// identity.
    pub fn default_user(self) -> &'static str {
        match self {
            Distro::Amzn => "ec2-user",
            // Fedora Cloud's images (on EC2 too) log in as `fedora`, not `ec2-user`.
            Distro::Fedora => "fedora",
            Distro::Debian => "admin",
            Distro::Ubuntu => "ubuntu",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_decides_the_distribution() {
        let of = |text: &str| Distro::of(&OsRelease::parse(text));
        assert_eq!(of("ID=ubuntu\nID_LIKE=debian\n"), Some(Distro::Ubuntu));
        assert_eq!(of("ID=debian\n"), Some(Distro::Debian));
        assert_eq!(
            of("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n"),
            Some(Distro::Debian)
        );
        assert_eq!(of("ID=\"amzn\"\nID_LIKE=\"fedora\"\n"), Some(Distro::Amzn));
        assert_eq!(of("ID=fedora\n"), Some(Distro::Fedora));
        // Like Fedora is not Fedora: no plan was ever made for RHEL's package names.
        assert_eq!(of("ID=rhel\nID_LIKE=\"centos fedora\"\n"), None);
        assert_eq!(of("ID=arch\n"), None);
    }

    #[test]
    fn the_default_image_is_ubuntu_as_the_help_says() {
        // cli.rs: "--os … [default: ubuntu]".
        assert_eq!(Distro::default().id(), "ubuntu");
        assert_eq!(Distro::default().default_user(), "ubuntu");
    }

    #[test]
    fn each_cloud_image_logs_in_as_its_own_user() {
        assert_eq!(Distro::Debian.default_user(), "admin");
        assert_eq!(Distro::Amzn.default_user(), "ec2-user");
        assert_eq!(Distro::Fedora.default_user(), "fedora");
    }
}
