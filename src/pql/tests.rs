//! Unit tests: one per error class, parser structure, evaluation corner cases, and property
//! tests (the parser never panics; text → json → text round-trips).

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn errors(src: &str) -> Vec<PqlError> {
    parse(src, PqlFormat::Text).expect_err(src).0
}

fn first(src: &str) -> PqlError {
    errors(src).remove(0)
}

fn now() -> DateTime<Utc> {
    "2024-06-15T12:00:00Z".parse().expect("instant")
}

fn eval_on(src: &str, profile: serde_json::Value, events: serde_json::Value) -> serde_json::Value {
    let q = compile(&parse(src, PqlFormat::Text).unwrap_or_else(|e| panic!("{}", e.render(src))))
        .expect("compiles");
    let events = events.as_array().cloned().unwrap_or_default();
    q.evaluate(&JsonProfile::new(&profile, &events), now())
        .expect("evaluates")
}

fn eval(src: &str) -> serde_json::Value {
    eval_on(
        src,
        json!({"a": 1, "s": "Hello", "arr": [3, 1, 2], "o": {"k": "v"}}),
        json!([]),
    )
}

// ---- error classes -------------------------------------------------------------------------

#[test]
fn error_unexpected_token_has_position_and_expectation() {
    let e = first("a = = 1");
    assert_eq!(e.code, "unexpected_token");
    assert_eq!((e.line, e.column, e.span), (1, 5, Span::new(4, 5)));
    assert_eq!(e.expected.as_deref(), Some("an expression"));
}

#[test]
fn error_unexpected_end() {
    let e = first("a >");
    assert_eq!(e.code, "unexpected_end");
    assert_eq!(e.span, Span::new(3, 3));
}

#[test]
fn error_trailing_input_suggests_the_operator() {
    let e = first("a = 1 adn b = 2");
    assert_eq!(e.code, "unexpected_token");
    assert_eq!(e.suggestion.as_deref(), Some("and"));
}

#[test]
fn error_lexical_classes() {
    assert_eq!(first("a = #").code, "unexpected_character");
    assert_eq!(first("a = \"abc").code, "unterminated_string");
    assert_eq!(first("a = \"\\u12\"").code, "invalid_escape");
    assert_eq!(first("a = 99999999999999999999").code, "invalid_number");
    assert_eq!(first("a = 1e999").code, "invalid_number");
    assert_eq!(first("$0.a = 1").code, "invalid_parameter");
    assert_eq!(first("`abc = 1").code, "unterminated_name");
}

#[test]
fn error_line_and_column_on_later_lines() {
    let e = first("a = 1 and\n  b = \"x\" and\n  c.startWith(\"y\")");
    assert_eq!((e.line, e.column), (3, 5));
    assert_eq!(e.code, "unknown_function");
}

#[test]
fn error_deep_nesting_is_an_error_not_a_stack_overflow() {
    let src = format!("{}a{}", "(".repeat(10_000), ")".repeat(10_000));
    assert_eq!(first(&src).code, "too_deep");
    let negations = format!("{}true", "not ".repeat(10_000));
    assert_eq!(first(&negations).code, "too_deep");
    let chain = format!("a{}", ".b".repeat(10_000));
    assert_eq!(first(&chain).code, "too_deep");
    let sum = format!("1{}", " + 1".repeat(10_000));
    assert_eq!(first(&sum).code, "too_deep");
    // Accepted text always fits pql/json's nesting limit.
    let negs = format!("a - {}b", "- ".repeat(70));
    assert_eq!(first(&negs).code, "too_deep");
    let negs = format!("a - {}b", "- ".repeat(40));
    let e = parse(&negs, PqlFormat::Text).expect("40 negations are fine");
    assert!(parse(&to_json(&e).to_string(), PqlFormat::Json).is_ok());
    // Moderate nesting is fine.
    let ok = format!("{}a = 1{}", "(".repeat(50), ")".repeat(50));
    assert!(parse(&ok, PqlFormat::Text).is_ok());
}

