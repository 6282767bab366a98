//! Cgroup paths to container identities, for the path forms kubelet and the container runtimes
//! really produce: the systemd and cgroupfs drivers; containerd, CRI-O and docker
//! (cri-dockerd); cgroup v1 and v2 (the paths are the same, relative to each hierarchy); nested
//! under another cgroup (kind, docker-in-docker, kubelet.slice).
//!
//! ```text
//! systemd:  /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope
//!           /kubepods.slice/kubepods-pod<uid_>.slice/crio-<id>.scope            (guaranteed)
//!           .../docker-<id>.scope
//! cgroupfs: /kubepods/burstable/pod<uid>/<id>
//!           /kubepods/pod<uid>/<id>                                          (guaranteed)
//!           /kubepods/besteffort/pod<uid>/crio-<id>
//! ```

use serde::Serialize;
use thiserror::Error;

use crate::report::{Qos, Runtime};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupDriver {
    Systemd,
    Cgroupfs,
}

/// What a cgroup path says about the container it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PathIdentity {
    pub pod_uid: String,
    pub qos: Qos,
    pub driver: CgroupDriver,
    /// None for the pod-level cgroup (all containers of the pod).
    pub container_id: Option<String>,
    pub runtime: Option<Runtime>,
    /// A runtime helper (CRI-O's conmon), not the container's own processes.
    pub helper: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PathError {
    #[error("cgroup path `{path}` is not under kubepods: not a Kubernetes container")]
    NotKubernetes { path: String },
    #[error("cgroup path `{path}` is under kubepods but {problem}")]
    Malformed { path: String, problem: String },
    #[error("cgroup path `{path}` names container `{component}` with a runtime prefix headroom does not know")]
    UnknownRuntime { path: String, component: String },
}

fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A pod UID: 36 characters, 8-4-4-4-12 hex groups (systemd writes `_` for `-`).
fn normalize_pod_uid(raw: &str) -> Option<String> {
    let uid = raw.replace('_', "-");
    let groups: Vec<&str> = uid.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    (lengths == [8, 4, 4, 4, 12]
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit())))
    .then(|| uid.to_ascii_lowercase())
}

fn container_component(component: &str) -> Result<(Runtime, String, bool), String> {
    let stem = component.strip_suffix(".scope").unwrap_or(component);
    for (prefix, runtime, helper) in [
        ("cri-containerd-", Runtime::Containerd, false),
        ("crio-conmon-", Runtime::CriO, true),
        ("crio-", Runtime::CriO, false),
        ("docker-", Runtime::Docker, false),
    ] {
        if let Some(id) = stem.strip_prefix(prefix) {
            return if is_container_id(id) {
                Ok((runtime, id.to_owned(), helper))
            } else {
                Err(format!(
                    "`{component}` does not end in a 64-hex container id"
                ))
            };
        }
    }
    if is_container_id(stem) {
        return Ok((Runtime::Unknown, stem.to_owned(), false));
    }
    Err(component.to_owned())
}

