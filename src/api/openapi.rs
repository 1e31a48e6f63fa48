//! The OpenAPI 3.1 document generated from the handlers (`/openapi.json`) and the vendored Swagger UI
//! (`/docs`); nothing is downloaded at build or run time.

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::api::{AppState, catalog, health, import};

/// The service's API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "segmentd", description = "Audience segmentation service compatible with Adobe Experience Platform's Segmentation Service API"),
    paths(
        health::healthz,
        health::readyz,
        catalog::datasets_create,
        catalog::datasets_get,
        catalog::datasets_list,
        catalog::batches_get,
        import::batches_create,
        import::files_upload,
        import::batches_action,
    ),
    components(schemas(crate::catalog::datasets::NewDataset, crate::catalog::datasets::Dataset, crate::catalog::datasets::SchemaRef, crate::catalog::batches::Batch, import::CreateBatchRequest, import::RequestedFormat)),
    modifiers(&SecuritySchemes),
    security(("bearer" = [], "apiKey" = [], "orgId" = [])),
    tags(
        (name = "operations", description = "Health and readiness"),
        (name = "catalog", description = "Catalog datasets and batches"),
        (name = "import", description = "Batch ingestion"),
    )
)]
pub struct ApiDoc;

/// Adds the three credentials every API call presents.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
        components.add_security_scheme(
            "orgId",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-gw-ims-org-id"))),
        );
    }
}

/// Routes serving the document and the UI (unauthenticated, like the health probes).
pub fn router() -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
}
