//! Segment jobs through HTTP: exact counts on a fixture, membership transitions across runs,
//! cancellation, list filters.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_envelope, json, post_definition, spawn_app};
use crate::ingest::{create_dataset, ingest_json_lines};

const JOBS: &str = "/data/core/ups/segment/jobs";
const PROFILE: &str = "https://ns.adobe.com/xdm/context/profile";

async fn create_definition(app: &TestApp, name: &str, pql: &str) -> String {
    post_definition(app, name, pql, None).await
}

/// Ingests people p{index}: country US when index % 3 == 0, loyalty points = index.
async fn ingest_people(
    app: &TestApp,
    dataset: &str,
    indexes: impl Iterator<Item = usize>,
    country_of: impl Fn(usize) -> &'static str,
) {
    let rows: Vec<String> = indexes
        .map(|index| {
            json!({"identityMap": {"CRMID": [{"id": format!("p{index}"), "primary": true}]},
                   "homeAddress": {"countryCode": country_of(index)}, "loyalty": {"points": index}})
            .to_string()
        })
        .collect();
    let batch = ingest_json_lines(app, dataset, &[("people.json", rows.join("\n"))]).await;
    assert_eq!(batch["status"], "success", "{batch}");
}

async fn run_job(app: &TestApp, body: Value) -> Value {
    let created = app
        .request(Method::POST, JOBS)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let job = json(created).await;
    wait_for_job(app, job["id"].as_str().unwrap()).await
}

