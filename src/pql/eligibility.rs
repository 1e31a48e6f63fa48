//! Streaming and edge eligibility by query shape (pql.md §6.1, rules after 2025-05-20).
//!
//! The query is split into its top-level `and` conjuncts and each conjunct is classified:
//!
//! * **profile**: no `xEvent`, `chain` or `inSegment` inside;
//! * **event**: a `chain(...)` or `not(chain(...))` whose every step has a `WHEN` window of at
//!   most 24 hours (`WHEN(today)`, `WHEN(< N unit before now)` / `<=` with N unit ≤ 24 h);
//! * **segment**: `inSegment(...)` or its negation;
//! * anything else (events through filters or quantifiers, a chain without a short window,
//!   events under `or`): batch only.
//!
//! Then, with the choices marked \[I\] in the spec resolved as follows:
//!
//! * streaming: profile conjuncts only; or event conjuncts (any number of chains and steps) plus
//!   profile conjuncts, with no segment conjunct (the newest streaming doc lists `inSegment`
//!   combined with an event as ineligible); or segment conjuncts plus profile conjuncts
//!   (segment of segments, older streaming rules and the recommended way to mix batch data).
//! * edge: profile only; a single chain with a single step plus profile conjuncts; or segment
//!   plus profile conjuncts.
//! * Never: a query whose root is a negation of an event condition ("the whole query cannot be
//!   a negation").

use super::ast::*;

/// Whether a segment definition can be evaluated by streaming and by edge segmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Eligibility {
    /// Streaming segmentation is possible.
    pub streaming: bool,
    /// Edge segmentation is possible.
    pub edge: bool,
}

#[derive(Debug, PartialEq)]
enum Conjunct {
    Profile,
    /// A short-window chain and its number of steps; `negated` for `not(chain(...))`.
    Event {
        steps: usize,
        negated: bool,
    },
    Segment,
    Batch,
}

/// Decides eligibility for `expr` (see the module docs for the rules).
pub fn eligibility(expr: &Expr) -> Eligibility {
    let body = match &expr.kind {
        ExprKind::Lambda(_, b) => b,
        _ => expr,
    };
    let mut conjuncts = Vec::new();
    flatten_and(body, &mut conjuncts);
    let classes: Vec<Conjunct> = conjuncts.iter().map(|c| classify(c)).collect();
    let batch = classes.contains(&Conjunct::Batch);
    let segments = classes.iter().filter(|c| **c == Conjunct::Segment).count();
    let events: Vec<(usize, bool)> = classes
        .iter()
        .filter_map(|c| match c {
            Conjunct::Event { steps, negated } => Some((*steps, *negated)),
            _ => None,
        })
        .collect();
    let whole_negation = classes.len() == 1 && events.first().is_some_and(|(_, neg)| *neg);
    if batch || whole_negation {
        return Eligibility {
            streaming: false,
            edge: false,
        };
    }
    let streaming = events.is_empty() || segments == 0;
    let edge = segments == 0 && (events.is_empty() || (events.len() == 1 && events[0].0 == 1))
        || (events.is_empty() && segments > 0);
    Eligibility { streaming, edge }
}

fn flatten_and<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match &e.kind {
        ExprKind::Binary(BinOp::And, a, b) => {
            flatten_and(a, out);
            flatten_and(b, out);
        }
        _ => out.push(e),
    }
}

fn classify(e: &Expr) -> Conjunct {
    let (inner, negated) = match &e.kind {
        ExprKind::Unary(UnOp::Not, x) => (&**x, true),
        _ => (e, false),
    };
    match &inner.kind {
        ExprKind::Chain { events, steps, .. } if matches!(events.kind, ExprKind::XEvent) => {
            let short = steps
                .iter()
                .all(|s| s.when.as_ref().is_some_and(within_24h) && !uses_data(&s.what));
            if short {
                Conjunct::Event {
                    steps: steps.len(),
                    negated,
                }
            } else {
                Conjunct::Batch
            }
        }
        ExprKind::Call {
            name,
            receiver: None,
            ..
        } if name == "inSegment" => Conjunct::Segment,
        _ if !uses_data(e) => Conjunct::Profile,
        _ => Conjunct::Batch,
    }
}

fn within_24h(c: &OccursCond) -> bool {
    match c {
        OccursCond::On(TimeRef::Word(TimeWord::Today)) => true,
        OccursCond::Distance {
            op: CmpOp::Lt | CmpOp::Le,
            amount,
            unit,
            dir: Direction::Before,
            anchor: TimeRef::Word(TimeWord::Now),
        } => {
            let ms: u64 = match unit {
                TimeUnit::Millisecond => 1,
                TimeUnit::Second => 1000,
                TimeUnit::Minute => 60_000,
                TimeUnit::Hour => 3_600_000,
                TimeUnit::Day => 86_400_000,
                _ => return false,
            };
            u64::from(*amount) * ms <= 86_400_000
        }
        _ => false,
    }
}

/// Tells whether an expression reads the profile's events (`xEvent` or `chain` anywhere in it), so
/// an evaluator can skip decoding events for expressions that never look at them.
pub fn reads_events(expr: &Expr) -> bool {
    let mut found = false;
    visit(expr, &mut |x| {
        found |= matches!(x.kind, ExprKind::XEvent | ExprKind::Chain { .. })
    });
    found
}

/// Whether `e` reads events (`xEvent`, `chain`) or segment membership (`inSegment`).
fn uses_data(e: &Expr) -> bool {
    let mut found = false;
    visit(e, &mut |x| {
        found |= match &x.kind {
            ExprKind::XEvent | ExprKind::Chain { .. } => true,
            ExprKind::Call {
                name,
                receiver: None,
                ..
            } => name == "inSegment",
            _ => false,
        };
    });
    found
}

