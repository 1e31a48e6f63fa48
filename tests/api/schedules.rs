//! Schedules through HTTP with an injected clock: validation, JSON Patch, firing, missed fires,
//! restart.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use reqwest::Method;
use segmentd::clock::ManualClock;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_envelope, assert_not_found, json, spawn_app_with_clock};

const SCHEDULES: &str = "/data/core/ups/config/schedules";

async fn scheduler_jobs(app: &TestApp) -> Vec<Value> {
    let listed = json(
        app.request(
            Method::GET,
            "/data/core/ups/segment/jobs?property=source==scheduler&sort=creationTime:asc",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    listed["children"].as_array().unwrap().clone()
}

/// Waits (real time, bounded) until the scheduler has created `count` jobs.
async fn wait_for_jobs(app: &TestApp, count: usize) -> Vec<Value> {
    for _ in 0..200 {
        let jobs = scheduler_jobs(app).await;
        if jobs.len() >= count {
            return jobs;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    scheduler_jobs(app).await
}

#[tokio::test]
async fn an_activated_schedule_fires_at_its_time_once_per_missed_window_and_after_restart() {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap(),
    ));
    let app = spawn_app_with_clock(clock.clone()).await;
    let definition = json(
        app.request(Method::POST, "/data/core/ups/segment/definitions")
            .json(&json!({"name": "all", "expression": {"type": "PQL", "format": "pql/text", "value": "true"}, "schema": {"name": "_xdm.context.profile"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(definition["id"].is_string());

    // As seed 002: create inactive, then activate with the documented patch.
    let created = app
        .request(Method::POST, SCHEDULES)
        .json(&json!({"name": "profile-default", "type": "batch_segmentation", "properties": {"segments": ["*"]}, "schedule": "0 0 1 * * ?", "state": "inactive"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let schedule = json(created).await;
    let id = schedule["id"].as_str().unwrap().to_owned();
    assert_eq!(schedule["state"], "inactive");

    clock.advance(chrono::Duration::hours(2));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        scheduler_jobs(&app).await.is_empty(),
        "an inactive schedule fired"
    );

    let activate = app
        .request(Method::PATCH, &format!("{SCHEDULES}/{id}"))
        .json(&json!([{"op": "add", "path": "/state", "value": "active"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(activate.status(), 204);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        scheduler_jobs(&app).await.is_empty(),
        "activation at 02:00 must wait for the next 01:00"
    );

    clock.advance(chrono::Duration::hours(23)); // 2026-11-27T01:00Z
    let jobs = wait_for_jobs(&app, 1).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["source"], "scheduler");
    assert_eq!(jobs[0]["properties"]["scheduleId"], id.as_str());
    assert!(jobs[0]["properties"]["runId"].is_string());

    // Three days pass while nothing looks: one run, not three.
    clock.advance(chrono::Duration::days(3));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(wait_for_jobs(&app, 2).await.len(), 2);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        scheduler_jobs(&app).await.len(),
        2,
        "missed fire times collapse into one run"
    );

    // A restart re-arms the schedule from the store.
    let app = app.restart().await;
    clock.advance(chrono::Duration::days(1));
    assert_eq!(wait_for_jobs(&app, 3).await.len(), 3);
}

#[tokio::test]
async fn schedules_enforce_the_rules_and_patch_atomically() {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap(),
    ));
    let app = spawn_app_with_clock(clock).await;
    let body = |cron: &str| json!({"name": "s", "type": "batch_segmentation", "properties": {"segments": ["*"]}, "schedule": cron});

    let too_often = app
        .request(Method::POST, SCHEDULES)
        .json(&body("0 0/10 17 * * ?"))
        .send()
        .await
        .unwrap();
    let envelope = assert_envelope(too_often, 400).await;
    assert!(
        envelope["title"].as_str().unwrap().contains("24 hours"),
        "{envelope}"
    );
    let bad_weekday = app
        .request(Method::POST, SCHEDULES)
        .json(&body("0 0 1 ? * 0"))
        .send()
        .await
        .unwrap();
    assert_envelope(bad_weekday, 400).await;
    let export = app
        .request(Method::POST, SCHEDULES)
        .json(&json!({"name": "e", "type": "export", "properties": {"schema": {"name": "_xdm.context.profile"}}}))
        .send()
        .await
        .unwrap();
    let envelope = assert_envelope(export, 400).await;
    assert!(
        envelope["title"].as_str().unwrap().contains("destination"),
        "{envelope}"
    );

    // Quartz numeric weekdays are normalised to names (2 = Monday in Quartz).
    let created = json(
        app.request(Method::POST, SCHEDULES)
            .json(&body("0 30 12 ? * 2"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(created["schedule"], "0 30 12 ? * MON");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_envelope(
        app.request(Method::POST, SCHEDULES)
            .json(&body("0 0 1 * * ?"))
            .send()
            .await
            .unwrap(),
        409,
    )
    .await;

    // One bad operation: nothing changes.
    let atomic = app
        .request(Method::PATCH, &format!("{SCHEDULES}/{id}"))
        .json(&json!([{"op": "add", "path": "/state", "value": "active"}, {"op": "add", "path": "/name", "value": "renamed"}]))
        .send()
        .await
        .unwrap();
    assert_envelope(atomic, 400).await;
    let bad_value = app
        .request(Method::PATCH, &format!("{SCHEDULES}/{id}"))
        .json(&json!([{"op": "replace", "path": "/state", "value": "active"}, {"op": "add", "path": "/schedule", "value": "0 * * * * ?"}]))
        .send()
        .await
        .unwrap();
    assert_envelope(bad_value, 400).await;
    let unchanged = json(
        app.request(Method::GET, &format!("{SCHEDULES}/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(unchanged["state"], "inactive");
    assert_eq!(unchanged["schedule"], "0 30 12 ? * MON");

    let moved = app
        .request(Method::PATCH, &format!("{SCHEDULES}/{id}"))
        .json(&json!([{"op": "add", "path": "/schedule", "value": "0 0 2 * * ?"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 204);
    let listed = json(app.request(Method::GET, SCHEDULES).send().await.unwrap()).await;
    assert_eq!(listed["_page"]["totalCount"], 1);
    assert_eq!(listed["children"][0]["schedule"], "0 0 2 * * ?");
    assert_eq!(
        app.request(Method::DELETE, &format!("{SCHEDULES}/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_not_found(&app, &format!("{SCHEDULES}/{id}")).await;
}

#[tokio::test]
async fn an_export_schedule_creates_export_jobs_at_its_time() {
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap(),
    ));
    let app = spawn_app_with_clock(clock.clone()).await;
    let target = crate::helpers::post_dataset(
        &app,
        &json!({"name": "audience", "schemaRef": {"id": "https://ns.adobe.com/xdm/context/profile__union"}, "fileDescription": {"persisted": true}}),
    )
    .await;
    let created = app
        .request(Method::POST, SCHEDULES)
        .json(&json!({"name": "daily export", "type": "export", "schedule": "0 0 3 * * ?", "state": "active",
                      "properties": {"destination": {"datasetId": target}, "schema": {"name": "_xdm.context.profile"}, "filter": {"emptyProfiles": true}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    // A classic schedule may still be created beside an export schedule.
    let classic = app
        .request(Method::POST, SCHEDULES)
        .json(&json!({"name": "classic", "type": "batch_segmentation", "properties": {"segments": ["*"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(classic.status(), 200);

    clock.advance(chrono::Duration::hours(3));
    let mut records = Vec::new();
    for _ in 0..200 {
        let listed = json(
            app.request(Method::GET, "/data/core/ups/export/jobs")
                .send()
                .await
                .unwrap(),
        )
        .await;
        records = listed["records"].as_array().unwrap().clone();
        if !records.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(records.len(), 1, "the export schedule fired once at 03:00");
    assert_eq!(records[0]["destination"]["datasetId"], target.as_str());
}
