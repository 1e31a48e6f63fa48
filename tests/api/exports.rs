//! Export jobs through HTTP, read back with the parquet crate and (with the test tools) pyarrow.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_envelope, json, spawn_app};
use crate::ingest::{create_dataset, ingest_json_lines};

const PROFILE: &str = "https://ns.adobe.com/xdm/context/profile";
const EXPORTS: &str = "/data/core/ups/export/jobs";

async fn union_dataset(app: &TestApp, persisted: bool) -> String {
    let body = json!({"name": "audience", "schemaRef": {"id": "https://ns.adobe.com/xdm/context/profile__union",
        "contentType": "application/vnd.adobe.xed+json;version=1"}, "fileDescription": {"persisted": persisted}});
    crate::helpers::post_dataset(app, &body).await
}

async fn definition(app: &TestApp, name: &str, pql: &str) -> String {
    crate::helpers::post_definition(app, name, pql, None).await
}

async fn wait(app: &TestApp, path: &str) -> Value {
    for _ in 0..1000 {
        let job = json(app.request(Method::GET, path).send().await.unwrap()).await;
        if matches!(
            job["status"].as_str(),
            Some("SUCCEEDED" | "FAILED" | "CANCELLED")
        ) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} did not finish");
}

/// Downloads every file of a batch and returns the rows, checking each with pyarrow when required.
async fn read_batch(app: &TestApp, batch_id: &str) -> Vec<Value> {
    let listing = json(
        app.request(
            Method::GET,
            &format!("/data/foundation/export/batches/{batch_id}/files"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let mut rows = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    for entry in listing["data"].as_array().unwrap() {
        let file_href = entry["_links"]["self"]["href"].as_str().unwrap();
        let file = json(app.request(Method::GET, file_href).send().await.unwrap()).await;
        let download = file["data"][0]["_links"]["self"]["href"].as_str().unwrap();
        let bytes = app
            .request(Method::GET, download)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(
            bytes.len().to_string(),
            file["data"][0]["length"].as_str().unwrap()
        );
        let ranged = app
            .request(Method::GET, download)
            .header("range", "bytes=0-3")
            .send()
            .await
            .unwrap();
        assert_eq!(ranged.status(), 206);
        assert_eq!(
            ranged.bytes().await.unwrap().as_ref(),
            b"PAR1",
            "a Parquet file starts with PAR1"
        );
        let path = dir.path().join(file["data"][0]["name"].as_str().unwrap());
        std::fs::write(&path, &bytes).unwrap();
        rows.extend(segmentd::export::parquet::read_rows(&path).unwrap());
        if std::env::var_os("REQUIRE_PY_TEST_TOOLS").is_some() {
            let checked = std::process::Command::new("python3")
                .arg("scripts/check_parquet.py")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                checked.status.success(),
                "pyarrow could not read the export: {}",
                String::from_utf8_lossy(&checked.stderr)
            );
            let report: Value = serde_json::from_slice(&checked.stdout).unwrap();
            assert_eq!(
                report["rows"].as_u64().unwrap() as usize,
                segmentd::export::parquet::read_rows(&path).unwrap().len()
            );
        }
    }
    rows
}

fn crm_ids(rows: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = rows
        .iter()
        .map(|row| {
            row["identityMap"]["crmid"][0]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn exports_write_the_qualifying_profiles_as_parquet_and_supersede_earlier_exports() {
    let app = spawn_app().await;
    let crm = create_dataset(&app, "crm", PROFILE).await;
    let rows: Vec<String> = (0..40)
        .map(|index| {
            json!({"identityMap": {"CRMID": [{"id": format!("p{index:02}"), "primary": true}]},
                   "person": {"name": {"firstName": format!("F{index}"), "lastName": "L"}},
                   "homeAddress": {"countryCode": if index % 4 == 0 { "US" } else { "FR" }}, "loyalty": {"points": index}})
            .to_string()
        })
        .collect();
    ingest_json_lines(&app, &crm, &[("p.json", rows.join("\n"))]).await;
    let us = definition(&app, "US", r#"homeAddress.countryCode = "US""#).await;
    let rich = definition(&app, "rich", "loyalty.points >= 30").await;
    let job = json(
        app.request(Method::POST, "/data/core/ups/segment/jobs")
            .json(&json!([{"segmentId": us}, {"segmentId": rich}]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        wait(
            &app,
            &format!(
                "/data/core/ups/segment/jobs/{}",
                job["id"].as_str().unwrap()
            )
        )
        .await["status"],
        "SUCCEEDED"
    );

    // A dataset that is not a persisted profile-union dataset is refused with the reason.
    let wrong = union_dataset(&app, false).await;
    let refused = app
        .request(Method::POST, EXPORTS)
        .json(&json!({"destination": {"datasetId": wrong}, "schema": {"name": "_xdm.context.profile"}, "filter": {"segments": [{"segmentId": us}]}}))
        .send()
        .await
        .unwrap();
    let envelope = assert_envelope(refused, 400).await;
    assert!(
        envelope["title"].as_str().unwrap().contains("persisted"),
        "{envelope}"
    );

    let target = union_dataset(&app, true).await;
    let request = json!({"fields": "person.name.firstName", "filter": {"segments": [{"segmentId": us, "segmentNs": "ups", "status": ["realized"]}]},
                         "destination": {"datasetId": target, "segmentPerBatch": false}, "schema": {"name": "_xdm.context.profile"}});
    let created = app
        .request(Method::POST, EXPORTS)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let created = json(created).await;
    assert!(created["id"].is_i64(), "export job ids are numbers");
    let first = wait(&app, &format!("{EXPORTS}/{}", created["id"])).await;
    assert_eq!(first["status"], "SUCCEEDED", "{first}");
    assert_eq!(first["metrics"]["totalExportedProfileCounter"], 10);
    assert_eq!(
        first["metrics"]["exportedProfileByNamespaceCounter"]["crmid"],
        10
    );
    assert!(first["metrics"]["aCPDatasetWriteTime"]["totalTimeInMs"].is_i64());
    let first_batch = first["destination"]["batchId"].as_str().unwrap().to_owned();
    let exported = read_batch(&app, &first_batch).await;
    assert_eq!(
        crm_ids(&exported),
        (0..40)
            .step_by(4)
            .map(|index| format!("p{index:02}"))
            .collect::<Vec<_>>()
    );
    for row in &exported {
        let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
        assert!(
            keys.iter()
                .all(|key| ["person", "identityMap", "segmentMembership"].contains(&key.as_str())),
            "{row}"
        );
        assert!(
            row["person"]["name"].get("lastName").is_none(),
            "only projected fields: {row}"
        );
        assert_eq!(row["segmentMembership"]["ups"][&us]["status"], "realized");
    }

    // Segment per batch: one batch per segment, each with exactly that segment's members.
    let per_segment = json!({"filter": {"segments": [{"segmentId": us}, {"segmentId": rich}]},
                             "destination": {"datasetId": target, "segmentPerBatch": true}, "schema": {"name": "_xdm.context.profile"}});
    let created = json(
        app.request(Method::POST, EXPORTS)
            .json(&per_segment)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let split = wait(&app, &format!("{EXPORTS}/{}", created["id"])).await;
    let batches = split["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 2);
    for batch in batches {
        let rows = read_batch(&app, batch["batchId"].as_str().unwrap()).await;
        let expected: Vec<String> = if batch["segmentId"] == us.as_str() {
            (0..40)
                .step_by(4)
                .map(|index| format!("p{index:02}"))
                .collect()
        } else {
            (30..40).map(|index| format!("p{index:02}")).collect()
        };
        assert_eq!(crm_ids(&rows), expected);
    }

    // A later export of the same segments supersedes the first: its batch is no longer listed.
    let again = json(
        app.request(Method::POST, EXPORTS)
            .json(&request)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let second = wait(&app, &format!("{EXPORTS}/{}", again["id"])).await;
    assert_eq!(second["status"], "SUCCEEDED");
    let old = app
        .request(
            Method::GET,
            &format!("/data/foundation/export/batches/{first_batch}/files"),
        )
        .send()
        .await
        .unwrap();
    assert_envelope(old, 404).await;
    let status = json(
        app.request(
            Method::GET,
            &format!("/data/foundation/catalog/batches/{first_batch}"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status[&first_batch]["status"], "inactive");

    // Qualification-time window after the job ran: nobody qualifies, nothing is written.
    let later = json!({"filter": {"segments": [{"segmentId": us}], "segmentQualificationTime": {"startTime": "2999-01-01T00:00:00Z"}},
                       "destination": {"datasetId": target}, "schema": {"name": "_xdm.context.profile"}});
    let created = json(
        app.request(Method::POST, EXPORTS)
            .json(&later)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        wait(&app, &format!("{EXPORTS}/{}", created["id"])).await["metrics"]["totalExportedProfileCounter"],
        0
    );

    let listed = json(
        app.request(Method::GET, &format!("{EXPORTS}?limit=2"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed["records"].as_array().unwrap().len(), 2);
    let next = listed["link"]["next"]
        .as_str()
        .unwrap()
        .replace("/export/jobs/", EXPORTS);
    let rest = json(app.request(Method::GET, &next).send().await.unwrap()).await;
    assert_eq!(rest["records"].as_array().unwrap().len(), 2);
    assert_envelope(
        app.request(Method::POST, EXPORTS)
            .json(&json!({"destination": {"datasetId": target}, "schema": {"name": "_xdm.context.profile"}, "additionalFields": {"eventList": {}}}))
            .send()
            .await
            .unwrap(),
        501,
    )
    .await;
}
