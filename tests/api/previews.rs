//! Previews and estimates over a store whose exact answer is known.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{ORG_A, TestApp, assert_envelope, assert_not_found, json, spawn_app};
use crate::ingest::{create_dataset, ingest_json_lines};

const PROFILE: &str = "https://ns.adobe.com/xdm/context/profile";

/// Ingests `count` profiles c{offset}..; every seventh (by index) lives in the US.
async fn ingest_people(app: &TestApp, dataset: &str, offset: usize, count: usize) {
    let rows: Vec<String> = (offset..offset + count)
        .map(|index| {
            let country = if index % 7 == 0 { "US" } else { "FR" };
            json!({"identityMap": {"CRMID": [{"id": format!("c{index}"), "primary": true}], "Email": [{"id": format!("p{index}@example.com")}]},
                   "homeAddress": {"countryCode": country}})
            .to_string()
        })
        .collect();
    let batch = ingest_json_lines(app, dataset, &[("people.json", rows.join("\n"))]).await;
    assert_eq!(batch["status"], "success", "{batch}");
}

async fn create_preview(app: &TestApp, body: Value) -> String {
    let created = app
        .request(Method::POST, "/data/core/ups/preview")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created = json(created).await;
    assert_eq!(created["state"], "NEW");
    created["previewId"].as_str().unwrap().to_owned()
}

