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

/// Creates a profile-enabled dataset through the real binary and returns its id.
async fn create_profile_dataset(server: &ServerProcess, http: &reqwest::Client) -> String {
    create_dataset(server, http, "https://ns.adobe.com/xdm/context/profile").await
}

/// Creates a profile-enabled dataset of the XDM class `schema`; returns its id.
async fn create_dataset(server: &ServerProcess, http: &reqwest::Client, schema: &str) -> String {
    let body = json!({"name": "crm", "schemaRef": {"id": schema},
        "tags": {"unifiedProfile": ["enabled:true"]}});
    let created = server
        .demo_request(http, Method::POST, "/data/foundation/catalog/dataSets")
        .json(&body)
        .send()
        .await
        .unwrap();
    json(created).await[0]
        .as_str()
        .unwrap()
        .trim_start_matches("@/dataSets/")
        .to_owned()
}

/// Creates a JSON Lines batch of `rows`, uploads it and completes it; returns the batch id.
async fn upload_and_complete(
    server: &ServerProcess,
    http: &reqwest::Client,
    dataset: &str,
    rows: Vec<String>,
) -> String {
    let batch = json(
        server
            .demo_request(http, Method::POST, "/data/foundation/import/batches")
            .json(&json!({"datasetId": dataset, "inputFormat": {"format": "json"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    let path =
        format!("/data/foundation/import/batches/{batch_id}/datasets/{dataset}/files/rows.json");
    let upload = server
        .demo_request(http, Method::PUT, &path)
        .body(rows.join("\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 201);
    let complete = server
        .demo_request(
            http,
            Method::POST,
            &format!("/data/foundation/import/batches/{batch_id}?action=COMPLETE"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(complete.status(), 200);
    batch_id
}

/// `GET /data/foundation/catalog/batches/{batch_id}`: `{batch_id: batch}`.
async fn catalog_batch(
    server: &ServerProcess,
    http: &reqwest::Client,
    batch_id: &str,
) -> serde_json::Value {
    json(
        server
            .demo_request(
                http,
                Method::GET,
                &format!("/data/foundation/catalog/batches/{batch_id}"),
            )
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn record(crm_id: &str) -> serde_json::Value {
    json!({"identityMap": {"CRMID": [{"id": crm_id, "primary": true}]}, "person": {"name": {"firstName": crm_id}}})
}

async fn profile_exists(server: &ServerProcess, http: &reqwest::Client, crm_id: &str) -> bool {
    let path = format!(
        "/data/core/ups/access/entities?schema.name=_xdm.context.profile&entityId={crm_id}&entityIdNS=CRMID"
    );
    let response = server
        .demo_request(http, Method::GET, &path)
        .send()
        .await
        .unwrap();
    match response.status().as_u16() {
        200 => true,
        404 => false,
        other => panic!("lookup answered {other}"),
    }
}

#[tokio::test]
async fn streamed_records_acknowledged_before_kill_9_are_all_there() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let server = ServerProcess::start(dir.path());
    let dataset = create_profile_dataset(&server, &http).await;

    // Four writers stream records until the process is killed under them.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for writer in 0..4 {
        let (http, base, dataset, acknowledged) = (
            http.clone(),
            server.base_url.clone(),
            dataset.clone(),
            acknowledged.clone(),
        );
        writers.push(tokio::spawn(async move {
            for index in 0.. {
                let crm_id = format!("w{writer}-{index}");
                let message = json!({"header": {"datasetId": dataset}, "body": {"xdmEntity": record(&crm_id)}});
                let sent = http
                    .post(format!("{base}/collection/inlet"))
                    .header("x-api-key", "demo")
                    .header("authorization", "Bearer demo")
                    .header("x-gw-ims-org-id", "demo@AdobeOrg")
                    .json(&message)
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == 200 => acknowledged.lock().unwrap().push(crm_id),
                    _ => break,
                }
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    server.kill_hard();
    for writer in writers {
        writer.await.unwrap();
    }

    let server = ServerProcess::start(dir.path());
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 4,
        "the writers got too few records in before the kill"
    );
    for crm_id in &acknowledged {
        assert!(
            profile_exists(&server, &http, crm_id).await,
            "acknowledged record {crm_id} is gone after kill -9"
        );
    }
}

#[tokio::test]
async fn a_batch_killed_while_processing_is_whole_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let server = ServerProcess::start(dir.path());
    let dataset = create_profile_dataset(&server, &http).await;
    let rows: Vec<String> = (0..20_000)
        .map(|index| record(&format!("b{index}")).to_string())
        .collect();
    let server = kill_while_processing(server, &http, dir.path(), &dataset, rows).await;
    for index in [0, 9_999, 19_999] {
        assert!(
            profile_exists(&server, &http, &format!("b{index}")).await,
            "row {index} missing"
        );
    }
}

/// Uploads `rows` as a batch, completes it and kills the server at once, while it processes the
/// batch; restarts it on `dir` and checks that start-up finished the batch before serving: it is
/// whole, never half applied.
async fn kill_while_processing(
    server: ServerProcess,
    http: &reqwest::Client,
    dir: &std::path::Path,
    dataset: &str,
    rows: Vec<String>,
) -> ServerProcess {
    let count = rows.len();
    let batch_id = upload_and_complete(&server, http, dataset, rows).await;
    server.kill_hard();
    let server = ServerProcess::start(dir);
    let status = catalog_batch(&server, http, &batch_id).await;
    assert_eq!(status[&batch_id]["status"], "success", "{status}");
    assert_eq!(status[&batch_id]["metrics"]["outputRecordCount"], count);
    server
}

/// A bulk batch of events keeps its chunks in segment files beside the database: killed while
/// processing, it is whole after the restart, every event readable, nothing duplicated.
#[tokio::test]
async fn an_event_batch_killed_while_processing_is_whole_after_restart() {
    const PERSONS: usize = 30;
    const EVENTS: usize = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let server = ServerProcess::start(dir.path());
    let dataset = create_dataset(
        &server,
        &http,
        "https://ns.adobe.com/xdm/context/experienceevent",
    )
    .await;
    // Page names that do not repeat, so the chunks stay large once compressed.
    let rows: Vec<String> = (0..PERSONS * EVENTS)
        .map(|index| {
            let person = index % PERSONS;
            let page = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            json!({"_id": format!("e{index}"), "timestamp": format!("2026-01-01T00:00:{:02}.{:03}Z", index / 1000 % 60, index % 1000),
                   "eventType": "web.webpagedetails.pageViews",
                   "web": {"webPageDetails": {"name": format!("page-{page:x}")}},
                   "identityMap": {"CRMID": [{"id": format!("k{person}"), "primary": true}]}})
            .to_string()
        })
        .collect();
    let server = kill_while_processing(server, &http, dir.path(), &dataset, rows).await;
    assert!(
        std::fs::read_dir(dir.path().join("event-segments"))
            .map(|files| files.count() > 0)
            .unwrap_or(false),
        "a batch this large keeps its chunks in segment files"
    );
    for person in [0, PERSONS - 1] {
        let mut ids = std::collections::BTreeSet::new();
        let first = format!(
            "/data/core/ups/access/entities?schema.name=_xdm.context.experienceevent&relatedSchema.name=_xdm.context.profile&relatedEntityId=k{person}&relatedEntityIdNS=CRMID&orderby=timestamp"
        );
        let mut path = first.clone();
        loop {
            let page = json(
                server
                    .demo_request(&http, Method::GET, &path)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            let children = page["children"]
                .as_array()
                .unwrap_or_else(|| panic!("{page}"));
            for child in children {
                assert!(ids.insert(child["entityId"].as_str().unwrap().to_owned()));
            }
            match page["_page"]["next"].as_str() {
                Some(next) if !next.is_empty() => path = format!("{first}&start={next}"),
                _ => break,
            }
        }
        assert_eq!(ids.len(), EVENTS, "events of k{person}");
    }
}

#[tokio::test]
async fn a_segment_job_interrupted_by_kill_9_runs_again_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let server = ServerProcess::start(dir.path());
    let dataset = create_profile_dataset(&server, &http).await;
    let rows: Vec<String> = (0..5_000)
        .map(|index| record(&format!("j{index}")).to_string())
        .collect();
    let batch_id = upload_and_complete(&server, &http, &dataset, rows).await;
    // COMPLETE only accepts the batch: the job must not start before its rows are stored.
    let mut batch_status = String::new();
    for _ in 0..500 {
        let batch = catalog_batch(&server, &http, &batch_id).await;
        batch_status = batch[&batch_id]["status"].as_str().unwrap().to_owned();
        if batch_status != "staging" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(batch_status, "success");
    let definition = json(
        server
            .demo_request(&http, Method::POST, "/data/core/ups/segment/definitions")
            .json(&json!({"name": "j", "expression": {"type": "PQL", "format": "pql/text", "value": "person.name.firstName.startsWith(\"j1\")"},
                          "schema": {"name": "_xdm.context.profile"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let segment_id = definition["id"].as_str().unwrap().to_owned();
    let job = json(
        server
            .demo_request(&http, Method::POST, "/data/core/ups/segment/jobs")
            .json(&json!([{"segmentId": segment_id}]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let job_id = job["id"].as_str().unwrap().to_owned();
    server.kill_hard();

    // Whatever state the kill caught it in, the job is never left hanging: it finishes after restart.
    let server = ServerProcess::start(dir.path());
    let mut status = String::new();
    for _ in 0..500 {
        let job = json(
            server
                .demo_request(
                    &http,
                    Method::GET,
                    &format!("/data/core/ups/segment/jobs/{job_id}"),
                )
                .send()
                .await
                .unwrap(),
        )
        .await;
        status = job["status"].as_str().unwrap().to_owned();
        if status == "SUCCEEDED" {
            // j1, j10..j19, j100..j199, j1000..j1999
            assert_eq!(
                job["metrics"]["segmentedProfileCounter"][&segment_id],
                1 + 10 + 100 + 1000,
                "{job}"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the interrupted job ended {status}, not SUCCEEDED");
}

#[tokio::test]
async fn serve_demo_loads_a_demo_store_into_an_empty_data_directory_once() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let server = ServerProcess::start_with_demo_profiles(dir.path(), 2_000);
    let status = json(
        server
            .demo_request(&http, Method::GET, "/data/core/ups/previewsamplestatus")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status["storeSize"], 2_000, "{status}");
    let datasets = json(
        server
            .demo_request(&http, Method::GET, "/data/foundation/catalog/dataSets")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        datasets.as_object().unwrap().len(),
        3,
        "the demo data came in through Catalog datasets"
    );
    server.kill_hard();
    // A second start finds data and loads nothing more.
    let server = ServerProcess::start_with_demo_profiles(dir.path(), 2_000);
    let datasets = json(
        server
            .demo_request(&http, Method::GET, "/data/foundation/catalog/dataSets")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(datasets.as_object().unwrap().len(), 3);
}
