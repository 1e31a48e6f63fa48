//! Catalog datasets: create, get, list, and durability across a restart.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{json, spawn_app};

const DATASETS: &str = "/data/foundation/catalog/dataSets";

#[tokio::test]
async fn a_created_dataset_is_returned_keyed_by_id_and_survives_restart() {
    let app = spawn_app().await;
    let request = json!({
        "name": "CRM profiles",
        "schemaRef": {"id": "https://ns.adobe.com/xdm/context/profile", "contentType": "application/vnd.adobe.xed-full+json;version=1"},
        "tags": {"unifiedProfile": ["enabled:true"], "unifiedIdentity": ["enabled:true"]}
    });
    let created = app
        .request(Method::POST, DATASETS)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let reference = json(created).await;
    let id = reference[0]
        .as_str()
        .unwrap()
        .strip_prefix("@/dataSets/")
        .unwrap()
        .to_owned();
    assert_eq!(location, format!("{DATASETS}/{id}"));

    let app = app.restart().await;
    let fetched = json(app.request(Method::GET, &location).send().await.unwrap()).await;
    let dataset = &fetched[&id];
    assert_eq!(dataset["name"], "CRM profiles");
    assert_eq!(dataset["imsOrg"], crate::helpers::ORG_A);
    assert_eq!(dataset["tags"]["unifiedProfile"], json!(["enabled:true"]));
    assert_eq!(
        dataset["schemaRef"]["id"],
        "https://ns.adobe.com/xdm/context/profile"
    );
    assert!(
        dataset["created"].as_i64().unwrap() > 1_600_000_000_000,
        "created is in milliseconds"
    );
}

#[tokio::test]
async fn lists_page_with_start_and_limit() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for index in 0..3 {
        let body = json!({"name": format!("d{index}"), "schemaRef": {"id": "https://ns.adobe.com/xdm/context/profile"}});
        let created = json(
            app.request(Method::POST, DATASETS)
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        ids.push(
            created[0]
                .as_str()
                .unwrap()
                .trim_start_matches("@/dataSets/")
                .to_owned(),
        );
    }
    let page = json(
        app.request(Method::GET, &format!("{DATASETS}?start=1&limit=1"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let keys: Vec<&String> = page.as_object().unwrap().keys().collect();
    assert_eq!(keys, vec![&ids[1]]);
}

#[tokio::test]
async fn a_dataset_without_schema_ref_is_rejected() {
    let app = spawn_app().await;
    let response = app
        .request(Method::POST, DATASETS)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    crate::helpers::assert_envelope(response, 400).await;
}