/// Polls the estimate until it is final, checking at every poll that the interval holds `exact`.
async fn poll_until_ready(app: &TestApp, preview_id: &str, exact: u64) -> Value {
    for _ in 0..2000 {
        let estimate = json(
            app.request(
                Method::GET,
                &format!("/data/core/ups/estimate/{preview_id}"),
            )
            .send()
            .await
            .unwrap(),
        )
        .await;
        let (lower, upper) = (
            estimate["estimatedSizeLowerBound"].as_u64().unwrap(),
            estimate["estimatedSizeUpperBound"].as_u64().unwrap(),
        );
        assert!(
            lower <= exact && exact <= upper,
            "interval [{lower}, {upper}] misses {exact}: {estimate}"
        );
        let estimated = estimate["estimatedSize"].as_u64().unwrap();
        assert!(lower <= estimated && estimated <= upper, "{estimate}");
        assert!(
            estimate["profilesMatchedSoFar"].as_u64().unwrap()
                <= lower.max(estimate["profilesMatchedSoFar"].as_u64().unwrap())
        );
        assert!(
            estimate["profilesReadSoFar"].as_u64().unwrap()
                <= estimate["numRowsToRead"].as_u64().unwrap()
        );
        if estimate["state"] == "RESULT_READY" {
            return estimate;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("preview {preview_id} never finished");
}

#[tokio::test]
async fn a_census_preview_converges_to_the_exact_count_and_pages_its_matches() {
    let app = spawn_app().await;
    let dataset = create_dataset(&app, "crm", PROFILE).await;
    ingest_people(&app, &dataset, 0, 3_000).await;
    let exact = (0..3_000).filter(|index| index % 7 == 0).count() as u64;

    let preview_id = create_preview(&app, json!({"predicateExpression": "homeAddress.countryCode = \"US\"", "predicateType": "pql/text",
        "predicateModel": "_xdm.context.profile"})).await;
    let estimate = poll_until_ready(&app, &preview_id, exact).await;
    assert_eq!(estimate["estimatedSize"], exact);
    assert_eq!(estimate["profilesMatchedSoFar"], exact);
    assert_eq!(estimate["profilesReadSoFar"], 3_000);
    assert_eq!(estimate["totalRows"], 3_000);
    assert_eq!(estimate["standardError"], 0.0);
    assert_eq!(
        estimate["estimatedSizeLowerBound"], exact,
        "a census collapses the interval"
    );
    assert_eq!(estimate["estimatedSizeUpperBound"], exact);
    let distribution = estimate["estimatedNamespaceDistribution"]
        .as_array()
        .unwrap();
    assert!(
        distribution
            .iter()
            .all(|entry| entry["profilesMatchedSoFar"] == exact),
        "{distribution:?}"
    );

    // Pages of 100 through every match, following `next`.
    let mut seen = std::collections::HashSet::new();
    let mut path = format!("/data/core/ups/preview/{preview_id}?limit=100");
    loop {
        let page = json(app.request(Method::GET, &path).send().await.unwrap()).await;
        assert_eq!(page["state"], "RESULT_READY");
        for result in page["results"].as_array().unwrap() {
            let (xid, entry) = result.as_object().unwrap().iter().next().unwrap();
            assert!(entry["_href"].as_str().unwrap().contains(xid.as_str()));
            assert_eq!(
                entry["endCustomerIds"].as_object().unwrap().len(),
                1,
                "the email identity is listed"
            );
            assert!(seen.insert(xid.clone()), "{xid} listed twice");
        }
        match page["links"]["next"].as_str().unwrap() {
            "" => break,
            next => path = next.to_owned(),
        }
    }
    assert_eq!(seen.len() as u64, exact);
    // Every listed profile really matches: look one up.
    let any = seen.iter().next().unwrap();
    let profile = json(
        app.request(
            Method::GET,
            &format!(
                "/data/core/ups/access/entities?schema.name=_xdm.context.profile&entityId={any}"
            ),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(profile[any]["entity"]["homeAddress"]["countryCode"], "US");
}

#[tokio::test]
async fn previews_check_the_expression_stay_in_their_tenant_and_can_be_killed() {
    let app = spawn_app().await;
    let dataset = create_dataset(&app, "crm", PROFILE).await;
    ingest_people(&app, &dataset, 0, 50).await;
    let bad = app
        .request(Method::POST, "/data/core/ups/preview")
        .json(&json!({"predicateExpression": "homeAddress.countryCode = "}))
        .send()
        .await
        .unwrap();
    let body = assert_envelope(bad, 400).await;
    assert!(body["errors"]["400"][0]["line"].is_number(), "{body}");

    let preview_id = create_preview(&app, json!({"predicateExpression": "true"})).await;
    let other = app
        .as_a(
            Method::GET,
            &format!("/data/core/ups/estimate/{preview_id}"),
            ORG_A,
            "dev",
        )
        .send()
        .await
        .unwrap();
    assert_envelope(other, 404).await;
    let killed = json(
        app.request(
            Method::DELETE,
            &format!("/data/core/ups/preview/{preview_id}"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(killed, json!({"status": true, "message": "KILLED"}));
    assert_not_found(&app, &format!("/data/core/ups/preview/{preview_id}")).await;
}

#[tokio::test]
async fn the_sample_is_rebuilt_when_the_store_grows_by_more_than_three_percent() {
    let app = spawn_app().await;
    let dataset = create_dataset(&app, "crm", PROFILE).await;
    ingest_people(&app, &dataset, 0, 1_000).await;
    let preview_id = create_preview(
        &app,
        json!({"predicateExpression": "homeAddress.countryCode = \"US\""}),
    )
    .await;
    poll_until_ready(&app, &preview_id, 143).await;
    let status = json(
        app.request(Method::GET, "/data/core/ups/previewsamplestatus")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status["samples"][0]["sampleSize"], 1_000);
    assert_eq!(status["samples"][0]["tier"], "wholeStore");
    assert!(status["samples"][0]["sampleBytes"].as_u64().unwrap() > 0);

    // 2% more: the sample stays; the next preview still reads 1,000 profiles.
    ingest_people(&app, &dataset, 1_000, 20).await;
    let status = json(
        app.request(Method::GET, "/data/core/ups/previewsamplestatus")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status["samples"][0]["sampleSize"], 1_000);
    assert_eq!(status["storeSize"], 1_020);

    // 6% more in all: the batch's completion rebuilds it.
    ingest_people(&app, &dataset, 1_020, 40).await;
    let mut rebuilt = false;
    for _ in 0..200 {
        let status = json(
            app.request(Method::GET, "/data/core/ups/previewsamplestatus")
                .send()
                .await
                .unwrap(),
        )
        .await;
        if status["samples"][0]["sampleSize"] == 1_060 {
            rebuilt = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(rebuilt, "the sample was not rebuilt after a 6% change");
    let exact = (0..1_060).filter(|index| index % 7 == 0).count() as u64;
    let preview_id = create_preview(
        &app,
        json!({"predicateExpression": "homeAddress.countryCode = \"US\""}),
    )
    .await;
    assert_eq!(
        poll_until_ready(&app, &preview_id, exact).await["estimatedSize"],
        exact
    );
}

#[tokio::test]
async fn an_event_predicate_counts_exactly_over_a_census_sample() {
    let app = spawn_app().await;
    let crm = create_dataset(&app, "crm", PROFILE).await;
    let web = create_dataset(
        &app,
        "web",
        "https://ns.adobe.com/xdm/context/experienceevent",
    )
    .await;
    let ecid = |index: usize| format!("{index:038}");
    let records: Vec<String> = (0..60)
        .map(|index| {
            json!({"identityMap": {"CRMID": [{"id": format!("c{index}"), "primary": true}], "ECID": [{"id": ecid(index)}]}}).to_string()
        })
        .collect();
    ingest_json_lines(&app, &crm, &[("p.json", records.join("\n"))]).await;
    // Person `index` has `index % 5` page views.
    let events: Vec<String> = (0..60)
        .flat_map(|index| (0..index % 5).map(move |view| (index, view)))
        .map(|(index, view)| {
            json!({"_id": format!("e{index}-{view}"), "timestamp": "2026-01-01T00:00:00Z", "eventType": "web.webpagedetails.pageViews",
                   "identityMap": {"ECID": [{"id": ecid(index), "primary": true}]}})
            .to_string()
        })
        .collect();
    let batch = ingest_json_lines(&app, &web, &[("e.json", events.join("\n"))]).await;
    assert_eq!(batch["status"], "success", "{batch}");
    let exact = (0..60).filter(|index| index % 5 >= 3).count() as u64;
    let preview_id = create_preview(&app, json!({"predicateExpression": "xEvent[eventType = \"web.webpagedetails.pageViews\"].count() >= 3"})).await;
    let estimate = poll_until_ready(&app, &preview_id, exact).await;
    assert_eq!(estimate["estimatedSize"], exact);
    assert_eq!(estimate["profilesReadSoFar"], 60);
}
