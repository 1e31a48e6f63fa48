//! Batch ingestion through HTTP: create a batch, upload files, complete it, read its status.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_envelope, assert_not_found, json, spawn_app};

const BATCHES: &str = "/data/foundation/import/batches";

/// Creates a profile-enabled dataset of the given XDM class and returns its id.
pub async fn create_dataset(app: &TestApp, name: &str, schema: &str) -> String {
    let body = json!({"name": name, "schemaRef": {"id": schema},
        "tags": {"unifiedProfile": ["enabled:true"], "unifiedIdentity": ["enabled:true"]}});
    crate::helpers::post_dataset(app, &body).await
}

/// Creates a JSON Lines batch for `dataset`, uploads `files`, completes it and waits for the outcome.
pub async fn ingest_json_lines(app: &TestApp, dataset: &str, files: &[(&str, String)]) -> Value {
    let created = app
        .request(Method::POST, BATCHES)
        .json(&json!({"datasetId": dataset, "inputFormat": {"format": "JSON"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let batch = json(created).await;
    assert_eq!(batch["status"], "loading");
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    for (name, content) in files {
        let upload = app
            .request(
                Method::PUT,
                &format!("{BATCHES}/{batch_id}/datasets/{dataset}/files/{name}"),
            )
            .header("content-type", "application/octet-stream")
            .body(content.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(upload.status(), 201, "upload of {name}");
    }
    let complete = app
        .request(
            Method::POST,
            &format!("{BATCHES}/{batch_id}?action=COMPLETE"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(complete.status(), 200);
    wait_for_batch(app, &batch_id).await
}

/// Polls a batch until it leaves `staging`.
pub async fn wait_for_batch(app: &TestApp, batch_id: &str) -> Value {
    for _ in 0..400 {
        let body = json(
            app.request(
                Method::GET,
                &format!("/data/foundation/catalog/batches/{batch_id}"),
            )
            .send()
            .await
            .unwrap(),
        )
        .await;
        let batch = body[batch_id].clone();
        if batch["status"] != "staging" {
            return batch;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("batch {batch_id} did not finish");
}

fn profile_line(crm: &str, email: &str, country: &str) -> String {
    json!({
        "_id": format!("rec-{crm}"),
        "identityMap": {"CRMID": [{"id": crm, "primary": true}], "Email": [{"id": email}]},
        "person": {"name": {"firstName": "Ada"}},
        "homeAddress": {"countryCode": country}
    })
    .to_string()
}

#[tokio::test]
async fn a_batch_with_bad_rows_applies_the_good_ones_and_reports_each_bad_row() {
    let app = spawn_app().await;
    let dataset = create_dataset(&app, "crm", "https://ns.adobe.com/xdm/context/profile").await;
    let first = [
        profile_line("c1", "a@example.com", "US"),
        "{not json".to_owned(),
        profile_line("c2", "b@example.com", "FR"),
        json!({"person": {"name": {"firstName": "no identity"}}}).to_string(),
    ]
    .join("\n");
    let second = [profile_line("c3", "c@example.com", "DE")].join("\n");
    let batch = ingest_json_lines(
        &app,
        &dataset,
        &[("part-0.json", first), ("dir/part-1.json", second)],
    )
    .await;

    assert_eq!(batch["status"], "success", "{batch}");
    assert_eq!(batch["metrics"]["inputFileCount"], 2);
    assert_eq!(batch["metrics"]["inputRecordCount"], 5);
    assert_eq!(batch["metrics"]["outputRecordCount"], 3);
    assert_eq!(batch["metrics"]["failedRecordCount"], 2);
    let errors = batch["errors"].as_array().unwrap();
    assert_eq!(errors[0]["code"], "INGEST-1212-400");
    let rows: Vec<(String, u64)> = errors[1..]
        .iter()
        .map(|error| {
            (
                error["file"].as_str().unwrap().to_owned(),
                error["rows"][0].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![("part-0.json".to_owned(), 2), ("part-0.json".to_owned(), 4)]
    );
    assert!(
        errors[2]["description"]
            .as_str()
            .unwrap()
            .contains("identit"),
        "{}",
        errors[2]
    );
}

#[tokio::test]
async fn a_batch_whose_rows_are_all_bad_fails_and_an_empty_batch_fails() {
    let app = spawn_app().await;
    let dataset = create_dataset(&app, "crm", "https://ns.adobe.com/xdm/context/profile").await;
    let batch = ingest_json_lines(
        &app,
        &dataset,
        &[("bad.json", "[1, 2]\n{\"x\": 1}".to_owned())],
    )
    .await;
    assert_eq!(batch["status"], "failed", "{batch}");
    let empty = ingest_json_lines(&app, &dataset, &[]).await;
    assert_eq!(empty["status"], "failed", "{empty}");
}

#[tokio::test]
async fn uploads_need_a_loading_batch_of_the_callers_tenant() {
    let app = spawn_app().await;
    let dataset = create_dataset(&app, "crm", "https://ns.adobe.com/xdm/context/profile").await;
    let unknown_dataset = app
        .request(Method::POST, BATCHES)
        .json(&json!({"datasetId": "nope", "inputFormat": {"format": "json"}}))
        .send()
        .await
        .unwrap();
    assert_envelope(unknown_dataset, 400).await;
    let csv = app
        .request(Method::POST, BATCHES)
        .json(&json!({"datasetId": dataset, "inputFormat": {"format": "csv"}}))
        .send()
        .await
        .unwrap();
    assert_envelope(csv, 400).await;

    let batch = json(
        app.request(Method::POST, BATCHES)
            .json(&json!({"datasetId": dataset, "inputFormat": {"format": "json"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let batch_id = batch["id"].as_str().unwrap();
    let other_sandbox = app
        .as_a(
            Method::PUT,
            &format!("{BATCHES}/{batch_id}/datasets/{dataset}/files/a.json"),
            crate::helpers::ORG_A,
            "dev",
        )
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_envelope(other_sandbox, 404).await;
    let escape = app
        .request(
            Method::PUT,
            &format!("{BATCHES}/{batch_id}/datasets/{dataset}/files/..%2Fx.json"),
        )
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_envelope(escape, 400).await;

    let abort = json(
        app.request(Method::POST, &format!("{BATCHES}/{batch_id}?action=abort"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(abort["status"], "aborted");
    let late = app
        .request(
            Method::PUT,
            &format!("{BATCHES}/{batch_id}/datasets/{dataset}/files/a.json"),
        )
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_envelope(late, 409).await;
    let complete_aborted = app
        .request(
            Method::POST,
            &format!("{BATCHES}/{batch_id}?action=COMPLETE"),
        )
        .send()
        .await
        .unwrap();
    assert_envelope(complete_aborted, 409).await;
}

#[tokio::test]
async fn an_unreadable_file_fails_the_whole_batch_and_stores_nothing() {
    let app = spawn_app().await;
    let dataset = create_dataset(&app, "crm", "https://ns.adobe.com/xdm/context/profile").await;
    let batch = json(
        app.request(Method::POST, BATCHES)
            .json(&json!({"datasetId": dataset, "inputFormat": {"format": "json", "isMultiLineJson": true}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let batch_id = batch["id"].as_str().unwrap();
    let good = format!("[{}]", profile_line("whole-1", "w1@example.com", "US"));
    // The second file's array never closes: its first element is valid, then the file ends.
    let truncated = format!("[{}, ", profile_line("whole-2", "w2@example.com", "US"));
    for (name, content) in [("a.json", good), ("b.json", truncated)] {
        let path = format!("{BATCHES}/{batch_id}/datasets/{dataset}/files/{name}");
        assert_eq!(
            app.request(Method::PUT, &path)
                .body(content)
                .send()
                .await
                .unwrap()
                .status(),
            201
        );
    }
    app.request(
        Method::POST,
        &format!("{BATCHES}/{batch_id}?action=COMPLETE"),
    )
    .send()
    .await
    .unwrap();
    let outcome = wait_for_batch(&app, batch_id).await;
    assert_eq!(outcome["status"], "failed", "{outcome}");
    assert!(
        outcome["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|error| error["file"] == "b.json"),
        "{outcome}"
    );
    for crm_id in ["whole-1", "whole-2"] {
        let path = format!(
            "/data/core/ups/access/entities?schema.name=_xdm.context.profile&entityId={crm_id}&entityIdNS=CRMID"
        );
        assert_not_found(&app, &path).await;
    }
}
