//! The Profile Query Language (PQL) engine: parsing (`pql/text` and `pql/json`), checking,
//! compilation and evaluation of segment definitions and computed expressions. The language
//! reference is `docs`-level material in pql.md; this module implements it with the inferred
//! choices documented on the functions involved.
//!
//! # API
//!
//! ```
//! use segmentd::pql::{self, JsonProfile, PqlFormat};
//!
//! let expr = pql::parse(r#"person.name.startsWith("Jo") and inSegment("seg-A")"#, PqlFormat::Text)?;
//! let query = pql::compile(&expr)?;
//! assert_eq!(query.referenced_segments(), ["seg-A"]);
//!
//! let profile = serde_json::json!({"person": {"name": "Johnny"}});
//! let now = chrono::Utc::now();
//! assert!(!query.matches(&JsonProfile::new(&profile, &[]), now));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! * [`parse`]`(source, format) -> Result<Expr, PqlErrors>` parses and type-checks; every error
//!   has a line, column, byte span, message, what was expected, and for misspelt names a
//!   suggestion. [`PqlErrors`] is `Serialize` and has `render(source)`.
//! * [`compile()`]`(&Expr) -> Result<CompiledQuery, PqlErrors>` builds the evaluation tree
//!   (`Send + Sync`, compile once, evaluate many).
//! * [`CompiledQuery::evaluate`] / [`CompiledQuery::matches`] evaluate against any
//!   [`ProfileView`] at an explicit instant `now`; [`JsonProfile`] is the view over
//!   `serde_json::Value`.
//! * [`CompiledQuery::referenced_segments`] lists the `inSegment` ids (dependency order for
//!   segment jobs); [`CompiledQuery::field_paths`] lists the interned paths a columnar store binds.
//! * [`to_text`], [`to_json`] render; [`eligibility()`] decides streaming/edge eligibility (§6.1).
//! * [`check_fields`]`(&Expr, source, known_paths)` reports unknown profile fields with a
//!   "did you mean" suggestion when the caller knows the schema.
//!
//! # Operator precedence
//!
//! Tightest first; a reconstruction (pql.md §2.8), since Adobe publishes none:
//!
//! | level | operators | associativity |
//! | --- | --- | --- |
//! | 9 | postfix: `.field`, `.method(...)`, `[filter]` | left |
//! | 8 | primary: literals, `$1`, `^.x`, `name(...)`, `( )`, `[ ]`, `{ }`, `chain(...)` | — |
//! | 7 | unary `-` | prefix |
//! | 6 | `*` `/` `%` | left |
//! | 5 | `+` `-` | left |
//! | 4 | `=` `!=` `<` `<=` `>` `>=` `in` `notIn` `like` `occurs ...` | none (no chaining) |
//! | 3 | `not`, `!` | prefix |
//! | 2 | `and` | left |
//! | 1 | `or` | left |
//! | 0 | `let ... in`, `exists`/`forall`, `select`, `sum ... over` | extend as far right as possible |
//!
//! Keywords (`and`, `or`, `not`, `in`, `notIn`, `like`, `occurs`, time words, `chain`, `WHAT`,
//! `WHEN`, `COUNT`, `WHERE`, `select`, `from`, `where`, `let`, `exists`, `forall`, `true`,
//! `false`, `null`, `xEvent`) match case-insensitively; function and field names are
//! case-sensitive. A name that collides with a keyword can be written in backquotes:
//! `` `count` ``. `==` is accepted as `=`.
//!
//! # Semantics chosen where the documentation is silent \[I\]
//!
//! * Null model: see [`eval`]. Missing operands make comparisons, `in`/`notIn`/`like` and
//!   string predicates false (negated forms included); `not` negates the two-valued result.
//! * Numbers widen to double when mixed; `/` always yields a double; `%` keeps the dividend's
//!   sign; division by zero is null.
//! * Paths project through arrays and flatten; a comparison with a projected list on one side is
//!   existential. Arrays compare element-wise, in order.
//! * `matches` uses find (partial match) semantics; `regexGroup(p)` returns group 1 when the
//!   pattern has a group, else the whole match; no match is null.
//! * `like` is case-sensitive and matches the whole string.
//! * `equals`/`notEqualTo` accept an optional second argument, `false` = case-insensitive.
//! * `topN` = highest first, `bottomN` = lowest first; `head()` of an empty array is null.
//! * `intersection` keeps the receiver's order and drops duplicates.
//! * Aggregates over nothing: `count` 0, `sum` 0, `min`/`max`/`average` null.
//! * Time: UTC; XDM dates are midnight UTC; weeks start on Monday; `occurs` rules in [`time`].
//! * `chain`: see [`eval`] (`Node::chain`); `inSegment`: status `realized` or `existing` in any
//!   namespace of `segmentMembership`.
//! * Quantifiers: see [`mod@compile`] (chained binders nest; without `:` the last `where` is the
//!   condition).
//! * Inside filters, per-element method arguments and chain steps, bare names are fields of
//!   the current element; `^` climbs one level; named binders (`exists X from ...`) do not
//!   change the implicit context.

pub mod ast;
pub mod compile;
pub mod eligibility;
pub mod error;
pub mod eval;
pub mod functions;
pub mod json;
pub mod lexer;
pub mod parser;
pub mod plan;
pub mod regex;
pub mod schema;
pub mod text;
pub mod time;
pub mod view;

