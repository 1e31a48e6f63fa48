//! The PQL test vectors (`tests/data/pql-vectors.json`, copied from the spec) for unit tests that
//! check another evaluation path (plans, columns) against the row evaluator.

use serde_json::Value;

use super::{CompiledQuery, PqlFormat};

/// The vectors file: `now`, `fixtures` (profile and events by name) and `vectors`.
pub fn vectors() -> Value {
    serde_json::from_str(include_str!("../../tests/data/pql-vectors.json")).expect("vectors")
}

/// The vectors' evaluation time.
pub fn now(vectors: &Value) -> chrono::DateTime<chrono::Utc> {
    vectors["now"].as_str().expect("now").parse().expect("now")
}

/// Every vector whose text expression compiles, as (expression, fixture name, query); vectors
/// that expect a parse or type error are left out.
pub fn compiled(vectors: &Value) -> Vec<(&str, &str, CompiledQuery)> {
    vectors["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .filter_map(|vector| {
            let source = vector["expression"].as_str()?;
            let query = super::parse(source, PqlFormat::Text)
                .and_then(|expr| super::compile(&expr))
                .ok()?;
            Some((source, vector["fixture"].as_str()?, query))
        })
        .collect()
}
