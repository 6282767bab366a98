//! The Kubernetes metadata provider against a local HTTP server that speaks the API server's
//! wire format: a pod list, then a chunked watch stream of ADDED, MODIFIED and DELETED events.
//! Real HTTP, real JSON, the real kube client; loopback only.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

mod common;

use common::fake_api::{pod, FakeApi, NODE};
use profiler::attribution::kubernetes::{get_pod, watch_node_pods, KubernetesError, PodCache};

async fn client(url: &str) -> kube::Client {
    let config = kube::Config::new(url.parse().expect("url"));
    kube::Client::try_from(config).expect("client")
}

/// Waits (bounded) until `check` holds on the cache.
async fn eventually(cache: &Arc<Mutex<PodCache>>, what: &str, check: impl Fn(&PodCache) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if check(&cache.lock().expect("lock")) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn names_follow_the_pods_lifecycle_through_list_and_watch() {
    let api = FakeApi::new(vec![pod("web-1", "uid-1", Some("c1"))]);
    let url = api.clone().start().await;
    let cache = Arc::new(Mutex::new(PodCache::new(10)));
    let watch = watch_node_pods(client(&url).await, NODE, cache.clone());

    eventually(&cache, "the listed pod", |c| c.get("uid-1").is_some()).await;
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.contains("fieldSelector=spec.nodeName%3Dnode-1")),
        "every list and watch is scoped to the node: {requests:?}"
    );
    {
        let cache = cache.lock().expect("lock");
        let web = cache.get("uid-1").expect("web-1");
        assert_eq!(web.workload_kind.as_deref(), Some("Deployment"));
        assert_eq!(web.workload_name.as_deref(), Some("web"));
        let app = web.container_by_id("c1").expect("container by id");
        assert_eq!(app.limit_bytes, Some(256 << 20));
    }

    // The watch is open once its request arrived.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !api.requests().iter().any(|r| r.contains("watch=true")) {
        assert!(Instant::now() < deadline, "no watch request");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.send("ADDED", pod("web-2", "uid-2", None));
    eventually(&cache, "web-2 added", |c| c.get("uid-2").is_some()).await;
    assert!(cache
        .lock()
        .expect("lock")
        .get("uid-2")
        .expect("web-2")
        .containers[0]
        .container_id
        .is_none());

    api.send("MODIFIED", pod("web-2", "uid-2", Some("c2")));
    eventually(&cache, "web-2's container started", |c| {
        c.get("uid-2")
            .and_then(|p| p.container_by_id("c2"))
            .is_some()
    })
    .await;

    api.send("DELETED", pod("web-1", "uid-1", Some("c1")));
    eventually(&cache, "web-1 deleted", |c| c.get("uid-1").is_none()).await;

    // A node with more pods than the cache holds: it stays bounded.
    for i in 0..30 {
        api.send(
            "ADDED",
            pod(&format!("batch-{i}"), &format!("batch-uid-{i}"), None),
        );
    }
    eventually(&cache, "the last batch pod", |c| {
        c.get("batch-uid-29").is_some()
    })
    .await;
    {
        let cache = cache.lock().expect("lock");
        assert_eq!(cache.len(), 10);
        assert!(cache.evicted >= 21, "evicted {}", cache.evicted);
    }
    watch.abort();
}

#[tokio::test(flavor = "current_thread")]
async fn a_single_pod_is_read_and_an_unknown_one_is_named() {
    let api = FakeApi::new(vec![pod("web-1", "uid-1", Some("c1"))]);
    let url = api.clone().start().await;
    let info = get_pod(client(&url).await, "shop", "web-1")
        .await
        .expect("web-1");
    assert_eq!(info.uid, "uid-1");
    let err = get_pod(client(&url).await, "shop", "nope")
        .await
        .expect_err("no such pod");
    assert!(matches!(err, KubernetesError::PodNotFound { .. }), "{err}");
    assert!(err.to_string().contains("kubectl get pod -n shop nope"));
}
