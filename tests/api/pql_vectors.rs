//! PQL conformance: every vector of `tests/data/pql-vectors.json` (copied from the spec), plus
//! text → json → text round trips of the same expressions and the `segmentd pql` CLI.

use std::process::Command;

use segmentd::pql::{self, JsonProfile, PqlFormat};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pql-vectors.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("vectors file"))
        .expect("vectors JSON")
}

fn now(v: &Value) -> chrono::DateTime<chrono::Utc> {
    v["now"]
        .as_str()
        .expect("now")
        .parse()
        .expect("RFC 3339 now")
}

#[test]
fn every_vector_evaluates_to_its_expected_result() {
    let v = vectors();
    let now = now(&v);
    let mut failures = Vec::new();
    let list = v["vectors"].as_array().expect("vectors");
    assert!(
        list.len() >= 100,
        "vector file looks truncated: {} vectors",
        list.len()
    );
    for vector in list {
        let id = &vector["id"];
        let expr_text = vector["expression"].as_str().expect("expression");
        let fixture = &v["fixtures"][vector["fixture"].as_str().expect("fixture")];
        let events = fixture["events"].as_array().expect("events");
        let view = JsonProfile::new(&fixture["profile"], events);
        let expected = &vector["expected"];
        let outcome = pql::parse(expr_text, PqlFormat::Text)
            .map_err(|e| e.render(expr_text))
            .and_then(|e| pql::compile(&e).map_err(|e| e.to_string()))
            .and_then(|q| {
                let value = q.evaluate(&view, now).map_err(|e| e.to_string())?;
                // `matches` and `evaluate` must agree for boolean vectors.
                if expected.is_boolean()
                    && q.matches(&view, now) != expected.as_bool().unwrap_or(false)
                {
                    return Err(format!("matches() disagrees with expected {expected}"));
                }
                Ok(value)
            });
        match outcome {
            Ok(got) if &got == expected => {}
            Ok(got) => failures.push(format!(
                "#{id} `{expr_text}`: expected {expected}, got {got}"
            )),
            Err(e) => failures.push(format!("#{id} `{expr_text}`: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} vector(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_vector_round_trips_through_pql_json() {
    let v = vectors();
    let now = now(&v);
    for vector in v["vectors"].as_array().expect("vectors") {
        let text = vector["expression"].as_str().expect("expression");
        let expr = pql::parse(text, PqlFormat::Text).expect("parses");
        let json = pql::to_json(&expr);
        let back = pql::parse(&json.to_string(), PqlFormat::Json)
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(pql::to_json(&back), json, "json fixpoint for {text}");
        let rendered = pql::to_text(&back);
        let reparsed = pql::parse(&rendered, PqlFormat::Text)
            .unwrap_or_else(|e| panic!("{rendered}: {}", e.render(&rendered)));
        assert_eq!(
            pql::to_json(&reparsed),
            json,
            "text of {text} is {rendered}"
        );
        // The converted expression evaluates to the same result.
        let fixture = &v["fixtures"][vector["fixture"].as_str().expect("fixture")];
        let view = JsonProfile::new(
            &fixture["profile"],
            fixture["events"].as_array().expect("events"),
        );
        let got = pql::compile(&reparsed)
            .expect("compiles")
            .evaluate(&view, now)
            .expect("evaluates");
        assert_eq!(&got, &vector["expected"], "converted form of {text}");
    }
}

#[test]
fn documented_json_example_parses_to_the_documented_text() {
    let doc = r#"{"nodeType":"fnApply","fnName":"=","params":[{"nodeType":"fieldLookup","fieldName":"country","object":{"nodeType":"fieldLookup","fieldName":"workAddress","object":{"nodeType":"parameterReference","position":1}}},{"nodeType":"literal","literalType":"String","value":"US"}]}"#;
    let expr = pql::parse(doc, PqlFormat::Json).expect("documented example");
    assert_eq!(pql::to_text(&expr), r#"workAddress.country = "US""#);
    let back: Value = serde_json::from_str(doc).expect("json");
    assert_eq!(
        pql::to_json(&pql::parse(r#"workAddress.country = "US""#, PqlFormat::Text).expect("text")),
        back
    );
}

fn segmentd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_segmentd"))
        .args(args)
        .output()
        .expect("runs segmentd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_check_reports_ok_or_a_caret_under_the_error() {
    let (code, out, _) = segmentd(&["pql", "check", r#"person.name.startsWith("J")"#]);
    assert_eq!((code, out.trim()), (0, "ok"));
    let (code, out, err) = segmentd(&["pql", "check", r#"person.name.startWith("J")"#]);
    assert_eq!(code, 1);
    let all = format!("{out}{err}");
    assert!(all.contains("person.name.startWith(\"J\")"), "{all}");
    assert!(all.contains("            ^^^^^^^^^"), "{all}");
    assert!(all.contains("did you mean `startsWith`?"), "{all}");
}

#[test]
fn cli_eval_prints_the_result_as_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = dir.path().join("p.json");
    let events = dir.path().join("e.json");
    std::fs::write(&profile, r#"{"person": {"age": 38}}"#).expect("write");
    std::fs::write(
        &events,
        r#"[{"timestamp": "2024-06-15T09:00:00Z"}, {"timestamp": "2024-06-01T09:00:00Z"}]"#,
    )
    .expect("write");
    let p = profile.to_str().expect("utf-8");
    let e = events.to_str().expect("utf-8");
    let (code, out, _) = segmentd(&[
        "pql",
        "eval",
        "--profile",
        p,
        "--events",
        e,
        "--now",
        "2024-06-15T12:00:00Z",
        "xEvent[timestamp occurs today].count()",
    ]);
    assert_eq!((code, out.trim()), (0, "1"));
    let (code, out, _) = segmentd(&["pql", "eval", "--profile", p, "person.age % 5 = 3"]);
    assert_eq!((code, out.trim()), (0, "true"));
    let (code, _, err) = segmentd(&["pql", "eval", "--profile", e, "person.age"]);
    assert_eq!(code, 1, "an events array is not a profile object: {err}");
    let (code, _, _) = segmentd(&["pql", "eval", "--profile", p, "person.age >"]);
    assert_eq!(code, 1);
}

#[test]
fn cli_convert_goes_both_ways() {
    let (code, out, _) = segmentd(&[
        "pql",
        "convert",
        "--to",
        "json",
        r#"workAddress.country = "US""#,
    ]);
    assert_eq!(code, 0);
    let json: Value = serde_json::from_str(&out).expect("json output");
    assert_eq!(json["fnName"], "=");
    let (code, text, _) = segmentd(&["pql", "convert", "--to", "text", out.trim()]);
    assert_eq!((code, text.trim()), (0, r#"workAddress.country = "US""#));
}
