//! Operational endpoints: the OpenAPI document and Swagger UI.

use reqwest::Method;

use crate::helpers::{json, spawn_app};

#[tokio::test]
async fn openapi_document_is_served_and_lists_the_routes() {
    let app = spawn_app().await;
    let document = json(
        app.anonymous(Method::GET, "/openapi.json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    assert!(document["paths"]["/data/foundation/catalog/dataSets"]["post"].is_object());
    assert!(document["paths"]["/healthz"]["get"].is_object());

    let ui = app.anonymous(Method::GET, "/docs/").send().await.unwrap();
    assert_eq!(ui.status(), 200);
    assert!(
        ui.text().await.unwrap().contains("swagger"),
        "the vendored UI is served"
    );
}

/// Validates the served document with an independent validator (Python's openapi-spec-validator,
/// installed by `scripts/test.sh`). Without the tool this test is skipped, unless
/// `REQUIRE_PY_TEST_TOOLS` is set (as `scripts/test.sh` and CI do), where a missing tool fails.
#[tokio::test]
async fn openapi_document_passes_an_independent_validator() {
    let python_has_validator = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .status()
        .is_ok_and(|status| status.success());
    if !python_has_validator {
        assert!(
            std::env::var_os("REQUIRE_PY_TEST_TOOLS").is_none(),
            "openapi-spec-validator is required: run scripts/test.sh"
        );
        eprintln!("skipped: openapi-spec-validator is not installed (scripts/test.sh installs it)");
        return;
    }
    let app = spawn_app().await;
    let document = app
        .anonymous(Method::GET, "/openapi.json")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, document).unwrap();
    let output = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "validator rejected the document:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
