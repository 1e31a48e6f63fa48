//! Merge policies and profile access over a hand-computed fixture: three people split over two
//! datasets with conflicting attributes and overlapping identities.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{ORG_A, TestApp, assert_envelope, json, spawn_app};
use crate::ingest::{create_dataset, ingest_json_lines};

const POLICIES: &str = "/data/core/ups/config/mergePolicies";
const PROFILE: &str = "https://ns.adobe.com/xdm/context/profile";

/// The fixture's dataset ids.
struct Fixture {
    crm: String,
    loyalty: String,
}

/// Ingests the fixture: `crm` first, then `loyalty` (so loyalty fragments are newer).
///
/// - Ann: crm {CRMID a1 (primary), Email a@x} firstName Ann, US; loyalty {Email a@x (primary), Phone 111}
///   firstName Annie, tier gold. Linked through a@x.
/// - Bob: crm {CRMID b1} firstName Bob, FR; loyalty {CRMID b1} firstName Robert, tier silver.
/// - Cy: crm only {CRMID c1, Email c@x} firstName Cy.
async fn ingest_fixture(app: &TestApp) -> Fixture {
    let crm = create_dataset(app, "crm", PROFILE).await;
    let loyalty = create_dataset(app, "loyalty", PROFILE).await;
    let crm_rows = [
        json!({"identityMap": {"CRMID": [{"id": "a1", "primary": true}], "Email": [{"id": "a@x"}]},
               "person": {"name": {"firstName": "Ann"}}, "homeAddress": {"countryCode": "US"}}),
        json!({"identityMap": {"CRMID": [{"id": "b1", "primary": true}]},
               "person": {"name": {"firstName": "Bob"}}, "homeAddress": {"countryCode": "FR"}}),
        json!({"identityMap": {"CRMID": [{"id": "c1", "primary": true}], "Email": [{"id": "c@x"}]},
               "person": {"name": {"firstName": "Cy"}}}),
    ];
    let loyalty_rows = [
        json!({"identityMap": {"Email": [{"id": "a@x", "primary": true}], "Phone": [{"id": "111"}]},
               "person": {"name": {"firstName": "Annie"}}, "loyalty": {"tier": "gold"}}),
        json!({"identityMap": {"CRMID": [{"id": "b1", "primary": true}]},
               "person": {"name": {"firstName": "Robert"}}, "loyalty": {"tier": "silver"}}),
    ];
    let lines = |rows: &[Value]| {
        rows.iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        ingest_json_lines(app, &crm, &[("crm.json", lines(&crm_rows))]).await["status"],
        "success"
    );
    assert_eq!(
        ingest_json_lines(app, &loyalty, &[("loyalty.json", lines(&loyalty_rows))]).await["status"],
        "success"
    );
    Fixture { crm, loyalty }
}

/// Looks a profile up and returns (entityId, entity).
async fn lookup(app: &TestApp, namespace: &str, id: &str, policy: Option<&str>) -> (String, Value) {
    let mut path = format!(
        "/data/core/ups/access/entities?schema.name=_xdm.context.profile&entityId={id}&entityIdNS={namespace}"
    );
    if let Some(policy) = policy {
        path.push_str(&format!("&mergePolicyId={policy}"));
    }
    let response = app.request(Method::GET, &path).send().await.unwrap();
    assert_eq!(response.status(), 200, "lookup {namespace}:{id}");
    let body = json(response).await;
    let (xid, profile) = body.as_object().unwrap().iter().next().unwrap();
    assert_eq!(&profile["entityId"], xid);
    (xid.clone(), profile["entity"].clone())
}

async fn create_policy(app: &TestApp, body: Value) -> Value {
    let response = app
        .request(Method::POST, POLICIES)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    json(response).await
}

fn policy(name: &str, graph: &str, merge: Value, default: bool) -> Value {
    json!({"name": name, "schema": {"name": "_xdm.context.profile"}, "identityGraph": {"type": graph},
           "attributeMerge": merge, "default": default})
}