fn visit(e: &Expr, f: &mut dyn FnMut(&Expr)) {
    f(e);
    let cond = |c: &OccursCond, f: &mut dyn FnMut(&Expr)| {
        let mut refs = Vec::new();
        match c {
            OccursCond::Distance { anchor, .. } => refs.push(anchor),
            OccursCond::Direction(_, r) | OccursCond::On(r) => refs.push(r),
            OccursCond::Between(a, b) => {
                refs.push(a);
                refs.push(b);
            }
        }
        for r in refs {
            if let TimeRef::Expr(x) = r {
                visit(x, f);
            }
        }
    };
    match &e.kind {
        ExprKind::Lit(_)
        | ExprKind::Param(_)
        | ExprKind::Context(_)
        | ExprKind::Var(_)
        | ExprKind::XEvent
        | ExprKind::Time(_) => {}
        ExprKind::Array(items) => items.iter().for_each(|i| visit(i, f)),
        ExprKind::Object(entries) => entries.iter().for_each(|(_, v)| visit(v, f)),
        ExprKind::Field { object, .. } => visit(object, f),
        ExprKind::Call { receiver, args, .. } => {
            if let Some(r) = receiver {
                visit(r, f);
            }
            args.iter().for_each(|a| visit(a, f));
        }
        ExprKind::Unary(_, x) => visit(x, f),
        ExprKind::Binary(_, a, b)
        | ExprKind::Filter(a, b)
        | ExprKind::Let(_, a, b)
        | ExprKind::Select(_, a, b) => {
            visit(a, f);
            visit(b, f);
        }
        ExprKind::Occurs(s, c) => {
            visit(s, f);
            cond(c, f);
        }
        ExprKind::Lambda(_, b) => visit(b, f),
        ExprKind::Quant(_, binders, c) => {
            for b in binders {
                visit(&b.source, f);
                if let Some(w) = &b.cond {
                    visit(w, f);
                }
            }
            if let Some(c) = c {
                visit(c, f);
            }
        }
        ExprKind::Aggregate {
            value,
            source,
            cond: c,
            ..
        } => {
            visit(value, f);
            visit(source, f);
            if let Some(c) = c {
                visit(c, f);
            }
        }
        ExprKind::Chain { events, steps, .. } => {
            visit(events, f);
            for s in steps {
                visit(&s.what, f);
                if let Some(w) = &s.when {
                    cond(w, f);
                }
                if let Some(w) = &s.where_ {
                    visit(w, f);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pql::{PqlFormat, parse};

    fn el(s: &str) -> (bool, bool) {
        let e = eligibility(&parse(s, PqlFormat::Text).unwrap());
        (e.streaming, e.edge)
    }

    #[test]
    fn documented_shapes() {
        assert_eq!(
            el(r#"homeAddress.country.equals("Canada", false)"#),
            (true, true)
        );
        assert_eq!(
            el(
                r#"CHAIN(xEvent, timestamp, [C0: WHAT(eventType.equals("commerce.checkouts", false)) WHEN(today)])"#
            ),
            (true, true)
        );
        assert_eq!(
            el(
                r#"workAddress.country.equals("Canada", false) and CHAIN(xEvent, timestamp, [C0: WHAT(eventType.equals("commerce.checkouts", false)) WHEN(today)])"#
            ),
            (true, true)
        );
        // Multiple events: streaming only.
        assert_eq!(
            el(
                r#"workAddress.country.equals("US", false) and CHAIN(xEvent, timestamp, [C0: WHAT(eventType.equals("directMarketing.emailClicked", false)) WHEN(today), C1: WHAT(eventType.equals("commerce.checkouts", false)) WHEN(today)])"#
            ),
            (true, false)
        );
        assert_eq!(el(r#"inSegment("a") and inSegment("b")"#), (true, true));
    }

    #[test]
    fn batch_shapes() {
        // No time window, or longer than 24 h.
        assert_eq!(
            el(r#"chain(xEvent, timestamp, [A: WHAT(eventType = "addToCart")])"#),
            (false, false)
        );
        assert_eq!(
            el(r#"chain(xEvent, timestamp, [A: WHAT(eventType = "x") WHEN(< 8 days before now)])"#),
            (false, false)
        );
        assert_eq!(
            el(
                r#"chain(xEvent, timestamp, [A: WHAT(eventType = "x") WHEN(<= 24 hours before now)])"#
            ),
            (true, true)
        );
        // The whole query cannot be a negation.
        assert_eq!(
            el(r#"not(chain(xEvent, timestamp, [A: WHAT(eventType = "x") WHEN(today)]))"#),
            (false, false)
        );
        // Event plus inSegment.
        assert_eq!(
            el(
                r#"inSegment("a") and chain(xEvent, timestamp, [A: WHAT(eventType = "x") WHEN(today)])"#
            ),
            (false, false)
        );
        // Events read through a filter.
        assert_eq!(el(r#"xEvent[eventType = "x"].count() > 1"#), (false, false));
        let reads = |text: &str| {
            reads_events(&crate::pql::parse(text, crate::pql::PqlFormat::Text).unwrap())
        };
        assert!(reads(r#"a = 1 and xEvent[eventType = "x"].count() > 1"#));
        assert!(reads(
            r#"chain(xEvent, timestamp, [A: WHAT(eventType = "x")])"#
        ));
        assert!(!reads(r#"person.name.startsWith("J") and inSegment("s")"#));
        assert_eq!(
            el(r#"a = 1 or chain(xEvent, timestamp, [A: WHAT(eventType = "x") WHEN(today)])"#),
            (false, false)
        );
    }
}
