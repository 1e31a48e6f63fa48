//! Segment definitions and PQL conversion through HTTP.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{ORG_A, TestApp, assert_envelope, assert_not_found, json, spawn_app};

const DEFINITIONS: &str = "/data/core/ups/segment/definitions";

fn definition(name: &str, pql: &str) -> Value {
    json!({"name": name, "expression": {"type": "PQL", "format": "pql/text", "value": pql},
           "schema": {"name": "_xdm.context.profile"}})
}

async fn create(app: &TestApp, body: &Value) -> Value {
    let response = app
        .request(Method::POST, DEFINITIONS)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "create answers 200 as Adobe does");
    assert!(response.headers().contains_key("x-location"));
    json(response).await
}

#[tokio::test]
async fn definitions_are_created_read_listed_updated_and_deleted() {
    let app = spawn_app().await;
    let created = create(
        &app,
        &definition("US people", r#"homeAddress.countryCode = "US""#),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["version"], 1);
    assert_eq!(created["mergePolicyId"], "ups-default");
    assert_eq!(
        created["evaluationInfo"]["batch"]["enabled"], true,
        "no evaluationInfo means batch"
    );
    assert_eq!(created["dataGovernancePolicy"]["excludeOptOut"], true);
    let creation_ms = created["creationTime"].as_i64().unwrap();
    assert!(creation_ms > 1_600_000_000_000);
    assert_eq!(
        created["updateEpoch"].as_i64().unwrap(),
        creation_ms / 1000,
        "updateEpoch is in seconds"
    );

    let fetched = json(
        app.request(Method::GET, &format!("{DEFINITIONS}/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(fetched, created);

    // PATCH overwrites the whole object and bumps the version; echoed output fields are ignored.
    let mut replacement = definition(
        "US adults",
        r#"homeAddress.countryCode = "US" and person.birthDate < date(2008, 1, 1)"#,
    );
    replacement["id"] = json!("ignored");
    replacement["creationTime"] = json!(0);
    let updated = json(
        app.request(Method::PATCH, &format!("{DEFINITIONS}/{id}"))
            .json(&replacement)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["name"], "US adults");
    assert_eq!(updated["creationTime"], creation_ms);
    assert_eq!(updated["id"], id.as_str());

    create(&app, &definition("Gold", r#"loyalty.tier = "gold""#)).await;
    let listed = json(
        app.request(Method::GET, &format!("{DEFINITIONS}?limit=1&sort=name:asc"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed["page"]["totalCount"], 2);
    assert_eq!(listed["page"]["totalPages"], 2);
    assert_eq!(listed["segments"][0]["name"], "Gold");
    let second_page = json(
        app.request(
            Method::GET,
            &format!("{DEFINITIONS}?limit=1&page=1&sort=name:asc"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(second_page["segments"][0]["name"], "US adults");

    let bulk = app
        .request(Method::POST, &format!("{DEFINITIONS}/bulk-get"))
        .json(&json!({"ids": [{"id": id}, {"id": "nope"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bulk.status(), 207);
    let bulk = json(bulk).await;
    assert_eq!(bulk["results"].as_object().unwrap().len(), 1);
    let none = app
        .request(Method::POST, &format!("{DEFINITIONS}/bulk-get"))
        .json(&json!({"ids": [{"id": "nope"}]}))
        .send()
        .await
        .unwrap();
    assert_envelope(none, 404).await;

    assert_eq!(
        app.request(Method::DELETE, &format!("{DEFINITIONS}/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_not_found(&app, &format!("{DEFINITIONS}/{id}")).await;
}

#[tokio::test]
async fn bad_expressions_answer_400_with_positions_and_a_suggestion() {
    let app = spawn_app().await;
    let response = app
        .request(Method::POST, DEFINITIONS)
        .json(&definition(
            "typo",
            "person.name.firstName.startWith(\"A\")",
        ))
        .send()
        .await
        .unwrap();
    let body = assert_envelope(response, 400).await;
    let entry = &body["errors"]["400"][0];
    assert_eq!(entry["line"], 1);
    assert_eq!(entry["column"], 23, "{entry}");
    assert!(
        entry["suggestion"].as_str().unwrap().contains("startsWith"),
        "{entry}"
    );

    let type_error = app
        .request(Method::POST, DEFINITIONS)
        .json(&definition("types", "\"abc\" > 3"))
        .send()
        .await
        .unwrap();
    assert_envelope(type_error, 400).await;
    let mut wrong_schema = definition("schema", "true");
    wrong_schema["schema"] = json!({"name": "_xdm.context.experienceevent"});
    assert_envelope(
        app.request(Method::POST, DEFINITIONS)
            .json(&wrong_schema)
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    let mut unknown_policy = definition("policy", "true");
    unknown_policy["mergePolicyId"] = json!("nope");
    assert_envelope(
        app.request(Method::POST, DEFINITIONS)
            .json(&unknown_policy)
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
}

#[tokio::test]
async fn names_are_unique_per_sandbox_only() {
    let app = spawn_app().await;
    create(&app, &definition("same", "true")).await;
    let duplicate = app
        .request(Method::POST, DEFINITIONS)
        .json(&definition("same", "false"))
        .send()
        .await
        .unwrap();
    assert_envelope(duplicate, 422).await;
    let other_sandbox = app
        .as_a(Method::POST, DEFINITIONS, ORG_A, "dev")
        .json(&definition("same", "true"))
        .send()
        .await
        .unwrap();
    assert_eq!(other_sandbox.status(), 200);
    let listed = json(
        app.as_a(Method::GET, DEFINITIONS, ORG_A, "dev")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed["page"]["totalCount"], 1);
}

#[tokio::test]
async fn in_segment_references_must_exist_cannot_cycle_and_block_deletes() {
    let app = spawn_app().await;
    let base = create(
        &app,
        &definition("base", r#"homeAddress.countryCode = "US""#),
    )
    .await;
    let base_id = base["id"].as_str().unwrap();
    let dependent = create(
        &app,
        &definition("dependent", &format!(r#"inSegment("{base_id}")"#)),
    )
    .await;
    let dependent_id = dependent["id"].as_str().unwrap();
    assert_eq!(dependent["referencedSegments"], json!([base_id]));

    let missing = app
        .request(Method::POST, DEFINITIONS)
        .json(&definition("missing", r#"inSegment("nope")"#))
        .send()
        .await
        .unwrap();
    assert_envelope(missing, 400).await;
    // base -> dependent -> base would be a cycle.
    let cycle = app
        .request(Method::PATCH, &format!("{DEFINITIONS}/{base_id}"))
        .json(&definition(
            "base",
            &format!(r#"inSegment("{dependent_id}")"#),
        ))
        .send()
        .await
        .unwrap();
    let body = assert_envelope(cycle, 400).await;
    assert!(body["title"].as_str().unwrap().contains("cycle"), "{body}");
    assert_envelope(
        app.request(Method::DELETE, &format!("{DEFINITIONS}/{base_id}"))
            .send()
            .await
            .unwrap(),
        409,
    )
    .await;
    assert_eq!(
        app.request(Method::DELETE, &format!("{DEFINITIONS}/{dependent_id}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.request(Method::DELETE, &format!("{DEFINITIONS}/{base_id}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_policy_in_use_cannot_be_deleted() {
    let app = spawn_app().await;
    let policy = json(
        app.request(Method::POST, "/data/core/ups/config/mergePolicies")
            .json(&json!({"name": "p", "schema": {"name": "_xdm.context.profile"}, "identityGraph": {"type": "pdg"},
                          "attributeMerge": {"type": "timestampOrdered"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let policy_id = policy["id"].as_str().unwrap();
    let mut body = definition("uses p", "true");
    body["mergePolicyId"] = json!(policy_id);
    let used = create(&app, &body).await;
    let refused = app
        .request(
            Method::DELETE,
            &format!("/data/core/ups/config/mergePolicies/{policy_id}"),
        )
        .send()
        .await
        .unwrap();
    let envelope = assert_envelope(refused, 409).await;
    assert!(
        envelope["title"]
            .as_str()
            .unwrap()
            .contains(used["id"].as_str().unwrap()),
        "{envelope}"
    );
}

#[tokio::test]
async fn conversion_round_trips_text_and_json() {
    let app = spawn_app().await;
    let text = r#"person.name.firstName.startsWith("A") and homeAddress.countryCode = "US""#;
    let to_json = app
        .request(Method::POST, "/data/core/ups/segment/conversion")
        .json(&json!({"name": "n", "description": "d", "ttlInDays": 60, "schema": {"name": "_xdm.context.profile"},
                      "expression": {"type": "PQL", "format": "pql/text", "value": text}}))
        .send()
        .await
        .unwrap();
    assert_eq!(to_json.status(), 200);
    let converted = json(to_json).await;
    assert_eq!(converted["expression"]["format"], "pql/json");
    assert_eq!(converted["ttlInDays"], 60);
    assert_eq!(converted["imsOrgId"], ORG_A);
    let document: Value =
        serde_json::from_str(converted["expression"]["value"].as_str().unwrap()).unwrap();
    assert!(document["nodeType"].is_string(), "{document}");

    let back = json(
        app.request(Method::POST, "/data/core/ups/segment/conversion")
            .json(&json!({"expression": converted["expression"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(back["expression"]["format"], "pql/text");
    // The text form need not be byte-identical, but it must mean the same: converting again gives
    // the same pql/json document.
    let again = json(
        app.request(Method::POST, "/data/core/ups/segment/conversion")
            .json(&json!({"expression": back["expression"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        again["expression"]["value"],
        converted["expression"]["value"]
    );

    let invalid = app
        .request(Method::POST, "/data/core/ups/segment/conversion")
        .json(&json!({"expression": {"type": "PQL", "format": "pql/text", "value": "a = "}}))
        .send()
        .await
        .unwrap();
    assert_envelope(invalid, 400).await;
}
