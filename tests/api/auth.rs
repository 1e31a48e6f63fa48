//! Authentication (401/403) and tenant isolation.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{ORG_A, ORG_SHARED, assert_envelope, client_a, client_b, json, spawn_app};

const DATASETS: &str = "/data/foundation/catalog/dataSets";

fn profile_dataset(name: &str) -> serde_json::Value {
    json!({"name": name, "schemaRef": {"id": "https://ns.adobe.com/xdm/context/profile"}})
}

#[tokio::test]
async fn missing_or_wrong_credentials_answer_401() {
    let app = spawn_app().await;
    let no_credentials = app.anonymous(Method::GET, DATASETS).send().await.unwrap();
    assert_envelope(no_credentials, 401).await;

    let missing_token = app
        .anonymous(Method::GET, DATASETS)
        .header("x-api-key", "key-a")
        .send()
        .await
        .unwrap();
    assert_envelope(missing_token, 401).await;

    let wrong_token = app
        .anonymous(Method::GET, DATASETS)
        .header("x-api-key", "key-a")
        .header("authorization", "Bearer token-b")
        .header("x-gw-ims-org-id", ORG_A)
        .send()
        .await
        .unwrap();
    let body = assert_envelope(wrong_token, 401).await;
    assert_eq!(body["title"], "Oauth token is not valid");

    let unknown_key = app
        .anonymous(Method::GET, DATASETS)
        .header("x-api-key", "nobody")
        .header("authorization", "Bearer token-a")
        .send()
        .await
        .unwrap();
    assert_envelope(unknown_key, 401).await;
}

#[tokio::test]
async fn an_org_the_client_may_not_use_answers_403_and_a_missing_org_400() {
    let app = spawn_app().await;
    let forbidden = app
        .with_client(&client_b(), Method::GET, DATASETS, ORG_A, "prod")
        .send()
        .await
        .unwrap();
    assert_envelope(forbidden, 403).await;

    let missing_org = app
        .anonymous(Method::GET, DATASETS)
        .header("x-api-key", "key-a")
        .header("authorization", "Bearer token-a")
        .send()
        .await
        .unwrap();
    assert_envelope(missing_org, 400).await;
}

#[tokio::test]
async fn orgs_and_sandboxes_cannot_see_each_other() {
    let app = spawn_app().await;
    let created = app
        .as_a(Method::POST, DATASETS, ORG_SHARED, "prod")
        .json(&profile_dataset("shared prod"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let reference = json(created).await[0].as_str().unwrap().to_owned();
    let id = reference.strip_prefix("@/dataSets/").unwrap().to_owned();
    let one = format!("{DATASETS}/{id}");

    // The same org and sandbox, through another client of that org, sees it.
    let same_tenant = app
        .with_client(&client_b(), Method::GET, &one, ORG_SHARED, "prod")
        .send()
        .await
        .unwrap();
    assert_eq!(json(same_tenant).await[&id]["name"], "shared prod");

    // Another sandbox of the same org and another org see nothing, and cannot tell it exists.
    for (org, sandbox) in [(ORG_SHARED, "dev"), (ORG_A, "prod")] {
        let get = app
            .as_a(Method::GET, &one, org, sandbox)
            .send()
            .await
            .unwrap();
        assert_envelope(get, 404).await;
        let list = app
            .as_a(Method::GET, DATASETS, org, sandbox)
            .send()
            .await
            .unwrap();
        assert_eq!(
            json(list).await,
            json!({}),
            "{org}/{sandbox} lists another tenant's dataset"
        );
    }

    let client_a_own = app
        .with_client(&client_a(), Method::GET, DATASETS, ORG_SHARED, "prod")
        .send()
        .await
        .unwrap();
    assert_eq!(json(client_a_own).await.as_object().unwrap().len(), 1);
}

#[tokio::test]
async fn health_probes_need_no_credentials() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let response = app.anonymous(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}
