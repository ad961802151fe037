//! Docker's state words as enums: a container's `State.Status` and `State.Health.Status`, a
//! swarm task's `Status.State` and `DesiredState`, a service's `UpdateStatus.State`, the
//! engine's `LocalNodeState`. The engines branch on variants, never on strings. A word this cutover does not know is kept as
//! `Other(word)`, never mistaken for a known one; each serializes back to docker's own word,
//! so `--json` output is what docker said.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! docker_words {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $word:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $name {
            $($variant,)+
            /// A word this cutover does not know, as docker wrote it.
            Other(String),
        }

        impl $name {
            /// Docker's own word.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $word,)+
                    Self::Other(word) => word,
                }
            }
        }

        impl From<&str> for $name {
            fn from(word: &str) -> Self {
                match word {
                    $($word => Self::$variant,)+
                    other => Self::Other(other.to_string()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map(|word| Self::from(word.as_str()))
            }
        }
    };
}

docker_words! {
    /// A container's state (`State.Status`).
    ContainerState {
        Created => "created",
        Running => "running",
        Restarting => "restarting",
        Paused => "paused",
        Removing => "removing",
        Exited => "exited",
        Dead => "dead",
    }
}

docker_words! {
    /// A container healthcheck's verdict (`State.Health.Status`).
    HealthState {
        Starting => "starting",
        Healthy => "healthy",
        Unhealthy => "unhealthy",
    }
}

docker_words! {
    /// A task's state (swarmkit's `TaskState`), also its desired state.
    TaskState {
        New => "new",
        Allocated => "allocated",
        Pending => "pending",
        Assigned => "assigned",
        Accepted => "accepted",
        Preparing => "preparing",
        Ready => "ready",
        Starting => "starting",
        Running => "running",
        Complete => "complete",
        Shutdown => "shutdown",
        Failed => "failed",
        Rejected => "rejected",
        Remove => "remove",
        Orphaned => "orphaned",
    }
}

docker_words! {
    /// A service's rolling update (`UpdateStatus.State`).
    UpdateState {
        Updating => "updating",
        Paused => "paused",
        Completed => "completed",
        RollbackStarted => "rollback_started",
        RollbackPaused => "rollback_paused",
        RollbackCompleted => "rollback_completed",
    }
}

docker_words! {
    /// This engine's swarm membership (`docker info`'s `Swarm.LocalNodeState`).
    NodeState {
        Inactive => "inactive",
        Pending => "pending",
        Active => "active",
        Error => "error",
        Locked => "locked",
    }
}

impl TaskState {
    /// A task that gave up: it will not run as it is.
    pub fn gave_up(&self) -> bool {
        matches!(self, TaskState::Failed | TaskState::Rejected)
    }
}

impl UpdateState {
    /// A paused update (forward or rollback): swarm waits for a human.
    pub fn paused(&self) -> bool {
        matches!(self, UpdateState::Paused | UpdateState::RollbackPaused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_words_are_variants_and_unknown_ones_are_kept() {
        assert_eq!(TaskState::from("running"), TaskState::Running);
        assert_eq!(
            UpdateState::from("rollback_completed"),
            UpdateState::RollbackCompleted
        );
        let odd = TaskState::from("hibernating");
        assert_eq!(odd, TaskState::Other("hibernating".into()));
        assert_eq!(odd.to_string(), "hibernating");
        assert!(!odd.gave_up());
    }

    #[test]
    fn they_serialize_as_docker_wrote_them() {
        let json =
            serde_json::to_string(&[UpdateState::RollbackPaused, UpdateState::Other("x".into())])
                .unwrap();
        assert_eq!(json, r#"["rollback_paused","x"]"#);
        let back: Vec<NodeState> = serde_json::from_str(r#"["active","sleeping"]"#).unwrap();
        assert_eq!(
            back,
            vec![NodeState::Active, NodeState::Other("sleeping".into())]
        );
    }
}