async fn wait_for_job(app: &TestApp, id: &str) -> Value {
    for _ in 0..1000 {
        let job = json(
            app.request(Method::GET, &format!("{JOBS}/{id}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        if matches!(
            job["status"].as_str(),
            Some("SUCCEEDED" | "FAILED" | "CANCELLED")
        ) {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {id} did not finish");
}

async fn membership(app: &TestApp, crm_id: &str, segment_id: &str) -> Value {
    let path = format!(
        "/data/core/ups/access/entities?schema.name=_xdm.context.profile&entityId={crm_id}&entityIdNS=CRMID"
    );
    let body = json(app.request(Method::GET, &path).send().await.unwrap()).await;
    let (_, profile) = body.as_object().unwrap().iter().next().unwrap();
    profile["entity"]["segmentMembership"]["ups"][segment_id].clone()
}

#[tokio::test]
async fn jobs_count_exactly_and_record_realized_then_exited_memberships() {
    let app = spawn_app().await;
    let dataset = create_dataset(&app, "crm", PROFILE).await;
    ingest_people(&app, &dataset, 0..300, |index| {
        if index % 3 == 0 { "US" } else { "FR" }
    })
    .await;
    let us = create_definition(&app, "US", r#"homeAddress.countryCode = "US""#).await;
    let rich = create_definition(&app, "rich", "loyalty.points >= 250").await;
    let rich_us = create_definition(
        &app,
        "rich US",
        &format!(r#"inSegment("{us}") and inSegment("{rich}")"#),
    )
    .await;

    let job = run_job(
        &app,
        json!([{"segmentId": rich_us}, {"segmentId": us}, {"segmentId": rich}]),
    )
    .await;
    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    let metrics = &job["metrics"];
    assert_eq!(metrics["totalProfiles"], 300);
    assert_eq!(metrics["segmentedProfileCounter"][&us], 100);
    assert_eq!(metrics["segmentedProfileCounter"][&rich], 50);
    // inSegment sees this job's own results for the definitions it references.
    assert_eq!(
        metrics["segmentedProfileCounter"][&rich_us],
        (250..300).filter(|index| index % 3 == 0).count()
    );
    assert_eq!(
        metrics["segmentedProfileByNamespaceCounter"][&us]["crmid"],
        100
    );
    assert_eq!(
        metrics["segmentedProfileByStatusCounter"][&us]["realized"],
        100
    );
    assert_eq!(metrics["totalProfilesByMergePolicy"]["ups-default"], 300);
    let timing = &metrics["profileSegmentationTime"];
    assert_eq!(
        timing["totalTimeInMs"].as_i64().unwrap(),
        timing["endTimeInMs"].as_i64().unwrap() - timing["startTimeInMs"].as_i64().unwrap()
    );
    assert!(metrics["totalTime"]["totalTimeInMs"].as_i64().unwrap() >= 0);

    let first = membership(&app, "p3", &us).await;
    assert_eq!(first["status"], "realized");
    let first_time = first["lastQualificationTime"].as_str().unwrap().to_owned();
    assert!(
        membership(&app, "p1", &us).await.is_null(),
        "non-members have no entry"
    );

    // p3 moves to France, p1 to the US; a second job records the transitions.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ingest_people(&app, &dataset, [1usize, 3].into_iter(), |index| {
        if index == 1 { "US" } else { "FR" }
    })
    .await;
    let second = run_job(
        &app,
        json!({"schema": {"name": "_xdm.context.profile"}, "segments": [{"segmentId": "*"}]}),
    )
    .await;
    assert_eq!(second["status"], "SUCCEEDED");
    assert_eq!(second["metrics"]["segmentedProfileCounter"][&us], 100);
    assert_eq!(
        second["metrics"]["segmentedProfileByStatusCounter"][&us],
        json!({"realized": 1, "exited": 1})
    );

    let exited = membership(&app, "p3", &us).await;
    assert_eq!(exited["status"], "exited");
    assert_ne!(
        exited["lastQualificationTime"],
        first_time.as_str(),
        "exit time is the second job's"
    );
    assert_eq!(membership(&app, "p1", &us).await["status"], "realized");
    let still = membership(&app, "p6", &us).await;
    assert_eq!(still["status"], "realized");
    assert_eq!(
        still["lastQualificationTime"],
        first_time.as_str(),
        "a member that stays keeps its time"
    );
}

#[tokio::test]
async fn a_cancelled_job_changes_no_membership_and_lists_filter() {
    let app = spawn_app().await;
    let dataset = create_dataset(&app, "crm", PROFILE).await;
    ingest_people(&app, &dataset, 0..3_000, |index| {
        if index % 2 == 0 { "US" } else { "FR" }
    })
    .await;
    let slow: Vec<String> = create_slow_definitions(&app).await;
    let quick = create_definition(&app, "quick", r#"homeAddress.countryCode = "US""#).await;

    // The first job keeps the runner busy while the second is created and cancelled in the queue.
    let busy = json(
        app.request(Method::POST, JOBS)
            .json(
                &slow
                    .iter()
                    .map(|id| json!({"segmentId": id}))
                    .collect::<Vec<_>>(),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    let queued = json(
        app.request(Method::POST, JOBS)
            .json(&json!([{"segmentId": quick}]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let queued_id = queued["id"].as_str().unwrap();
    let cancelled = app
        .request(Method::DELETE, &format!("{JOBS}/{queued_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    assert_eq!(wait_for_job(&app, queued_id).await["status"], "CANCELLED");
    assert_eq!(
        wait_for_job(&app, busy["id"].as_str().unwrap()).await["status"],
        "SUCCEEDED"
    );
    assert!(
        membership(&app, "p0", &quick).await.is_null(),
        "a cancelled job wrote memberships"
    );
    assert_envelope(
        app.request(Method::DELETE, &format!("{JOBS}/{queued_id}"))
            .send()
            .await
            .unwrap(),
        409,
    )
    .await;

    let succeeded = json(
        app.request(Method::GET, &format!("{JOBS}?status=SUCCEEDED"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(succeeded["_page"]["totalCount"], 1);
    let by_segment = json(
        app.request(
            Method::GET,
            &format!("{JOBS}?property=segments~segmentId=={quick}"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(by_segment["children"][0]["id"], queued_id);
    let by_path = json(
        app.request(Method::GET, &format!("{JOBS}?property=status==CANCELLED"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(by_path["_page"]["totalCount"], 1);
    let bulk = app
        .request(Method::POST, &format!("{JOBS}/bulk-get"))
        .json(&json!({"ids": [{"id": queued_id}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bulk.status(), 207);
    assert_envelope(
        app.request(Method::POST, JOBS)
            .json(&json!([{"segmentId": "nope"}]))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
}

/// Creates ten definitions that make a job take a while.
async fn create_slow_definitions(app: &TestApp) -> Vec<String> {
    let mut ids = Vec::new();
    for index in 0..10 {
        ids.push(
            create_definition(
                app,
                &format!("slow {index}"),
                &format!("loyalty.points > {index} and homeAddress.countryCode.startsWith(\"U\")"),
            )
            .await,
        );
    }
    ids
}

/// Definitions under two merge policies make two passes; an `inSegment` of the second pass reads
/// what the first pass of the same job decided (its changes are not committed yet).
#[tokio::test]
async fn in_segment_sees_an_earlier_merge_policy_pass_of_the_same_job() {
    let app = spawn_app().await;
    let dataset = create_dataset(&app, "crm", PROFILE).await;
    ingest_people(&app, &dataset, 0..300, |index| {
        if index % 3 == 0 { "US" } else { "FR" }
    })
    .await;
    let policy = json(
        app.request(Method::POST, "/data/core/ups/config/mergePolicies")
            .json(&json!({"name": "no graph", "schema": {"name": "_xdm.context.profile"},
                          "identityGraph": {"type": "none"}, "attributeMerge": {"type": "timestampOrdered"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let policy_id = policy["id"].as_str().unwrap().to_owned();
    let rich = post_definition(&app, "rich", "loyalty.points >= 250", Some(&policy_id)).await;
    let rich_us = create_definition(
        &app,
        "rich US",
        &format!(r#"inSegment("{rich}") and homeAddress.countryCode = "US""#),
    )
    .await;
    let expected = (250..300).filter(|index| index % 3 == 0).count();
    for run in 0..2 {
        let job = run_job(&app, json!([{"segmentId": rich_us}, {"segmentId": rich}])).await;
        assert_eq!(job["status"], "SUCCEEDED", "{job}");
        let metrics = &job["metrics"];
        assert_eq!(metrics["totalProfilesByMergePolicy"][&policy_id], 300);
        assert_eq!(metrics["totalProfilesByMergePolicy"]["ups-default"], 300);
        assert_eq!(metrics["segmentedProfileCounter"][&rich], 50);
        assert_eq!(metrics["segmentedProfileCounter"][&rich_us], expected);
        let realized = &metrics["segmentedProfileByStatusCounter"][&rich_us]["realized"];
        match run {
            0 => assert_eq!(*realized, expected),
            _ => assert!(
                realized.is_null(),
                "no transition on the second run: {metrics}"
            ),
        }
    }
    assert_eq!(
        membership(&app, "p297", &rich_us).await["status"],
        "realized"
    );
    assert_eq!(membership(&app, "p297", &rich).await["status"], "realized");
    assert!(membership(&app, "p298", &rich_us).await.is_null());
}

/// Files of the columnar snapshot under `dir`.
fn snapshot_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        match path.is_dir() {
            true => files.extend(snapshot_files(&path)),
            false => files.push(path),
        }
    }
    files
}

/// After writes stop, the service refreshes the columnar snapshot by itself, so the next job reads
/// it instead of rebuilding it; jobs answer the same either way.
#[tokio::test]
async fn the_columnar_snapshot_is_refreshed_after_ingestion_without_a_job() {
    let app = spawn_app().await;
    let dataset = create_dataset(&app, "crm", PROFILE).await;
    ingest_people(&app, &dataset, 0..50, |_| "US").await;
    let columnar = app.data_dir().join(segmentd::snapshot::DIR);
    let mut waited = 0;
    while snapshot_files(&columnar).is_empty() {
        assert!(waited < 600, "no snapshot 30 s after the batch");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
    }
    let written: Vec<_> = snapshot_files(&columnar)
        .iter()
        .map(|file| std::fs::metadata(file).unwrap().modified().unwrap())
        .collect();
    let rich = create_definition(&app, "rich", "loyalty.points >= 40").await;
    let job = run_job(&app, json!([{"segmentId": rich}])).await;
    assert_eq!(job["metrics"]["segmentedProfileCounter"][&rich], 10);
    let after: Vec<_> = snapshot_files(&columnar)
        .iter()
        .map(|file| std::fs::metadata(file).unwrap().modified().unwrap())
        .collect();
    assert_eq!(after, written, "the job read the refreshed files");
}
