//! The OpenAPI 3.1 document generated from the handlers (`/openapi.json`) and the vendored Swagger UI
//! (`/docs`); nothing is downloaded at build or run time.

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::api::{
    AppState, access, catalog, collection, exports, health, import, merge_policies, preview,
    schedules, segment_jobs, segments,
};

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
        collection::collection_send,
        collection::collection_send_batch,
        merge_policies::merge_policies_create,
        merge_policies::merge_policies_get,
        merge_policies::merge_policies_list,
        merge_policies::merge_policies_replace,
        merge_policies::merge_policies_patch,
        merge_policies::merge_policies_delete,
        merge_policies::merge_policies_bulk_get,
        access::entities_get,
        access::entities_delete,
        access::entities_bulk_get,
        segments::definitions_create,
        segments::definitions_get,
        segments::definitions_replace,
        segments::definitions_delete,
        segments::definitions_list,
        segments::definitions_bulk_get,
        segments::segment_conversion,
        preview::previews_create,
        preview::previews_get,
        preview::previews_delete,
        preview::estimates_get,
        preview::sample_status,
        preview::sample_refresh,
        segment_jobs::segment_jobs_create,
        segment_jobs::segment_jobs_get,
        segment_jobs::segment_jobs_list,
        segment_jobs::segment_jobs_bulk_get,
        segment_jobs::segment_jobs_cancel,
        schedules::schedules_create,
        schedules::schedules_get,
        schedules::schedules_list,
        schedules::schedules_patch,
        schedules::schedules_delete,
        exports::export_jobs_create,
        exports::export_jobs_get,
        exports::export_jobs_list,
        exports::export_jobs_delete,
        exports::batch_files_list,
        exports::files_get,
    ),
    components(schemas(crate::catalog::datasets::NewDataset, crate::catalog::datasets::Dataset, crate::catalog::datasets::SchemaRef, crate::catalog::batches::Batch, import::CreateBatchRequest, import::RequestedFormat, collection::MessageBatch, crate::profile::policies::MergePolicySpec, crate::profile::policies::MergePolicyResource, merge_policies::BulkGetRequest, crate::segment::definitions::DefinitionRequest, crate::segment::definitions::SegmentDefinition, segments::DefinitionBulkGet, segments::ConversionRequest, preview::CreatePreview, crate::schedule::schedules::NewSchedule, crate::export::jobs::NewExportJob)),
    modifiers(&SecuritySchemes),
    security(("bearer" = [], "apiKey" = [], "orgId" = [])),
    tags(
        (name = "operations", description = "Health and readiness"),
        (name = "catalog", description = "Catalog datasets and batches"),
        (name = "import", description = "Batch ingestion"),
        (name = "streaming", description = "Streaming ingestion"),
        (name = "merge policies", description = "Merge policies"),
        (name = "profile access", description = "Merged profiles and their events"),
        (name = "segment definitions", description = "Segment definitions and PQL conversion"),
        (name = "previews", description = "Previews, estimates and the sample"),
        (name = "segment jobs", description = "Batch evaluation of segment definitions"),
        (name = "schedules", description = "Scheduled evaluation (Quartz cron)"),
        (name = "exports", description = "Export jobs to Parquet datasets"),
        (name = "data access", description = "Reading exported batches"),
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