#[tokio::test]
async fn each_policy_gives_the_hand_computed_merge() {
    let app = spawn_app().await;
    let Fixture { crm, loyalty } = ingest_fixture(&app).await;

    // Built-in default: timestamp ordered over the private graph. Newer loyalty values win field by
    // field; fields only crm has survive; every identity of Ann resolves to one profile.
    let (ann_xid, ann) = lookup(&app, "CRMID", "a1", None).await;
    assert_eq!(ann["person"]["name"]["firstName"], "Annie");
    assert_eq!(ann["homeAddress"]["countryCode"], "US");
    assert_eq!(ann["loyalty"]["tier"], "gold");
    assert_eq!(lookup(&app, "Phone", "111", None).await.0, ann_xid);
    assert_eq!(lookup(&app, "email", "a@x", None).await.0, ann_xid);
    let (xid_only, _) = {
        let path = format!(
            "/data/core/ups/access/entities?schema.name=_xdm.context.profile&entityId={ann_xid}"
        );
        let body = json(app.request(Method::GET, &path).send().await.unwrap()).await;
        (body.as_object().unwrap().keys().next().unwrap().clone(), ())
    };
    assert_eq!(xid_only, ann_xid, "an XID alone finds the profile");
    assert_eq!(
        lookup(&app, "CRMID", "b1", None).await.1["person"]["name"]["firstName"],
        "Robert"
    );

    // Dataset precedence crm > loyalty: crm's values win, loyalty fills what crm lacks.
    let precedence = create_policy(
        &app,
        policy(
            "crm first",
            "pdg",
            json!({"type": "dataSetPrecedence", "order": [crm, loyalty]}),
            false,
        ),
    )
    .await;
    let precedence_id = precedence["id"].as_str().unwrap();
    let (_, ann) = lookup(&app, "CRMID", "a1", Some(precedence_id)).await;
    assert_eq!(ann["person"]["name"]["firstName"], "Ann");
    assert_eq!(ann["loyalty"]["tier"], "gold");

    // Dataset precedence listing loyalty only: crm fragments are not merged at all.
    let loyalty_only = create_policy(
        &app,
        policy(
            "loyalty only",
            "pdg",
            json!({"type": "dataSetPrecedence", "order": [loyalty]}),
            false,
        ),
    )
    .await;
    let (_, ann) = lookup(
        &app,
        "Email",
        "a@x",
        Some(loyalty_only["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(ann["person"]["name"]["firstName"], "Annie");
    assert!(ann.get("homeAddress").is_none(), "{ann}");

    // No identity graph: only fragments keyed by the identical identity merge. Ann's crm record
    // (primary CRMID a1) stands alone; Bob's two records share CRMID b1, so they still merge.
    let no_graph = create_policy(
        &app,
        policy(
            "no graph",
            "none",
            json!({"type": "timestampOrdered"}),
            false,
        ),
    )
    .await;
    let no_graph_id = no_graph["id"].as_str().unwrap();
    let (_, ann) = lookup(&app, "CRMID", "a1", Some(no_graph_id)).await;
    assert_eq!(ann["person"]["name"]["firstName"], "Ann");
    assert!(ann.get("loyalty").is_none(), "{ann}");
    let (_, bob) = lookup(&app, "CRMID", "b1", Some(no_graph_id)).await;
    assert_eq!(bob["person"]["name"]["firstName"], "Robert");
    assert_eq!(bob["homeAddress"]["countryCode"], "FR");
}

#[tokio::test]
async fn changing_the_default_policy_changes_what_a_lookup_returns() {
    let app = spawn_app().await;
    let Fixture { crm, loyalty } = ingest_fixture(&app).await;
    assert_eq!(
        lookup(&app, "CRMID", "a1", None).await.1["person"]["name"]["firstName"],
        "Annie"
    );
    let first = create_policy(
        &app,
        policy(
            "crm first",
            "pdg",
            json!({"type": "dataSetPrecedence", "order": [crm, loyalty]}),
            true,
        ),
    )
    .await;
    assert_eq!(
        lookup(&app, "CRMID", "a1", None).await.1["person"]["name"]["firstName"],
        "Ann"
    );

    // A new default clears the old one.
    let second = create_policy(
        &app,
        policy("newest", "pdg", json!({"type": "timestampOrdered"}), true),
    )
    .await;
    let old = json(
        app.request(
            Method::GET,
            &format!("{POLICIES}/{}", first["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(old["default"], false);
    assert_eq!(old["version"], 2);
    let defaults = json(
        app.request(Method::GET, &format!("{POLICIES}?default=true"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(defaults["children"].as_array().unwrap().len(), 1);
    assert_eq!(defaults["children"][0]["id"], second["id"]);
    assert_eq!(
        lookup(&app, "CRMID", "a1", None).await.1["person"]["name"]["firstName"],
        "Annie"
    );
}

#[tokio::test]
async fn policies_validate_patch_atomically_and_stay_in_their_tenant() {
    let app = spawn_app().await;
    let unknown_dataset = app
        .request(Method::POST, POLICIES)
        .json(&policy(
            "bad",
            "pdg",
            json!({"type": "dataSetPrecedence", "order": ["nope"]}),
            false,
        ))
        .send()
        .await
        .unwrap();
    let body = assert_envelope(unknown_dataset, 400).await;
    assert!(body["title"].as_str().unwrap().contains("nope"), "{body}");
    let bad_type = app
        .request(Method::POST, POLICIES)
        .json(&policy(
            "bad",
            "graphy",
            json!({"type": "timestampOrdered"}),
            false,
        ))
        .send()
        .await
        .unwrap();
    assert_envelope(bad_type, 400).await;

    let created = create_policy(
        &app,
        policy("edge", "pdg", json!({"type": "timestampOrdered"}), false),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["version"], 1);
    // Adobe's docs send one operation with a string boolean; both are accepted.
    let patched = app
        .request(Method::PATCH, &format!("{POLICIES}/{id}"))
        .json(&json!({"op": "add", "path": "/isActiveOnEdge", "value": "true"}))
        .send()
        .await
        .unwrap();
    let patched = json(patched).await;
    assert_eq!(patched["isActiveOnEdge"], true);
    assert_eq!(patched["version"], 2);
    // One bad operation: nothing changes.
    let atomic = app
        .request(Method::PATCH, &format!("{POLICIES}/{id}"))
        .json(&json!([{"op": "add", "path": "/name", "value": "renamed"}, {"op": "add", "path": "/version", "value": 9}]))
        .send()
        .await
        .unwrap();
    assert_envelope(atomic, 400).await;
    let unchanged = json(
        app.request(Method::GET, &format!("{POLICIES}/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(unchanged["name"], "edge");

    // A second edge policy and deleting the edge policy are refused.
    let mut second = policy("edge 2", "pdg", json!({"type": "timestampOrdered"}), false);
    second["isActiveOnEdge"] = json!(true);
    assert_envelope(
        app.request(Method::POST, POLICIES)
            .json(&second)
            .send()
            .await
            .unwrap(),
        409,
    )
    .await;
    assert_envelope(
        app.request(Method::DELETE, &format!("{POLICIES}/{id}"))
            .send()
            .await
            .unwrap(),
        409,
    )
    .await;

    // Another sandbox sees nothing.
    let other = app
        .as_a(Method::GET, &format!("{POLICIES}/{id}"), ORG_A, "dev")
        .send()
        .await
        .unwrap();
    assert_envelope(other, 404).await;
    let listed = json(
        app.as_a(Method::GET, POLICIES, ORG_A, "dev")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed["_page"]["totalCount"], 0);

    let bulk = app
        .request(Method::POST, &format!("{POLICIES}/bulk-get"))
        .json(&json!({"ids": [{"id": id}, {"id": "missing"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bulk.status(), 207);
    let bulk = json(bulk).await;
    assert_eq!(bulk["results"][id]["name"], "edge");
    assert_eq!(bulk["results"]["missing"]["error"]["status"], 404);
}

#[tokio::test]
async fn a_streamed_record_is_readable_right_after_the_200_and_deletes_are_durable() {
    let app = spawn_app().await;
    let crm = create_dataset(&app, "crm", PROFILE).await;
    let message = |crm_id: &str| {
        json!({"header": {"datasetId": crm, "imsOrgId": ORG_A, "schemaRef": {"id": PROFILE}},
               "body": {"xdmMeta": {"schemaRef": {"id": PROFILE}},
                        "xdmEntity": {"identityMap": {"CRMID": [{"id": crm_id, "primary": true}]}, "person": {"name": {"firstName": "Dee"}}}}})
    };
    let sent = app
        .request(Method::POST, "/collection/inlet-1?syncValidation=true")
        .json(&message("d1"))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    let sent = json(sent).await;
    assert_eq!(sent["syncValidation"]["status"], "pass");
    assert_eq!(
        lookup(&app, "CRMID", "d1", None).await.1["person"]["name"]["firstName"],
        "Dee"
    );

    let invalid = json!({"header": {"datasetId": crm}, "body": {"xdmEntity": {"person": {"name": {"firstName": "no id"}}}}});
    assert_envelope(
        app.request(Method::POST, "/collection/inlet-1?syncValidation=true")
            .json(&invalid)
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;

    let batch = app
        .request(Method::POST, "/collection/batch/inlet-1")
        .json(&json!({"messages": [message("e1"), invalid, message("e2")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), 207);
    let responses = json(batch).await["responses"].clone();
    assert!(responses[0]["xactionId"].is_string());
    assert_eq!(responses[1]["statusCode"], 400);
    assert!(responses[2]["xactionId"].is_string());
    lookup(&app, "CRMID", "e2", None).await;

    let delete = "/data/core/ups/access/entities?schema.name=_xdm.context.profile&entityId=d1&entityIdNS=CRMID";
    assert_eq!(
        app.request(Method::DELETE, delete)
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    let app = app.restart().await;
    let gone = app.request(Method::GET, "/data/core/ups/access/entities?schema.name=_xdm.context.profile&entityId=d1&entityIdNS=CRMID").send().await.unwrap();
    assert_envelope(gone, 404).await;
    assert_envelope(
        app.request(Method::DELETE, delete).send().await.unwrap(),
        404,
    )
    .await;
}

#[tokio::test]
async fn events_of_a_profile_page_by_cursor() {
    let app = spawn_app().await;
    let crm = create_dataset(&app, "crm", PROFILE).await;
    let web = create_dataset(
        &app,
        "web",
        "https://ns.adobe.com/xdm/context/experienceevent",
    )
    .await;
    let record = json!({"identityMap": {"CRMID": [{"id": "p1", "primary": true}], "ECID": [{"id": "12345678901234567890123456789012345678"}]}}).to_string();
    ingest_json_lines(&app, &crm, &[("p.json", record)]).await;
    let events: Vec<String> = (0..5)
        .map(|index| {
            json!({"_id": format!("ev{index}"), "timestamp": format!("2026-01-0{}T00:00:00Z", index + 1),
                   "eventType": "web.webpagedetails.pageViews", "identityMap": {"ECID": [{"id": "12345678901234567890123456789012345678", "primary": true}]}})
            .to_string()
        })
        .collect();
    let batch = ingest_json_lines(&app, &web, &[("e.json", events.join("\n"))]).await;
    assert_eq!(batch["status"], "success", "{batch}");

    let base = "/data/core/ups/access/entities?schema.name=_xdm.context.experienceevent&relatedSchema.name=_xdm.context.profile&relatedEntityId=p1&relatedEntityIdNS=CRMID";
    let first = json(
        app.request(Method::GET, &format!("{base}&limit=2&orderby=-timestamp"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let ids: Vec<&str> = first["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|child| child["entityId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ev4", "ev3"]);
    assert_eq!(first["_page"]["next"], "ev2");
    let second = json(
        app.request(
            Method::GET,
            &format!("{base}&limit=2&orderby=-timestamp&start=ev2"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let ids: Vec<&str> = second["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|child| child["entityId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ev2", "ev1"]);
    let window = json(
        app.request(
            Method::GET,
            &format!("{base}&startTime=1767312000000&endTime=1767484800000"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let ids: Vec<&str> = window["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|child| child["entityId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["ev1", "ev2"],
        "startTime inclusive, endTime exclusive"
    );
    assert_eq!(window["_links"]["next"]["href"], "");
}

#[tokio::test]
async fn bulk_lookup_returns_each_profile_once_and_unknown_identities_empty() {
    let app = spawn_app().await;
    ingest_fixture(&app).await;
    let (ann_xid, _) = lookup(&app, "CRMID", "a1", None).await;
    let body = json!({"schema": {"name": "_xdm.context.profile"}, "fields": ["person.name"],
        "identities": [{"entityId": "a1", "entityIdNS": {"code": "CRMID"}}, {"entityId": "111", "entityIdNS": {"code": "Phone"}},
                       {"entityId": "c1", "entityIdNS": {"code": "CRMID"}}, {"entityId": "nobody", "entityIdNS": {"code": "CRMID"}}]});
    let found = json(
        app.request(Method::POST, "/data/core/ups/access/entities")
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let found = found.as_object().unwrap();
    assert_eq!(
        found.len(),
        3,
        "Ann (two identities), Cy and the unknown one: {found:?}"
    );
    assert_eq!(
        found[&ann_xid]["entity"]["person"]["name"]["firstName"],
        "Annie"
    );
    assert!(
        found[&ann_xid]["entity"].get("homeAddress").is_none(),
        "fields projection applies"
    );
    let unknown = found
        .values()
        .find(|entry| entry["entity"] == json!({}))
        .expect("the unknown identity is listed");
    assert_eq!(unknown["lastModifiedAt"], "1970-01-01T00:00:00Z");
    let events = json!({"schema": {"name": "_xdm.context.experienceevent"}, "identities": [{"entityId": "x"}]});
    assert_envelope(
        app.request(Method::POST, "/data/core/ups/access/entities")
            .json(&events)
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
}