use std::str::FromStr;

use chrono::{DateTime, Utc};

pub use ast::{Expr, ExprKind, Span};
pub use eligibility::{Eligibility, eligibility, reads_events};
pub use error::{EvalError, PqlError, PqlErrors};
pub use functions::Ty;
pub use schema::check_fields;
pub use view::{FieldPath, JsonProfile, ProfileView, Val};

/// The two documented expression formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PqlFormat {
    /// `pql/text`
    #[serde(rename = "pql/text")]
    Text,
    /// `pql/json` (a JSON document, on the wire serialized as a string)
    #[serde(rename = "pql/json")]
    Json,
}

impl PqlFormat {
    /// The media-type-like name used in segment definitions.
    pub fn as_str(self) -> &'static str {
        match self {
            PqlFormat::Text => "pql/text",
            PqlFormat::Json => "pql/json",
        }
    }
}

/// An unknown `expression.format` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown PQL format `{0}`: expected `pql/text` or `pql/json`")]
pub struct UnknownFormat(pub String);

impl FromStr for PqlFormat {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pql/text" => Ok(PqlFormat::Text),
            "pql/json" => Ok(PqlFormat::Json),
            other => Err(UnknownFormat(other.to_string())),
        }
    }
}

/// Parses and type-checks `source`. Errors point into `source` (for `pql/json`, each error spans
/// the whole document and its message names the JSON pointer of the faulty node).
///
/// A `pql/text` expression whose `pql/json` form would nest deeper than JSON parsers accept
/// ([`json::MAX_JSON_NESTING`]) is rejected as `too_deep`, so every accepted expression can be
/// stored and listed in either format.
pub fn parse(source: &str, format: PqlFormat) -> Result<Expr, PqlErrors> {
    let expr = match format {
        PqlFormat::Text => {
            let expr = parser::parse_text(source)?;
            let depth = json::nesting(&json::to_json(&expr));
            if depth > json::MAX_JSON_NESTING {
                return Err(PqlError::new(
                    "too_deep",
                    format!(
                        "expression is too deeply nested for pql/json ({depth} levels, at most {})",
                        json::MAX_JSON_NESTING
                    ),
                    expr.span,
                    source,
                )
                .expected("a flatter expression")
                .into());
            }
            expr
        }
        PqlFormat::Json => json::parse_json_text(source)?,
    };
    compile::compile_expr(&expr, source)?;
    Ok(expr)
}

/// Compiles a parsed expression. Expressions returned by [`parse`] are already checked, so this
/// only fails for hand-built trees; those errors carry spans but no source to locate them in
/// (line 1, column 1).
pub fn compile(expr: &Expr) -> Result<CompiledQuery, PqlErrors> {
    let c = compile::compile_expr(expr, "")?;
    Ok(CompiledQuery {
        root: c.root,
        result_type: c.ty,
        paths: c.paths,
        segments: c.segments,
    })
}

/// Renders an expression as `pql/text`.
pub fn to_text(expr: &Expr) -> String {
    text::to_text(expr)
}

/// Renders an expression as a `pql/json` document.
pub fn to_json(expr: &Expr) -> serde_json::Value {
    json::to_json(expr)
}

/// A checked, compiled query: evaluate it against many profiles without re-parsing.
#[derive(Debug, Clone)]
pub struct CompiledQuery {
    root: compile::Node,
    result_type: Ty,
    paths: Vec<FieldPath>,
    segments: Vec<String>,
}

fn epoch_ms(now: DateTime<Utc>) -> i64 {
    now.timestamp_millis()
}

impl CompiledQuery {
    /// Evaluates the query and returns its value as JSON (booleans for predicates; instants as
    /// RFC 3339 strings). Missing data is not an error.
    pub fn evaluate(
        &self,
        view: &impl ProfileView,
        now: DateTime<Utc>,
    ) -> Result<serde_json::Value, EvalError> {
        let cx = eval::Cx::new(view, epoch_ms(now));
        let v = self.root.eval(&cx, None);
        let out = eval::to_json(&cx, &v);
        match cx.error.take() {
            Some(e) => Err(e),
            None => out,
        }
    }

    /// Evaluates the query as a predicate: `true` only for a true boolean or a non-empty list
    /// (a `select` or filter). Evaluation errors count as not matching.
    pub fn matches(&self, view: &impl ProfileView, now: DateTime<Utc>) -> bool {
        self.matches_at(view, epoch_ms(now))
    }

    /// [`CompiledQuery::matches`] with `now` as epoch milliseconds, for loops that evaluate
    /// many profiles at one instant.
    pub fn matches_at(&self, view: &impl ProfileView, now_ms: i64) -> bool {
        let cx = eval::Cx::new(view, now_ms);
        let hit = self.root.test(&cx, None);
        hit && cx.error.take().is_none()
    }

    /// Segment ids referenced by `inSegment`, in order of first use.
    pub fn referenced_segments(&self) -> &[String] {
        &self.segments
    }

    /// Every field path the query reads, indexed by [`FieldPath::id`].
    pub fn field_paths(&self) -> &[FieldPath] {
        &self.paths
    }

    /// Static result type (`Ty::Bool` for a predicate; `Ty::Any` when only known at run time).
    pub fn result_type(&self) -> Ty {
        self.result_type
    }
}

#[cfg(test)]
pub(crate) mod test_vectors;
#[cfg(test)]
mod tests;