/// Parses a cgroup path (as /proc/PID/cgroup shows it) into the container it holds.
pub fn parse_cgroup_path(path: &str) -> Result<PathIdentity, PathError> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let malformed = |problem: &str| PathError::Malformed {
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let Some(root) = components
        .iter()
        .position(|c| *c == "kubepods" || *c == "kubepods.slice" || c.ends_with("-kubepods.slice"))
    else {
        return Err(PathError::NotKubernetes {
            path: path.to_owned(),
        });
    };
    let driver = if components[root].ends_with(".slice") {
        CgroupDriver::Systemd
    } else {
        CgroupDriver::Cgroupfs
    };
    let rest = &components[root + 1..];
    // The QoS level: absent for guaranteed pods.
    let (qos, rest) = match rest.first().copied() {
        Some("burstable" | "kubepods-burstable.slice") => (Qos::Burstable, &rest[1..]),
        Some("besteffort" | "kubepods-besteffort.slice") => (Qos::BestEffort, &rest[1..]),
        Some(c) if c.ends_with("-burstable.slice") => (Qos::Burstable, &rest[1..]),
        Some(c) if c.ends_with("-besteffort.slice") => (Qos::BestEffort, &rest[1..]),
        Some(_) => (Qos::Guaranteed, rest),
        None => return Err(malformed("has no pod component (it is the kubepods root)")),
    };
    let Some(pod_component) = rest.first() else {
        return Err(malformed("has no pod component (it is a QoS-level cgroup)"));
    };
    let raw_uid = match driver {
        CgroupDriver::Systemd => pod_component
            .strip_suffix(".slice")
            .and_then(|stem| stem.rsplit_once("-pod"))
            .map(|(_, uid)| uid),
        CgroupDriver::Cgroupfs => pod_component.strip_prefix("pod"),
    }
    .ok_or_else(|| malformed(&format!("`{pod_component}` is not a pod cgroup")))?;
    let pod_uid = normalize_pod_uid(raw_uid)
        .ok_or_else(|| malformed(&format!("`{raw_uid}` is not a pod UID")))?;
    let Some(container) = rest.get(1) else {
        return Ok(PathIdentity {
            pod_uid,
            qos,
            driver,
            container_id: None,
            runtime: None,
            helper: false,
        });
    };
    let (runtime, id, helper) = container_component(container).map_err(|component| {
        if component.contains("container id") {
            malformed(&component)
        } else {
            PathError::UnknownRuntime {
                path: path.to_owned(),
                component,
            }
        }
    })?;
    if rest.len() > 2 {
        return Err(malformed("has components below the container cgroup"));
    }
    Ok(PathIdentity {
        pod_uid,
        qos,
        driver,
        container_id: Some(id),
        runtime: Some(runtime),
        helper,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const UID: &str = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d";
    const UID_: &str = "1b2c3d4e_5f60_4a7b_8c9d_0e1f2a3b4c5d";
    const ID: &str = "8f3c1a2b4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

    fn container(
        path: String,
        qos: Qos,
        driver: CgroupDriver,
        runtime: Runtime,
    ) -> (String, PathIdentity) {
        (
            path,
            PathIdentity {
                pod_uid: UID.to_owned(),
                qos,
                driver,
                container_id: Some(ID.to_owned()),
                runtime: Some(runtime),
                helper: false,
            },
        )
    }

    /// runtime × driver × QoS, as kubelet and the runtimes write them. The same paths appear in
    /// cgroup v2 and in each v1 hierarchy.
    pub(crate) fn real_world_paths() -> Vec<(String, PathIdentity)> {
        use CgroupDriver::*;
        use Qos::*;
        use Runtime::*;
        let mut cases = Vec::new();
        for (qos, systemd_qos, cgroupfs_qos, pod_prefix) in [
            (Guaranteed, "", "", "kubepods-pod"),
            (
                Burstable,
                "/kubepods-burstable.slice",
                "/burstable",
                "kubepods-burstable-pod",
            ),
            (
                BestEffort,
                "/kubepods-besteffort.slice",
                "/besteffort",
                "kubepods-besteffort-pod",
            ),
        ] {
            for (runtime, scope_prefix) in [
                (Containerd, "cri-containerd-"),
                (CriO, "crio-"),
                (Docker, "docker-"),
            ] {
                cases.push(container(
                    format!("/kubepods.slice{systemd_qos}/{pod_prefix}{UID_}.slice/{scope_prefix}{ID}.scope"),
                    qos,
                    Systemd,
                    runtime,
                ));
            }
            cases.push(container(
                format!("/kubepods{cgroupfs_qos}/pod{UID}/{ID}"),
                qos,
                Cgroupfs,
                Unknown,
            ));
            cases.push(container(
                format!("/kubepods{cgroupfs_qos}/pod{UID}/crio-{ID}"),
                qos,
                Cgroupfs,
                CriO,
            ));
        }
        // Nested under another cgroup: kind, docker-in-docker, kubelet.slice.
        cases.push(container(
            format!("/docker/{ID}/kubepods/burstable/pod{UID}/{ID}"),
            Burstable,
            Cgroupfs,
            Unknown,
        ));
        cases.push(container(
            format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"),
            Burstable,
            Systemd,
            Containerd,
        ));
        cases
    }

    #[test]
    fn real_world_paths_parse() {
        for (path, expected) in real_world_paths() {
            assert_eq!(parse_cgroup_path(&path).as_ref(), Ok(&expected), "{path}");
        }
    }

    #[test]
    fn pod_level_cgroups_have_no_container() {
        let identity = parse_cgroup_path(&format!("/kubepods/besteffort/pod{UID}")).expect("pod");
        assert_eq!(identity.container_id, None);
        assert_eq!(identity.qos, Qos::BestEffort);
        let identity =
            parse_cgroup_path(&format!("/kubepods.slice/kubepods-pod{UID_}.slice")).expect("pod");
        assert_eq!(identity.qos, Qos::Guaranteed);
        assert_eq!(identity.pod_uid, UID);
    }

    #[test]
    fn crio_conmon_is_a_helper_of_the_container() {
        let identity = parse_cgroup_path(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{ID}.scope"
        ))
        .expect("conmon");
        assert!(identity.helper);
        assert_eq!(identity.runtime, Some(Runtime::CriO));
    }

    #[test]
    fn host_paths_are_not_kubernetes() {
        for path in [
            "/",
            "/system.slice/sshd.service",
            "/user.slice/user-0.slice/session-1.scope",
        ] {
            assert!(
                matches!(
                    parse_cgroup_path(path),
                    Err(PathError::NotKubernetes { .. })
                ),
                "{path}"
            );
        }
    }

    #[test]
    fn malformed_paths_get_clear_errors_and_never_panic() {
        let cases = [
            ("/kubepods", "no pod component"),
            ("/kubepods/burstable", "QoS-level"),
            ("/kubepods/burstable/notapod", "not a pod cgroup"),
            ("/kubepods/burstable/podxyz", "not a pod UID"),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podzz.slice",
                "not a pod UID",
            ),
            (
                &format!("/kubepods/pod{UID}/cri-containerd-1234"),
                "64-hex container id",
            ),
            (
                &format!("/kubepods/pod{UID}/{ID}/extra"),
                "below the container",
            ),
        ];
        for (path, expected) in cases {
            let err = parse_cgroup_path(path).expect_err(path);
            assert!(err.to_string().contains(expected), "{path}: {err}");
        }
        let err = parse_cgroup_path(&format!("/kubepods/pod{UID}/runsc-{ID}")).expect_err("runsc");
        assert!(matches!(err, PathError::UnknownRuntime { .. }), "{err}");
        for garbage in [
            "",
            "////",
            "kubepods//pod",
            "\u{0}",
            "/kubepods/pod\u{1F600}/x",
        ] {
            let _ = parse_cgroup_path(garbage);
        }
    }
}