#[test]
fn error_comparisons_do_not_chain() {
    assert_eq!(first("1 < a < 3").code, "non_associative");
}

#[test]
fn error_chain_clauses() {
    assert_eq!(
        first("chain(xEvent, timestamp, [A: WHAT(a = 1) WHAT(b = 1)])").code,
        "duplicate_clause"
    );
    assert_eq!(
        first("chain(xEvent, timestamp, [A: WHEN(today)])").code,
        "missing_clause"
    );
    let e = first("chain(xEvent, timestamp, [A: WHAT(a = 1) WEHN(today)])");
    assert_eq!(e.suggestion.as_deref(), Some("WHEN"));
}

#[test]
fn error_type_mismatch_before_evaluation() {
    let e = first(r#""abc" > 3"#);
    assert_eq!(e.code, "type_mismatch");
    assert_eq!(e.span, Span::new(0, 9));
    assert!(
        e.message.contains("cannot compare a string with a number"),
        "{}",
        e.message
    );
    assert_eq!(first(r#"a + "x" = 1"#).code, "type_mismatch");
    assert_eq!(first(r#"3.startsWith("a")"#).code, "type_mismatch");
    assert_eq!(first(r#"a.startsWith(1)"#).code, "type_mismatch");
    assert_eq!(first(r#"true < false"#).code, "type_mismatch");
    assert_eq!(first(r#"1 and a"#).code, "type_mismatch");
    assert_eq!(first(r#"a in "x""#).code, "type_mismatch");
    assert_eq!(first(r#""x".y = 1"#).code, "type_mismatch");
}

#[test]
fn error_several_errors_are_reported_together() {
    let all = errors(r#""a" > 1 and b.startWith("x") and c.count(1) = 0"#);
    let codes: Vec<_> = all.iter().map(|e| e.code).collect();
    assert_eq!(codes, ["type_mismatch", "unknown_function", "wrong_arity"]);
}

#[test]
fn error_wrong_arity() {
    let e = first(r#"a.startsWith()"#);
    assert_eq!(e.code, "wrong_arity");
    assert!(
        e.message.contains("takes 1 to 2 argument(s), found 0"),
        "{}",
        e.message
    );
    assert_eq!(first("if(a = 1, 2)").code, "wrong_arity");
}

#[test]
fn error_unknown_function_suggests_by_edit_distance() {
    let e = first(r#"person.name.startWith("J")"#);
    assert_eq!(e.code, "unknown_function");
    assert_eq!(e.span, Span::new(12, 21));
    assert_eq!(e.suggestion.as_deref(), Some("startsWith"));
    assert_eq!(
        first("a.StartsWith(\"J\")").suggestion.as_deref(),
        Some("startsWith")
    );
    assert_eq!(
        first("inSegmnt(\"x\")").suggestion.as_deref(),
        Some("inSegment")
    );
    assert_eq!(first("a.frobnicate()").suggestion, None);
}

#[test]
fn error_unknown_time_unit_and_direction_suggest() {
    assert_eq!(
        first("a occurs < 3 dyas before now").suggestion.as_deref(),
        Some("days")
    );
    assert_eq!(
        first("a occurs < 3 days befor now").suggestion.as_deref(),
        Some("before")
    );
}

#[test]
fn error_call_style() {
    assert_eq!(first("count(a)").code, "wrong_call_style");
    assert_eq!(first(r#"a.inSegment("x")"#).code, "wrong_call_style");
}

#[test]
fn error_binding_classes() {
    assert_eq!(first("$2.a = 1").code, "unknown_parameter");
    assert_eq!(first("a[^^.b = 1].count() = 0").code, "bad_up_reference");
    assert_eq!(first("(A, B) => A.x = 1").code, "bad_lambda");
    assert_eq!(first("a = ((x) => x)").code, "misplaced_lambda");
}

#[test]
fn error_literal_arguments() {
    assert_eq!(first("a occurs on date(2024, 2, 30)").code, "bad_date");
    assert_eq!(first("a occurs on date(2024, b, 1)").code, "bad_date");
    assert_eq!(first(r#"a.matches("(abc")"#).code, "invalid_regex");
    assert_eq!(first("inSegment(a)").code, "bad_segment_reference");
}

#[test]
fn error_pql_json_classes() {
    let bad = parse("{\"nodeType\": ", PqlFormat::Json)
        .expect_err("truncated")
        .0
        .remove(0);
    assert_eq!(bad.code, "invalid_json");
    let e = parse(
        r#"{"nodeType":"fnAply","fnName":"=","params":[]}"#,
        PqlFormat::Json,
    )
    .expect_err("typo")
    .0
    .remove(0);
    assert_eq!(e.code, "invalid_pql_json");
    assert_eq!(e.suggestion.as_deref(), Some("fnApply"));
    let e = parse(r#"{"nodeType":"fnApply","fnName":"=","params":[{"nodeType":"literal"}, {"nodeType":"xEvent"}]}"#, PqlFormat::Json)
        .expect_err("missing field")
        .0
        .remove(0);
    assert_eq!(e.message, "at /params/0: missing field `value`");
    let e = parse(
        r#"{"nodeType":"fnApply","fnName":"=","params":[]}"#,
        PqlFormat::Json,
    )
    .expect_err("arity")
    .0
    .remove(0);
    assert_eq!(e.message, "at /: `=` takes 2 params, found 0");
    let e = parse(
        r#"{"nodeType":"variableReference","name":"X"}"#,
        PqlFormat::Json,
    )
    .expect_err("dangling")
    .0
    .remove(0);
    assert_eq!(e.code, "unknown_variable");
}

#[test]
fn render_puts_a_caret_under_the_span() {
    let src = r#"person.name.startWith("J")"#;
    let rendered = first(src).render(src);
    let expected = "error[unknown_function] at 1:13: unknown method `startWith`\n  |\n1 | person.name.startWith(\"J\")\n  |             ^^^^^^^^^\n  = expected: a known method\n  = help: did you mean `startsWith`?";
    assert_eq!(rendered, expected);
    // End-of-input errors still get a caret, one column past the text.
    let r = first("a >").render("a >");
    assert!(r.ends_with("  |    ^\n  = expected: an expression"), "{r}");
}

#[test]
fn errors_serialize_for_the_http_envelope() {
    let v = serde_json::to_value(PqlErrors(errors(r#""abc" > 3"#))).expect("serializes");
    assert_eq!(v[0]["code"], "type_mismatch");
    assert_eq!(v[0]["line"], 1);
    assert_eq!(v[0]["column"], 1);
    assert_eq!(v[0]["span"], json!({"start": 0, "end": 9}));
    assert!(v[0]["expected"].is_string());
    assert!(v[0].get("suggestion").is_none());
}

// ---- parser --------------------------------------------------------------------------------

fn shape(src: &str) -> String {
    to_text(&parser::parse_text(src).expect("parses"))
}

#[test]
fn precedence_follows_the_documented_table() {
    assert_eq!(shape("a or b and c"), "a or b and c");
    assert_eq!(shape("(a or b) and c"), "(a or b) and c");
    assert_eq!(shape("not a = 1 and b"), "not a = 1 and b");
    assert_eq!(shape("not (a and b)"), "not (a and b)");
    assert_eq!(shape("1 + 2 * 3 = 7"), "1 + 2 * 3 = 7");
    assert_eq!(shape("(1 + 2) * 3 = 9"), "(1 + 2) * 3 = 9");
    assert_eq!(shape("a - (b - c)"), "a - (b - c)");
    assert_eq!(shape("-a.b"), "-a.b");
    assert_eq!(eval("1 + 2 * 3"), json!(7));
    assert_eq!(eval("10 - 4 - 3"), json!(3));
    assert_eq!(eval("not 1 = 2 and 2 = 2"), json!(true));
    assert_eq!(eval("true or false and false"), json!(true));
}

#[test]
fn keywords_are_case_insensitive_names_are_not() {
    assert_eq!(eval("a = 1 AND NOT (a = 2) Or false"), json!(true));
    assert_eq!(
        eval_on(
            "CHAIN(xEvent, timestamp, [A: what(t = 1) When(today)])",
            json!({}),
            json!([{"t": 1, "timestamp": "2024-06-15T01:00:00Z"}])
        ),
        json!(true)
    );
    assert_eq!(eval("A = 1"), json!(false));
    assert_eq!(eval("`count`.isNull()"), json!(true));
}

#[test]
fn parameter_forms_are_equivalent() {
    let p = json!({"home": {"st": "ON"}, "work": {"st": "ON"}});
    for src in [
        "home.st = work.st",
        "$1.home.st = $1.work.st",
        "(Profile) => Profile.home.st = Profile.work.st",
    ] {
        assert_eq!(eval_on(src, p.clone(), json!([])), json!(true), "{src}");
    }
}

#[test]
fn let_value_may_not_use_in_unparenthesized_but_body_may() {
    assert_eq!(eval("let X = a in X in [1, 2]"), json!(true));
    assert_eq!(eval("let X = (a in [1]) in X"), json!(true));
}

// ---- evaluation ----------------------------------------------------------------------------

#[test]
fn null_model() {
    assert_eq!(eval("missing = 1"), json!(false));
    assert_eq!(eval("missing != 1"), json!(false));
    assert_eq!(eval("not (missing = 1)"), json!(true));
    assert_eq!(eval(r#"missing.doesNotContain("x")"#), json!(false));
    assert_eq!(eval("missing notIn [1]"), json!(false));
    assert_eq!(eval("a / 0"), json!(null));
    assert_eq!(eval("a / 0 = 1"), json!(false));
    assert_eq!(eval("a / 2"), json!(0.5));
    assert_eq!(eval("-7 % 3"), json!(-1));
    assert_eq!(eval("arr.sum()"), json!(6));
    assert_eq!(eval("missing.count()"), json!(0));
    assert_eq!(eval("missing.sum()"), json!(0));
    assert_eq!(eval("missing.average()"), json!(null));
    assert_eq!(eval("[].min()"), json!(null));
    assert_eq!(eval("o.isNotNull() and \"\".isNotNull()"), json!(true));
}

#[test]
fn values_and_computed_attributes() {
    assert_eq!(eval(r#"if(a = 1, "one", "other")"#), json!("one"));
    assert_eq!(eval(r#"{"n": a, "s": s}"#), json!({"n": 1, "s": "Hello"}));
    assert_eq!(eval("arr.topN((x) => x, 2)"), json!([3, 2]));
    assert_eq!(eval("date(2024, 1, 31)"), json!("2024-01-31T00:00:00Z"));
    assert_eq!(eval("today.getMonth()"), json!(6));
    let orders = json!({"orders": [{"s": "a", "p": 1}, {"s": "b", "p": 2}, {"s": "a", "p": 3}]});
    assert_eq!(
        eval_on(
            "orders.groupBy(s).map((K, G) => mapEntry(K, G.count()))",
            orders.clone(),
            json!([])
        ),
        json!({"a": 2, "b": 1})
    );
    assert_eq!(
        eval_on(
            "count X over X from orders where X.p > 1",
            orders.clone(),
            json!([])
        ),
        json!(2)
    );
    assert_eq!(
        eval_on("max X.p over X from orders", orders.clone(), json!([])),
        json!(3)
    );
    assert_eq!(
        eval_on("average X.p over X from orders", orders.clone(), json!([])),
        json!(2.0)
    );
    assert_eq!(
        eval_on(
            "orders[p > 1 and ^.orders.count() = 3].count()",
            orders,
            json!([])
        ),
        json!(2)
    );
    assert_eq!(eval(r#"s.regexGroup("(l+)")"#), json!("ll"));
    assert_eq!(eval(r#"s.regexGroup("x(l+)")"#), json!(null));
    assert_eq!(eval(r#"s like "H%x_""#), json!(false));
    assert_eq!(eval(r#"s like "h%""#), json!(false));
    assert_eq!(eval(r#"s like "H%l_o""#), json!(true));
}

#[test]
fn dynamic_regex_errors_surface_from_evaluate() {
    let q = compile(&parse(r#"s.matches(p)"#, PqlFormat::Text).expect("parses")).expect("compiles");
    let profile = json!({"s": "x", "p": "(unclosed"});
    let view = JsonProfile::new(&profile, &[]);
    assert!(matches!(
        q.evaluate(&view, now()),
        Err(EvalError::InvalidRegex { .. })
    ));
    assert!(!q.matches(&view, now()));
}

#[test]
fn chain_steps_are_strictly_ordered_and_counted() {
    let events = json!([
        {"e": "view", "timestamp": "2024-06-15T01:00:00Z"},
        {"e": "cart", "timestamp": "2024-06-15T02:00:00Z"},
        {"e": "view", "timestamp": "2024-06-15T03:00:00Z"},
        {"e": "buy", "timestamp": "2024-06-15T04:00:00Z"},
        {"e": "cart", "timestamp": "2024-06-15T04:00:00Z"}
    ]);
    let run = |s: &str| eval_on(s, json!({}), events.clone());
    assert_eq!(
        run(r#"chain(xEvent, timestamp, [A: WHAT(e = "view") COUNT(2), B: WHAT(e = "buy")])"#),
        json!(true)
    );
    assert_eq!(
        run(
            r#"chain(xEvent, timestamp, [A: WHAT(e = "view") COUNT(2), B: WHAT(e = "cart") COUNT(2)])"#
        ),
        json!(false)
    );
    // Same timestamp is not "after".
    assert_eq!(
        run(r#"chain(xEvent, timestamp, [A: WHAT(e = "buy"), B: WHAT(e = "cart")])"#),
        json!(false)
    );
    assert_eq!(
        run(
            r#"chain(xEvent, timestamp, [A: WHAT(e = "cart"), B: WHAT(e = "view"), C: WHAT(e = "buy")])"#
        ),
        json!(true)
    );
    assert_eq!(
        run(
            r#"chain(xEvent, timestamp, [A: WHAT(e = "view") WHERE(timestamp occurs < 2 hours before now)])"#
        ),
        json!(false)
    );
}

#[test]
fn compiled_queries_are_send_sync_and_list_their_inputs() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CompiledQuery>();
    let q = compile(&parse(r#"a.b = 1 and inSegment("s1") and a.b > 0 and not inSegment("s2") and inSegment("s1")"#, PqlFormat::Text).expect("parses"))
        .expect("compiles");
    assert_eq!(q.referenced_segments(), ["s1", "s2"]);
    let paths: Vec<String> = q.field_paths().iter().map(FieldPath::dotted).collect();
    assert_eq!(paths, ["a.b"]);
    assert_eq!(q.result_type(), Ty::Bool);
}

#[test]
fn format_names_parse() {
    assert_eq!("pql/text".parse::<PqlFormat>(), Ok(PqlFormat::Text));
    assert_eq!("pql/json".parse::<PqlFormat>(), Ok(PqlFormat::Json));
    assert!("pql/xml".parse::<PqlFormat>().is_err());
    assert_eq!(PqlFormat::Json.as_str(), "pql/json");
}

// ---- properties ----------------------------------------------------------------------------

/// Generated `pql/text` covering every syntactic form (not necessarily well-typed).
fn expr_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        // Not a word the grammar gives a meaning of its own where a value is expected (`not`
        // opens a negation: `(not)` is no field).
        "[a-z][a-zA-Z0-9_]{0,5}(\\.[a-z][a-zA-Z0-9]{0,4}){0,2}".prop_filter("a keyword", |path| {
            let first = path.split('.').next().unwrap_or_default();
            ![
                "not", "and", "or", "in", "like", "let", "select", "exists", "forall",
            ]
            .contains(&first)
        }),
        any::<i32>().prop_map(|i| i.to_string()),
        (-1000.0f64..1000.0).prop_map(|d| format!("{d:?}")),
        "[ -~]{0,6}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
        Just("true".to_string()),
        Just("xEvent".to_string()),
        Just("now".to_string()),
        Just("$1.x".to_string()),
        Just("^.up".to_string()),
        Just("date(2024, 2, 29)".to_string()),
        Just("[1, \"a\", 2.5]".to_string()),
    ];
    leaf.prop_recursive(4, 48, 3, |inner| {
        let i = || inner.clone();
        prop_oneof![
            (i(), i()).prop_map(|(a, b)| format!("({a}) and ({b})")),
            (i(), i()).prop_map(|(a, b)| format!("({a}) or ({b})")),
            i().prop_map(|a| format!("not ({a})")),
            (i(), i(), prop::sample::select(vec!["=", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "in", "notIn", "like"]))
                .prop_map(|(a, b, op)| format!("({a}) {op} ({b})")),
            i().prop_map(|a| format!("-({a})")),
            (i(), i()).prop_map(|(a, b)| format!("({a})[{b}]")),
            (i(), i()).prop_map(|(a, b)| format!("({a}).startsWith({b}, false)")),
            i().prop_map(|a| format!("({a}).count()")),
            (i(), i()).prop_map(|(a, b)| format!("({a}).map((K, G) => {b})")),
            (i(), i(), i()).prop_map(|(a, b, c)| format!("if({a}, {b}, {c})")),
            i().prop_map(|a| format!("({a}) occurs <= 3 days before today")),
            (i(), i()).prop_map(|(a, b)| format!("({a}) occurs between ({b}) and last month")),
            i().prop_map(|a| format!("({a}) occurs after now")),
            (i(), i()).prop_map(|(a, b)| format!("exists X from ({a}) where ({b}), Y from X.y : Y = 1")),
            (i(), i()).prop_map(|(a, b)| format!("forall X from ({a}) : {b}")),
            (i(), i()).prop_map(|(a, b)| format!("select X from ({a}) where {b}")),
            (i(), i()).prop_map(|(a, b)| format!("let V = ({a}) in {b}")),
            (i(), i()).prop_map(|(a, b)| format!("sum ({a}) over X from ({b}) where X.p > 1")),
            (i(), i()).prop_map(|(a, b)| format!("chain(xEvent, timestamp, [A: WHAT({a}) WHEN(< 2 hours before now) COUNT(2), B: WHAT({b}) WHERE(true)])")),
            (i(), i()).prop_map(|(a, b)| format!("{{\"k\": {a}, \"j\": [{b}]}}")),
            i().prop_map(|a| format!("inSegment(\"s\") and ({a})")),
        ]
    })
}

/// Text → json → text round trip at the syntax level: the JSON form is canonical, so the JSON of
/// the re-parsed text must equal the JSON of the original.
fn round_trips(src: &str) -> Result<(), TestCaseError> {
    let Ok(expr) = parser::parse_text(src) else {
        return Ok(());
    };
    let j = to_json(&expr);
    let back = json::from_json(&j, "")
        .map_err(|e| TestCaseError::fail(format!("{src}: json decode: {e}")))?;
    let text = to_text(&back);
    let again = parser::parse_text(&text)
        .map_err(|e| TestCaseError::fail(format!("{src} → {text}: {e}")))?;
    prop_assert_eq!(to_json(&again), j, "{} → {}", src, text);
    Ok(())
}

/// Found by the token-soup property: `$1.and()` parsed as a call to a function `and`, whose
/// PQL/JSON form read back as the operator and failed its arity.
#[test]
fn operators_are_not_methods() {
    for (src, at) in [
        ("$1.and()", 3),
        ("a.or(b)", 2),
        ("a.like(\"x%\")", 2),
        ("a.not()", 2),
    ] {
        let errors = parser::parse_text(src).expect_err(src);
        let error = &errors.0[0];
        assert_eq!(error.code, "unexpected_token", "{src}");
        assert!(
            error.message.contains("is an operator, not a method"),
            "{src}: {}",
            error.message
        );
        assert_eq!(error.span.start, at, "{src}");
    }
    // As fields they are names like any other.
    assert!(parser::parse_text("a.and = 1").is_ok());
}

/// Found by the token-soup property: `exists()`, a method called without a receiver, lost its
/// call style in PQL/JSON and read back as a method without its receiver. The checker rejects
/// it; the two forms must still say the same thing.
#[test]
fn a_method_called_without_a_receiver_keeps_its_call_style_in_json() {
    for src in ["exists()", "count()"] {
        round_trips(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        let json = to_json(&parser::parse_text(src).unwrap());
        assert_eq!(json["method"], false, "{src}: {json}");
    }
    // Calls in their usual style keep the usual form, without the field.
    let json = to_json(&parser::parse_text("a.exists()").unwrap());
    assert!(json.get("method").is_none(), "{json}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_arbitrary_input(s in "\\PC{0,80}") {
        let _ = parse(&s, PqlFormat::Text);
        let _ = parse(&s, PqlFormat::Json);
    }

    #[test]
    fn parser_never_panics_on_token_soup(tokens in prop::collection::vec(prop::sample::select(vec![
        "a", ".", "(", ")", "[", "]", "{", "}", ",", ":", "=", "<", "!", "^", "$1", "\"s\"", "1", "2.5", "-",
        "and", "or", "not", "in", "occurs", "before", "now", "today", "last", "month", "days", "between",
        "exists", "forall", "select", "from", "where", "let", "sum", "over", "chain", "WHAT", "WHEN", "COUNT",
        "=>", "xEvent", "count", "`x`", "date", "inSegment", "like",
    ]), 0..40)) {
        let src = tokens.join(" ");
        if let Ok(e) = parse(&src, PqlFormat::Text) {
            // Whatever parses and checks also compiles and evaluates without panicking.
            let q = compile(&e).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let p = json!({"a": [1, {"a": 2}]});
            let ev = [json!({"timestamp": "2024-06-15T00:00:00Z", "a": 1})];
            let _ = q.evaluate(&JsonProfile::new(&p, &ev), now());
        }
        round_trips(&src)?;
    }

    #[test]
    fn generated_expressions_round_trip_through_json(src in expr_text()) {
        prop_assert!(parser::parse_text(&src).is_ok(), "generator produced unparsable text: {}", src);
        round_trips(&src)?;
    }
}

#[test]
fn cached_time_windows_agree_with_the_direct_rules() {
    use ast::{Anchor, CmpOp, Direction, TimeUnit, TimeWord};
    use compile::{CCond, CRef};
    let now = time::parse_instant("2024-06-15T12:34:56.789Z").expect("instant");
    let profile = json!({});
    let view = JsonProfile::new(&profile, &[]);
    let cx = eval::Cx::new(&view, now);
    let refs = [
        CRef::Word(TimeWord::Now),
        CRef::Word(TimeWord::Today),
        CRef::Word(TimeWord::Yesterday),
        CRef::Word(TimeWord::Tomorrow),
        CRef::Relative(Anchor::Last, TimeUnit::Week),
        CRef::Relative(Anchor::This, TimeUnit::Month),
        CRef::Relative(Anchor::Next, TimeUnit::Year),
        CRef::Day(time::date_ms(2024, 1, 31).expect("date")),
    ];
    let ops = [
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ];
    let units = [
        TimeUnit::Millisecond,
        TimeUnit::Hour,
        TimeUnit::Day,
        TimeUnit::Week,
        TimeUnit::Month,
        TimeUnit::Year,
    ];
    let mut conds = Vec::new();
    for r in &refs {
        for op in ops {
            for n in [0, 1, 3] {
                for u in units {
                    for d in [Direction::Before, Direction::After, Direction::From] {
                        conds.push(CCond::Distance(op, n, u, d, r.clone()));
                    }
                }
            }
        }
        conds.push(CCond::Direction(Direction::Before, r.clone()));
        conds.push(CCond::Direction(Direction::After, r.clone()));
        conds.push(CCond::On(r.clone()));
        for r2 in &refs {
            conds.push(CCond::Between(r.clone(), r2.clone()));
        }
    }
    let hour = 3_600_000;
    let mut checked = 0;
    for c in &conds {
        let Some((lo, hi)) = eval::window_of(c, now) else {
            assert!(
                matches!(c, CCond::Distance(CmpOp::Ne, ..)),
                "{c:?} has no window"
            );
            continue;
        };
        let mut probes: Vec<i64> = (-800..800).map(|k| now + k * 7 * hour).collect();
        for b in [lo, hi] {
            probes.extend([b.saturating_sub(1), b, b.saturating_add(1)]);
        }
        // Instants beyond year ±30000 only matter for the open ends of the windows.
        for t in probes
            .into_iter()
            .filter(|t| t.unsigned_abs() < 1_000_000_000_000_000)
        {
            let direct = eval::ccond_holds(c, t, &cx, None);
            assert_eq!(
                lo <= t && t < hi,
                direct,
                "{c:?} at {}",
                time::format_instant(t)
            );
            checked += 1;
        }
    }
    assert!(checked > 100_000);
}

/// A chain's answer does not depend on the order events are listed in: the oldest-first fast
/// path and the general search agree.
#[test]
fn chains_answer_the_same_for_events_in_any_order() {
    let types = ["view", "add", "buy"];
    let now = chrono::DateTime::parse_from_rfc3339("2024-06-15T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let sources = [
        r#"chain(xEvent, timestamp, [A: WHAT(eventType = "view"), B: WHAT(eventType = "buy")])"#,
        r#"chain(xEvent, timestamp, [A: WHAT(eventType = "add") COUNT(2), B: WHAT(eventType = "buy")])"#,
        r#"chain(xEvent, timestamp, [A: WHAT(eventType = "buy"), B: WHAT(eventType = "view"), C: WHAT(eventType = "add")])"#,
        r#"chain(xEvent, timestamp, [A: WHAT(eventType = "view") WHEN(< 3 days before now), B: WHAT(eventType = "add")])"#,
    ];
    let queries: Vec<_> = sources
        .iter()
        .map(|source| {
            crate::pql::compile(&crate::pql::parse(source, crate::pql::PqlFormat::Text).unwrap())
                .unwrap()
        })
        .collect();
    let mut agreements = 0;
    for person in 0..300u64 {
        // Deterministic pseudo-random histories with repeated timestamps (ties).
        let mut events: Vec<serde_json::Value> = (0..(person % 9))
            .map(|index| {
                let mix = person
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(index * 40_503)
                    % 997;
                let day = 10 - (mix % 6) as i64;
                serde_json::json!({"eventType": types[(mix % 3) as usize],
                                   "timestamp": format!("2024-06-{day:02}T12:00:00.000Z")})
            })
            .collect();
        events.sort_by(|a, b| a["timestamp"].as_str().cmp(&b["timestamp"].as_str()));
        let profile = serde_json::json!({});
        let reversed: Vec<serde_json::Value> = events.iter().rev().cloned().collect();
        for query in &queries {
            let in_order = query.matches(&JsonProfile::new(&profile, &events), now);
            let shuffled = query.matches(&JsonProfile::new(&profile, &reversed), now);
            assert_eq!(in_order, shuffled, "{events:?}");
            agreements += usize::from(in_order);
        }
    }
    assert!(
        agreements > 50,
        "too few chains matched to mean anything: {agreements}"
    );
}
