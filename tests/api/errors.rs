//! The error envelope for client mistakes that never reach a handler's logic.

use reqwest::Method;

use crate::helpers::{assert_envelope, spawn_app};

const DATASETS: &str = "/data/foundation/catalog/dataSets";

#[tokio::test]
async fn malformed_json_answers_400_with_the_envelope() {
    let app = spawn_app().await;
    let response = app
        .request(Method::POST, DATASETS)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_envelope(response, 400).await;
}

#[tokio::test]
async fn wrong_field_types_and_missing_content_type_answer_400() {
    let app = spawn_app().await;
    let wrong_type = app
        .request(Method::POST, DATASETS)
        .json(&serde_json::json!({"name": 5, "schemaRef": {"id": "x"}}))
        .send()
        .await
        .unwrap();
    let body = assert_envelope(wrong_type, 400).await;
    assert!(body["title"].as_str().unwrap().contains("name"), "{body}");

    let no_content_type = app
        .request(Method::POST, DATASETS)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_envelope(no_content_type, 400).await;
}

#[tokio::test]
async fn unknown_route_and_wrong_method_answer_with_the_envelope() {
    let app = spawn_app().await;
    let unknown = app
        .request(Method::GET, "/data/core/ups/no/such/route")
        .send()
        .await
        .unwrap();
    assert_envelope(unknown, 404).await;

    let wrong_method = app.request(Method::DELETE, DATASETS).send().await.unwrap();
    assert_envelope(wrong_method, 405).await;
}

#[tokio::test]
async fn unknown_query_parameters_and_bad_values_answer_400() {
    let app = spawn_app().await;
    let unknown = app
        .request(Method::GET, &format!("{DATASETS}?limt=5"))
        .send()
        .await
        .unwrap();
    assert_envelope(unknown, 400).await;
    let not_a_number = app
        .request(Method::GET, &format!("{DATASETS}?limit=many"))
        .send()
        .await
        .unwrap();
    assert_envelope(not_a_number, 400).await;
    let too_large = app
        .request(Method::GET, &format!("{DATASETS}?limit=1000"))
        .send()
        .await
        .unwrap();
    assert_envelope(too_large, 400).await;
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app().await;
    let echoed = app
        .request(Method::GET, "/nowhere")
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-42");
    let body = assert_envelope(echoed, 404).await;
    assert_eq!(body["requestId"], "trace-me-42");

    let generated = app.anonymous(Method::GET, "/healthz").send().await.unwrap();
    assert!(!generated.headers()["x-request-id"].is_empty());
}
