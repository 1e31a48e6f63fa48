//! Fuzzes the PQL front end: `pql/text` and `pql/json` parsing and checking must never panic,
//! whatever parses must compile, evaluate, and survive a text → json → text round trip.
//!
//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run pql_parse` from the repository root.

#![no_main]

use libfuzzer_sys::fuzz_target;

// The module has no dependencies on the rest of the crate, so it is included directly.
#[allow(dead_code, unused_imports)]
#[path = "../../src/pql/mod.rs"]
mod pql;

use pql::{JsonProfile, PqlFormat};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let _ = pql::parse(src, PqlFormat::Json);
    let Ok(expr) = pql::parse(src, PqlFormat::Text) else {
        return;
    };
    let query = pql::compile(&expr).expect("a checked expression compiles");
    let json = pql::to_json(&expr);
    let back = pql::parse(&json.to_string(), PqlFormat::Json).expect("own pql/json parses");
    assert_eq!(pql::to_json(&back), json, "json fixpoint");
    let text = pql::to_text(&back);
    let again = pql::parse(&text, PqlFormat::Text).expect("own pql/text parses");
    assert_eq!(
        pql::to_json(&again),
        json,
        "text round trip: {src} -> {text}"
    );
    let profile = serde_json::json!({"a": 1, "s": "x", "arr": [1, {"b": 2}], "segmentMembership": {"ups": {"s": {"status": "realized"}}}});
    let events =
        [serde_json::json!({"timestamp": "2024-06-15T00:00:00Z", "eventType": "x", "a": [1, 2]})];
    let now = chrono::DateTime::from_timestamp_millis(1_718_452_800_000).expect("valid instant");
    let _ = query.evaluate(&JsonProfile::new(&profile, &events), now);
    let _ = pql::eligibility(&expr);
});
