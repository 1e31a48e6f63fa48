//! Streaming ingestion messages (`ingest-api.md` §5.2–5.3): the `header` / `body.xdmEntity` envelope.
//!
//! segmentd validates every streamed record before storing it and stores it durably before answering,
//! so a 200 means the record is on disk. Adobe answers 200 to an invalid record without
//! `syncValidation` and drops it into a failed batch later; segmentd has no such data lake, so it
//! rejects an invalid record at once in both modes (400), which loses nothing silently.

use serde_json::Value;

use crate::catalog::datasets::Dataset;
use crate::ingest::batch::record_kind;
use crate::ingest::validate::validate_row;
use crate::store::profiles::RecordKind;

/// The parts of a streaming message segmentd needs.
#[derive(Debug, Clone)]
pub struct StreamMessage {
    /// The target dataset (`header.datasetId`).
    pub dataset_id: String,
    /// The record or event (`body.xdmEntity`).
    pub entity: Value,
}

/// Why a streaming message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The envelope is missing a required member (Adobe: "Message has unknown xdm format").
    #[error("Message has unknown xdm format: {0}")]
    Format(String),
    /// `header.imsOrgId` names another organization.
    #[error("Message has an absent or wrong ims org in the header")]
    WrongOrg,
    /// The entity failed validation.
    #[error("Message is invalid: {0}")]
    Invalid(String),
}

/// Reads the envelope of one message; `org_id` is the caller's organization. An absent
/// `header.imsOrgId` is accepted (DCS fills it in), a different one is refused.
pub fn parse_message(message: &Value, org_id: &str) -> Result<StreamMessage, MessageError> {
    let header = message
        .get("header")
        .ok_or_else(|| MessageError::Format("header is missing".into()))?;
    let dataset_id = header
        .get("datasetId")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| MessageError::Format("header.datasetId is missing".into()))?;
    match header.get("imsOrgId") {
        None => {}
        Some(Value::String(org)) if org == org_id => {}
        Some(_) => return Err(MessageError::WrongOrg),
    }
    let entity = message
        .get("body")
        .and_then(|body| body.get("xdmEntity"))
        .filter(|entity| entity.is_object())
        .ok_or_else(|| MessageError::Format("body.xdmEntity is missing or not an object".into()))?;
    Ok(StreamMessage {
        dataset_id: dataset_id.to_owned(),
        entity: entity.clone(),
    })
}

/// Validates a message's entity against its dataset's class; returns the kind to store it as.
pub fn validate_entity(dataset: &Dataset, entity: &Value) -> Result<RecordKind, MessageError> {
    let kind = record_kind(dataset);
    let size = serde_json::to_vec(entity)
        .map(|bytes| bytes.len())
        .unwrap_or(usize::MAX);
    validate_row(kind, entity, size).map_err(MessageError::Invalid)?;
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelope_members_are_required_and_the_org_must_match() {
        let good = json!({"header": {"datasetId": "d", "imsOrgId": "o"}, "body": {"xdmEntity": {"_id": "x"}}});
        assert_eq!(parse_message(&good, "o").unwrap().dataset_id, "d");
        assert_eq!(
            parse_message(&good, "other").unwrap_err(),
            MessageError::WrongOrg
        );
        let no_org = json!({"header": {"datasetId": "d"}, "body": {"xdmEntity": {}}});
        assert!(parse_message(&no_org, "o").is_ok());
        for bad in [
            json!({}),
            json!({"header": {}}),
            json!({"header": {"datasetId": "d"}, "body": {}}),
        ] {
            assert!(
                matches!(parse_message(&bad, "o"), Err(MessageError::Format(_))),
                "{bad}"
            );
        }
    }
}
