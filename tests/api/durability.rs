//! Acknowledged writes survive `kill -9` of the real binary and a restart.

use reqwest::Method;
use serde_json::json;

use crate::helpers::json;
use crate::process::ServerProcess;

#[tokio::test]
async fn acknowledged_datasets_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let server = ServerProcess::start(dir.path());
    let mut ids = Vec::new();
    for index in 0..20 {
        let body = json!({"name": format!("d{index}"), "schemaRef": {"id": "https://ns.adobe.com/xdm/context/profile"}});
        let created = server
            .demo_request(&http, Method::POST, "/data/foundation/catalog/dataSets")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        ids.push(
            json(created).await[0]
                .as_str()
                .unwrap()
                .trim_start_matches("@/dataSets/")
                .to_owned(),
        );
    }
    server.kill_hard();

    let server = ServerProcess::start(dir.path());
    let listed = json(
        server
            .demo_request(
                &http,
                Method::GET,
                "/data/foundation/catalog/dataSets?limit=100",
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    let listed = listed.as_object().unwrap();
    for id in &ids {
        assert!(
            listed.contains_key(id),
            "dataset {id} acknowledged before kill -9 is gone"
        );
    }
}

#[tokio::test]
async fn the_demo_client_exists_only_with_demo() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/healthz", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let with_demo = server
        .demo_request(&http, Method::GET, "/data/foundation/catalog/dataSets")
        .send()
        .await
        .unwrap();
    assert_eq!(with_demo.status(), 200);
    // The in-process test servers run without --demo: the same credentials are refused there.
    let app = crate::helpers::spawn_app().await;
    let without_demo = app
        .anonymous(Method::GET, "/data/foundation/catalog/dataSets")
        .header("x-api-key", "demo")
        .header("authorization", "Bearer demo")
        .header("x-gw-ims-org-id", "demo@AdobeOrg")
        .send()
        .await
        .unwrap();
    crate::helpers::assert_envelope(without_demo, 401).await;
}
