//! Evaluation of a compiled [`Node`] tree against a [`ProfileView`].
//!
//! Null model (pql.md §3, the recommended two-valued reading): a comparison, `in`, `like` or
//! string predicate with a missing operand is **false**, including the negative forms (`!=`,
//! `doesNot*`, `notEqualTo`, `notIn`); `not` negates that two-valued result, so
//! `not(missing = 1)` is true while `missing != 1` is false. A comparison whose one side is a
//! list (an implicit projection such as `xEvent.commerce.order.priceTotal`) and whose other side
//! is not, is existential: true when some element satisfies it. Two lists compare element-wise
//! and order-sensitively.
//!
//! Boolean context (`and`, `or`, `not`, filters, the query root via `matches`) reads a list as
//! "non-empty" and anything that is not `true` as false. It has its own entry point,
//! [`Node::test`], so that filters, `select` and quantifiers in boolean position never build
//! the intermediate list.

use std::cell::Cell;
use std::cmp::Ordering;
use std::rc::Rc;

use super::ast::{BinOp, CmpOp, Direction, TimeWord};
use super::compile::*;
use super::error::EvalError;
use super::regex::Regex;
use super::time::{self, DAY_MS, Period};
use super::view::{ProfileView, Val, push_flat, walk_json};

/// Per-evaluation context.
pub struct Cx<'a> {
    /// The profile.
    pub view: &'a dyn ProfileView,
    /// Evaluation instant, epoch ms.
    pub now: i64,
    /// First non-recoverable error; evaluation continues with nulls and the caller reports it.
    pub error: Cell<Option<EvalError>>,
    /// Time windows of `occurs` conditions, computed on first use (see [`Cond`]).
    pub windows: [Cell<Option<Window>>; MAX_WINDOWS],
}

impl<'a> Cx<'a> {
    /// A context for one evaluation.
    pub fn new(view: &'a dyn ProfileView, now: i64) -> Self {
        Cx {
            view,
            now,
            error: Cell::new(None),
            windows: Default::default(),
        }
    }
}

/// A cached time window `[lo, hi)`.
type Window = (i64, i64);

/// A runtime frame: the value bound by an element context or a named binder.
pub struct Scope<'s, 'a> {
    val: Val<'a>,
    parent: Option<&'s Scope<'s, 'a>>,
}

/// The innermost frame, if any.
pub type Sc<'s, 'a> = Option<&'s Scope<'s, 'a>>;

fn frame<'a>(sc: Sc<'_, 'a>, d: usize) -> Val<'a> {
    let mut cur = sc;
    for _ in 0..d {
        cur = cur.and_then(|s| s.parent);
    }
    cur.map_or(Val::Profile, |s| s.val.clone())
}

/// Truthiness in boolean context.
pub fn truthy(v: &Val<'_>, cx: &Cx<'_>) -> bool {
    match v {
        Val::Bool(b) => *b,
        Val::List(items) => !items.is_empty(),
        Val::Json(serde_json::Value::Array(items)) => !items.is_empty(),
        Val::Events => cx.view.event_count() > 0,
        _ => false,
    }
}

/// Calls `f` on each element of a collection value until it returns `false`. Null has no
/// elements; a scalar is a one-element collection; an object iterates over its values.
pub fn each<'a>(cx: &Cx<'a>, v: &Val<'a>, mut f: impl FnMut(Val<'a>) -> bool) {
    match v {
        Val::Null => {}
        Val::Events => {
            for i in 0..cx.view.event_count() {
                if !f(Val::Event(i)) {
                    return;
                }
            }
        }
        Val::Json(serde_json::Value::Array(items)) => {
            for it in items {
                if !f(Val::from_json(it)) {
                    return;
                }
            }
        }
        Val::Json(serde_json::Value::Object(map)) => {
            for it in map.values() {
                if !f(Val::from_json(it)) {
                    return;
                }
            }
        }
        Val::List(items) => {
            for it in items.iter() {
                if !f(it.clone()) {
                    return;
                }
            }
        }
        Val::Map(entries) => {
            for (_, it) in entries.iter() {
                if !f(it.clone()) {
                    return;
                }
            }
        }
        other => {
            f(other.clone());
        }
    }
}

/// Like [`each`] but with keys: map keys, or element indexes for arrays.
fn each_entry<'a>(cx: &Cx<'a>, v: &Val<'a>, mut f: impl FnMut(Val<'a>, Val<'a>) -> bool) {
    match v {
        Val::Json(serde_json::Value::Object(map)) => {
            for (k, it) in map {
                if !f(Val::Str(k), Val::from_json(it)) {
                    return;
                }
            }
        }
        Val::Map(entries) => {
            for (k, it) in entries.iter() {
                if !f(k.clone(), it.clone()) {
                    return;
                }
            }
        }
        other => {
            let mut i = 0;
            each(cx, other, |x| {
                i += 1;
                f(Val::Int(i - 1), x)
            });
        }
    }
}

fn is_multi(v: &Val<'_>) -> bool {
    matches!(
        v,
        Val::List(_) | Val::Json(serde_json::Value::Array(_)) | Val::Events
    )
}

fn to_vec<'a>(cx: &Cx<'a>, v: &Val<'a>) -> Vec<Val<'a>> {
    let mut out = Vec::new();
    each(cx, v, |x| {
        out.push(x);
        true
    });
    out
}

/// Materializes lazily resolved handles (profile, events) to their JSON values.
fn materialize<'a>(cx: &Cx<'a>, v: Val<'a>) -> Val<'a> {
    match v {
        Val::Profile => cx.view.profile_value(),
        Val::Event(i) => cx.view.event_value(i),
        other => other,
    }
}

fn num(v: &Val<'_>) -> Option<f64> {
    match v {
        Val::Int(i) => Some(*i as f64),
        Val::Double(d) => Some(*d),
        _ => None,
    }
}

/// Equality of two present values; `None` when either is null.
pub fn val_eq<'a>(cx: &Cx<'a>, a: &Val<'a>, b: &Val<'a>) -> Option<bool> {
    match (a, b) {
        (Val::Null, _) | (_, Val::Null) => None,
        (Val::Int(x), Val::Int(y)) => Some(x == y),
        (Val::Bool(x), Val::Bool(y)) => Some(x == y),
        _ if num(a).is_some() && num(b).is_some() => Some(num(a) == num(b)),
        (Val::Time(_), _) | (_, Val::Time(_)) => match (a.as_instant(), b.as_instant()) {
            (Some(x), Some(y)) => Some(x == y),
            _ => Some(false),
        },
        _ if a.as_str().is_some() && b.as_str().is_some() => Some(a.as_str() == b.as_str()),
        _ if is_multi(a) && is_multi(b) => {
            let (x, y) = (to_vec(cx, a), to_vec(cx, b));
            Some(
                x.len() == y.len()
                    && x.iter()
                        .zip(&y)
                        .all(|(p, q)| val_eq(cx, p, q) == Some(true)),
            )
        }
        (Val::Json(x), Val::Json(y)) => Some(x == y),
        (Val::Map(x), Val::Map(y)) => Some(
            x.len() == y.len()
                && x.iter().zip(y.iter()).all(|((k1, v1), (k2, v2))| {
                    val_eq(cx, k1, k2) == Some(true) && val_eq(cx, v1, v2) == Some(true)
                }),
        ),
        (Val::Event(i), Val::Event(j)) => Some(i == j),
        (Val::Profile, Val::Profile) | (Val::Events, Val::Events) => Some(true),
        _ => Some(false),
    }
}

/// Ordering of two present, comparable values; `None` when missing or incomparable.
pub fn val_cmp(a: &Val<'_>, b: &Val<'_>) -> Option<Ordering> {
    match (a, b) {
        (Val::Int(x), Val::Int(y)) => Some(x.cmp(y)),
        _ if num(a).is_some() && num(b).is_some() => num(a)?.partial_cmp(&num(b)?),
        (Val::Time(_), _) | (_, Val::Time(_)) => Some(a.as_instant()?.cmp(&b.as_instant()?)),
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => Some(x.cmp(y)),
            _ => None,
        },
    }
}

fn compare_scalar<'a>(cx: &Cx<'a>, op: CmpOp, a: &Val<'a>, b: &Val<'a>) -> bool {
    match op {
        CmpOp::Eq => val_eq(cx, a, b) == Some(true),
        CmpOp::Ne => val_eq(cx, a, b) == Some(false),
        _ => match val_cmp(a, b) {
            None => false,
            Some(o) => match op {
                CmpOp::Lt => o == Ordering::Less,
                CmpOp::Le => o != Ordering::Greater,
                CmpOp::Gt => o == Ordering::Greater,
                _ => o != Ordering::Less,
            },
        },
    }
}

/// Comparison with the existential rule for one-sided lists.
pub fn compare<'a>(cx: &Cx<'a>, op: CmpOp, a: &Val<'a>, b: &Val<'a>) -> bool {
    match (is_multi(a), is_multi(b)) {
        (true, false) => {
            let mut hit = false;
            each(cx, a, |x| {
                hit = compare_scalar(cx, op, &x, b);
                !hit
            });
            hit
        }
        (false, true) => {
            let mut hit = false;
            each(cx, b, |y| {
                hit = compare_scalar(cx, op, a, &y);
                !hit
            });
            hit
        }
        _ => compare_scalar(cx, op, a, b),
    }
}

fn contains_val<'a>(cx: &Cx<'a>, hay: &Val<'a>, needle: &Val<'a>) -> bool {
    let mut hit = false;
    each(cx, hay, |x| {
        hit = val_eq(cx, &x, needle) == Some(true);
        !hit
    });
    hit
}

/// SQL `like`: `%` any run, `_` one character, whole-string, case-sensitive (pql.md §4.4 \[I\]).
pub fn like_match(s: &str, pat: &[LikeTok]) -> bool {
    let chars: Vec<char> = s.chars().collect();
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < chars.len() {
        match pat.get(pi) {
            Some(LikeTok::Many) => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(LikeTok::One) => {
                si += 1;
                pi += 1;
            }
            Some(LikeTok::Lit(c)) if *c == chars[si] => {
                si += 1;
                pi += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    pat[pi..].iter().all(|t| *t == LikeTok::Many)
}

/// Case-insensitive string test without allocating for ASCII input.
fn str_test_ci(kind: StrKind, s: &str, needle: &str, needle_lower: Option<&str>) -> bool {
    if s.is_ascii() && needle.is_ascii() {
        let (h, n) = (s.as_bytes(), needle.as_bytes());
        return match kind {
            StrKind::Prefix => h.len() >= n.len() && h[..n.len()].eq_ignore_ascii_case(n),
            StrKind::Suffix => h.len() >= n.len() && h[h.len() - n.len()..].eq_ignore_ascii_case(n),
            StrKind::Equals => h.eq_ignore_ascii_case(n),
            StrKind::Contains => {
                n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
            }
        };
    }
    let hs = s.to_lowercase();
    let owned;
    let ns = match needle_lower {
        Some(n) => n,
        None => {
            owned = needle.to_lowercase();
            &owned
        }
    };
    str_test_cs(kind, &hs, ns)
}

fn str_test_cs(kind: StrKind, s: &str, needle: &str) -> bool {
    match kind {
        StrKind::Prefix => s.starts_with(needle),
        StrKind::Suffix => s.ends_with(needle),
        StrKind::Contains => s.contains(needle),
        StrKind::Equals => s == needle,
    }
}

fn regex<'a, 'r>(
    rx: &'r RegexArg,
    cx: &Cx<'a>,
    sc: Sc<'_, 'a>,
    owned: &'r mut Option<Regex>,
) -> Option<&'r Regex>
where
    'a: 'r,
{
    match rx {
        RegexArg::Fixed(r) => Some(r),
        RegexArg::Dynamic(n) => {
            let p = n.eval(cx, sc);
            let p = p.as_str()?;
            match Regex::new(p) {
                Ok(r) => {
                    *owned = Some(r);
                    owned.as_ref()
                }
                Err(reason) => {
                    cx.error.set(Some(EvalError::InvalidRegex {
                        pattern: p.to_string(),
                        reason,
                    }));
                    None
                }
            }
        }
    }
}

fn push<'s, 'a>(val: Val<'a>, parent: Sc<'s, 'a>) -> Scope<'s, 'a> {
    Scope { val, parent }
}

impl ElemFn {
    /// Evaluates the body for one element (`key` is used by two-parameter lambdas).
    fn call<'a>(&'a self, cx: &Cx<'a>, sc: Sc<'_, 'a>, key: Val<'a>, elem: Val<'a>) -> Val<'a> {
        if self.arity == 2 {
            let k = push(key, sc);
            let v = push(elem, Some(&k));
            self.body.eval(cx, Some(&v))
        } else {
            let s = push(elem, sc);
            self.body.eval(cx, Some(&s))
        }
    }

    fn test<'a>(&'a self, cx: &Cx<'a>, sc: Sc<'_, 'a>, elem: Val<'a>) -> bool {
        if self.arity == 2 {
            let v = self.call(cx, sc, Val::Null, elem);
            return truthy(&v, cx);
        }
        let s = push(elem, sc);
        self.body.test(cx, Some(&s))
    }
}

fn period_of<'a>(r: &'a CRef, cx: &Cx<'a>, sc: Sc<'_, 'a>) -> Option<Period> {
    Some(match r {
        CRef::Word(w) => time::word_period(*w, cx.now),
        CRef::Relative(a, u) => time::relative_period(*a, *u, cx.now),
        CRef::Day(ms) => Period::day(*ms),
        CRef::Expr(n) => Period::instant(n.eval(cx, sc).as_instant()?),
    })
}

/// The instants satisfying a condition whose references do not depend on data, as one
/// half-open interval; `None` for `!=` distances and attribute references. Equivalent to
/// [`ccond_holds`] (tested exhaustively around the boundaries).
pub fn window_of(c: &CCond, now: i64) -> Option<Window> {
    let period = |r: &CRef| match r {
        CRef::Word(w) => Some(time::word_period(*w, now)),
        CRef::Relative(a, u) => Some(time::relative_period(*a, *u, now)),
        CRef::Day(ms) => Some(Period::day(*ms)),
        CRef::Expr(_) => None,
    };
    let (min, max) = (i64::MIN, i64::MAX);
    Some(match c {
        CCond::Distance(op, n, unit, dir, r) => {
            let r0 = period(r)?.start;
            let n = i64::from(*n);
            if *dir == Direction::Before {
                let b = time::add_units(r0, *unit, -n);
                let end = r0.saturating_add(1);
                match op {
                    CmpOp::Lt => (b.saturating_add(1), end),
                    CmpOp::Le => (b, end),
                    CmpOp::Gt => (min, b),
                    CmpOp::Ge => (min, b.saturating_add(1)),
                    CmpOp::Eq => (b, time::add_units(b, *unit, 1).min(end)),
                    CmpOp::Ne => return None,
                }
            } else {
                let b = time::add_units(r0, *unit, n);
                match op {
                    CmpOp::Lt => (r0, b),
                    CmpOp::Le => (r0, b.saturating_add(1)),
                    CmpOp::Gt => (b.saturating_add(1), max),
                    CmpOp::Ge => (b, max),
                    CmpOp::Eq => (b.max(r0), time::add_units(b, *unit, 1)),
                    CmpOp::Ne => return None,
                }
            }
        }
        CCond::Direction(Direction::Before, r) => (min, period(r)?.start),
        CCond::Direction(_, r) => (period(r)?.end, max),
        CCond::On(r) => {
            let p = period(r)?;
            (
                p.start,
                if p.start == p.end {
                    p.end.saturating_add(1)
                } else {
                    p.end
                },
            )
        }
        CCond::Between(a, b) => {
            let (pa, pb) = (period(a)?, period(b)?);
            (
                pa.start,
                if pb.start == pb.end {
                    pb.end.saturating_add(1)
                } else {
                    pb.end
                },
            )
        }
    })
}

/// Evaluates an `occurs` condition for instant `t`, through the window cache when possible.
pub fn cond_holds<'a>(c: &'a Cond, t: i64, cx: &Cx<'a>, sc: Sc<'_, 'a>) -> bool {
    if let Some(slot) = c.slot {
        let cell = &cx.windows[slot];
        let w = match cell.get() {
            Some(w) => Some(w),
            None => {
                let w = window_of(&c.kind, cx.now);
                cell.set(w);
                w
            }
        };
        if let Some((lo, hi)) = w {
            return lo <= t && t < hi;
        }
    }
    ccond_holds(&c.kind, t, cx, sc)
}

/// Evaluates an `occurs` condition for instant `t` directly from the rules in [`time`].
pub fn ccond_holds<'a>(c: &'a CCond, t: i64, cx: &Cx<'a>, sc: Sc<'_, 'a>) -> bool {
    match c {
        CCond::Distance(op, n, unit, dir, r) => period_of(r, cx, sc)
            .is_some_and(|p| time::distance_holds(t, *op, *n, *unit, *dir, p.start)),
        CCond::Direction(dir, r) => {
            period_of(r, cx, sc).is_some_and(|p| time::direction_holds(t, *dir, p))
        }
        CCond::On(r) => period_of(r, cx, sc).is_some_and(|p| p.contains(t)),
        CCond::Between(a, b) => match (period_of(a, cx, sc), period_of(b, cx, sc)) {
            (Some(pa), Some(pb)) => time::between_holds(t, pa, pb),
            _ => false,
        },
    }
}

fn arith<'a>(op: BinOp, a: &Val<'a>, b: &Val<'a>) -> Val<'a> {
    if let (Val::Int(x), Val::Int(y)) = (a, b) {
        let r = match op {
            BinOp::Add => x.checked_add(*y),
            BinOp::Sub => x.checked_sub(*y),
            BinOp::Mul => x.checked_mul(*y),
            // Java `%`: the result takes the dividend's sign, as Rust's does.
            BinOp::Rem => x.checked_rem(*y),
            _ => None,
        };
        match (op, r) {
            (BinOp::Div, _) => {}
            (BinOp::Rem, None) => return Val::Null,
            (_, Some(v)) => return Val::Int(v),
            // Overflow falls through to doubles.
            _ => {}
        }
    }
    let (Some(x), Some(y)) = (num(a), num(b)) else {
        return Val::Null;
    };
    let r = match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        // Division by zero is null (pql.md §4.3 \[I\]), so comparisons with it are false.
        BinOp::Div | BinOp::Rem if y == 0.0 => return Val::Null,
        BinOp::Div => x / y,
        _ => x % y,
    };
    Val::Double(r)
}

fn date_part(v: &Val<'_>, m: Method) -> Val<'static> {
    let Some(t) = v.as_instant() else {
        return Val::Null;
    };
    let (y, mo, d) = time::civil_from_days(t.div_euclid(DAY_MS));
    Val::Int(match m {
        Method::GetMonth => i64::from(mo),
        Method::GetYear => y,
        _ => i64::from(d),
    })
}

/// Tests `node` with `element` as the current element (the frame a chain step or a filter sees).
pub fn test_on_element<'a>(node: &'a Node, cx: &Cx<'a>, element: Val<'a>) -> bool {
    let scope = push(element, None);
    node.test(cx, Some(&scope))
}

/// The search behind `chain`: whether elements with timestamps `stamps` (`None`: never matches)
/// can be picked in ascending timestamp order so that step `s` gets `counts[s]` elements `e` with
/// `ok(s, e, t)`, every element of a step strictly later than every one of the previous step.
/// Shared by [`Node::test`] and the sample's column kernels, so both answer alike.
///
/// Key (timestamp, position) orders elements totally, so ties within a step are picked one by
/// one; picking the earliest qualifying elements greedily is optimal, and is done by repeated
/// minimum search, so no sorting buffer is needed. One step: order is irrelevant, count matches.
pub fn chain_search(
    counts: &[u32],
    stamps: &[Option<i64>],
    mut ok: impl FnMut(usize, usize, i64) -> bool,
) -> bool {
    if let [count] = counts {
        let mut n = 0;
        for (index, stamp) in stamps.iter().enumerate() {
            if let Some(t) = stamp
                && ok(0, index, *t)
            {
                n += 1;
            }
            if n >= *count {
                break;
            }
        }
        return n >= *count;
    }
    let mut strict_after = i64::MIN;
    for (step, count) in counts.iter().enumerate() {
        let mut last: Option<(i64, usize)> = None;
        for _ in 0..*count {
            let mut best: Option<(i64, usize)> = None;
            for (key, stamp) in stamps.iter().enumerate() {
                let Some(t) = *stamp else { continue };
                let k = (t, key);
                let fresh = match last {
                    Some(l) => k > l,
                    None => t > strict_after,
                };
                if fresh && best.is_none_or(|b| k < b) && ok(step, key, t) {
                    best = Some(k);
                }
            }
            match best {
                Some(b) => last = Some(b),
                None => return false,
            }
        }
        if let Some(l) = last {
            strict_after = l.0;
        }
    }
    true
}

impl Node {
    /// Evaluates in boolean context.
    pub fn test<'a>(&'a self, cx: &Cx<'a>, sc: Sc<'_, 'a>) -> bool {
        match self {
            Node::And(a, b) => a.test(cx, sc) && b.test(cx, sc),
            Node::Or(a, b) => a.test(cx, sc) || b.test(cx, sc),
            Node::Not(a) => !a.test(cx, sc),
            Node::Cmp(op, a, b) => compare(cx, *op, &a.eval(cx, sc), &b.eval(cx, sc)),
            Node::Filter(src, pred) | Node::Select(src, pred) => {
                let source = src.eval(cx, sc);
                let mut hit = false;
                each(cx, &source, |x| {
                    hit = pred.test(cx, sc, x);
                    !hit
                });
                hit
            }
            Node::Quant(exists, src, filter, cond) => {
                let source = src.eval(cx, sc);
                let mut result = !*exists;
                each(cx, &source, |x| {
                    if filter.as_ref().is_some_and(|f| !f.test(cx, sc, x.clone())) {
                        return true;
                    }
                    let c = cond.test(cx, sc, x);
                    if *exists && c {
                        result = true;
                        return false;
                    }
                    if !*exists && !c {
                        result = false;
                        return false;
                    }
                    true
                });
                result
            }
            Node::Chain(events, ts, steps) => self.chain(cx, sc, events, ts, steps),
            Node::InSegment(id) => cx.view.in_segment(id),
            Node::Occurs(subject, c) => {
                let v = subject.eval(cx, sc);
                let mut hit = false;
                // A projected list of timestamps is existential, like comparisons.
                if is_multi(&v) {
                    each(cx, &v, |x| {
                        hit = x.as_instant().is_some_and(|t| cond_holds(c, t, cx, sc));
                        !hit
                    });
                    return hit;
                }
                v.as_instant().is_some_and(|t| cond_holds(c, t, cx, sc))
            }
            Node::If(c, a, b) => {
                if c.test(cx, sc) {
                    a.test(cx, sc)
                } else {
                    b.test(cx, sc)
                }
            }
            Node::Lambda1(body) => {
                let s = push(Val::Profile, sc);
                body.test(cx, Some(&s))
            }
            Node::Let(v, body) => {
                let s = push(v.eval(cx, sc), sc);
                body.test(cx, Some(&s))
            }
            other => truthy(&other.eval(cx, sc), cx),
        }
    }

    /// A chain is true when events can be picked in ascending timestamp order so that each step
    /// gets `count` events satisfying WHAT, WHEN and WHERE, and every event of a step is
    /// strictly later than every event of the previous step (pql.md §2.6 \[I\]). Picking the
    /// earliest qualifying events greedily is optimal for this, and is done by repeated
    /// minimum search, so no sorting buffer is allocated. Events without a parseable timestamp
    /// never match.
    fn chain<'a>(
        &'a self,
        cx: &Cx<'a>,
        sc: Sc<'_, 'a>,
        events: &'a Node,
        ts: &'a super::view::FieldPath,
        steps: &'a [CStep],
    ) -> bool {
        let source = events.eval(cx, sc);
        let stamp = |e: &Val<'a>| -> Option<i64> {
            match e {
                Val::Event(i) => cx.view.event_attribute(*i, ts).as_instant(),
                Val::Json(j) => walk_json(j, ts.segments()).as_instant(),
                _ => None,
            }
        };
        let step_ok = |step: &'a CStep, e: &Val<'a>, t: i64| -> bool {
            let s = push(e.clone(), sc);
            step.what.test(cx, Some(&s))
                && step
                    .when
                    .as_ref()
                    .is_none_or(|w| cond_holds(w, t, cx, Some(&s)))
                && step.where_.as_ref().is_none_or(|w| w.test(cx, Some(&s)))
        };
        let mut elements = Vec::new();
        each(cx, &source, |e| {
            elements.push(e);
            true
        });
        let stamps: Vec<Option<i64>> = elements.iter().map(stamp).collect();
        let counts: Vec<u32> = steps.iter().map(|step| step.count).collect();
        chain_search(&counts, &stamps, |step, index, t| {
            step_ok(&steps[step], &elements[index], t)
        })
    }

    /// Evaluates to a value.
    pub fn eval<'a>(&'a self, cx: &Cx<'a>, sc: Sc<'_, 'a>) -> Val<'a> {
        match self {
            Node::Const(k) => match k {
                Konst::Null => Val::Null,
                Konst::Bool(b) => Val::Bool(*b),
                Konst::Int(i) => Val::Int(*i),
                Konst::Double(d) => Val::Double(*d),
                Konst::Str(s) => Val::Str(s),
                Konst::Time(t) => Val::Time(*t),
                Konst::Json(j) => Val::Json(j),
            },
            Node::Root => Val::Profile,
            Node::Frame(d) => frame(sc, *d),
            Node::Events => Val::Events,
            Node::TimeWord(w) => Val::Time(match w {
                TimeWord::Now => cx.now,
                other => time::word_period(*other, cx.now).start,
            }),
            Node::Path(base, path) => {
                let b = base.eval(cx, sc);
                lookup(cx, b, path)
            }
            Node::Neg(a) => match a.eval(cx, sc) {
                Val::Int(i) => i.checked_neg().map_or(Val::Double(-(i as f64)), Val::Int),
                Val::Double(d) => Val::Double(-d),
                _ => Val::Null,
            },
            Node::In(v, arr, negate) => {
                let (v, a) = (v.eval(cx, sc), arr.eval(cx, sc));
                if v.is_null() || a.is_null() {
                    // `notIn` is false when either side is null (pql.md §4.5).
                    return Val::Bool(false);
                }
                let found = if is_multi(&v) {
                    let mut hit = false;
                    each(cx, &v, |x| {
                        hit = contains_val(cx, &a, &x) != *negate;
                        !hit
                    });
                    return Val::Bool(hit);
                } else {
                    contains_val(cx, &a, &v)
                };
                Val::Bool(found != *negate)
            }
            Node::Like(v, pat) => {
                let v = v.eval(cx, sc);
                let owned;
                let toks = match pat {
                    LikeArg::Fixed(t) => t.as_slice(),
                    LikeArg::Dynamic(n) => match n.eval(cx, sc).as_str() {
                        Some(p) => {
                            owned = like_tokens(p);
                            owned.as_slice()
                        }
                        None => return Val::Bool(false),
                    },
                };
                Val::Bool(any_str(cx, &v, |s| like_match(s, toks)))
            }
            Node::Arith(op, a, b) => arith(*op, &a.eval(cx, sc), &b.eval(cx, sc)),
            Node::StrTest {
                kind,
                negate,
                recv,
                arg,
                case,
                lower,
            } => {
                let r = recv.eval(cx, sc);
                let needle = arg.eval(cx, sc);
                let Some(n) = needle.as_str() else {
                    return Val::Bool(false);
                };
                let sensitive = match case {
                    None => true,
                    Some(c) => !matches!(c.eval(cx, sc), Val::Bool(false)),
                };
                Val::Bool(any_str(cx, &r, |s| {
                    let hit = if sensitive {
                        str_test_cs(*kind, s, n)
                    } else {
                        str_test_ci(*kind, s, n, lower.as_deref())
                    };
                    hit != *negate
                }))
            }
            Node::Matches(recv, rx) => {
                let r = recv.eval(cx, sc);
                let mut owned = None;
                match regex(rx, cx, sc, &mut owned) {
                    Some(re) => Val::Bool(any_str(cx, &r, |s| re.is_match(s))),
                    None => Val::Bool(false),
                }
            }
            Node::RegexGroup(recv, rx, group) => {
                let r = recv.eval(cx, sc);
                let mut owned = None;
                let Some(re) = regex(rx, cx, sc, &mut owned) else {
                    return Val::Null;
                };
                // One-argument form: group 1 when the pattern captures, else the whole match.
                let g = match group {
                    Some(g) => match g.eval(cx, sc) {
                        Val::Int(i) if i >= 0 => i as usize,
                        _ => return Val::Null,
                    },
                    None => usize::from(re.group_count() >= 1),
                };
                match r {
                    Val::Str(s) => re
                        .group(s, g)
                        .map_or(Val::Null, |(a, b)| Val::Str(&s[a..b])),
                    Val::OwnedStr(s) => re
                        .group(&s, g)
                        .map_or(Val::Null, |(a, b)| Val::OwnedStr(s[a..b].into())),
                    _ => Val::Null,
                }
            }
            Node::Agg {
                func,
                source,
                filter,
                value,
            } => {
                let src = source.eval(cx, sc);
                aggregate(cx, sc, *func, &src, filter.as_deref(), value.as_deref())
            }
            Node::Filter(src, pred) | Node::Select(src, pred) => {
                let source = src.eval(cx, sc);
                let mut out = Vec::new();
                each(cx, &source, |x| {
                    if pred.test(cx, sc, x.clone()) {
                        out.push(x);
                    }
                    true
                });
                Val::List(Rc::new(out))
            }
            Node::Map(src, f) => {
                let source = src.eval(cx, sc);
                let mut out = Vec::new();
                each_entry(cx, &source, |k, x| {
                    out.push(f.call(cx, sc, k, x));
                    true
                });
                // `groupBy(...).map((K, G) => mapEntry(...))` builds a map (computed attributes).
                if !out.is_empty() && out.iter().all(|v| matches!(v, Val::Map(_))) {
                    let mut entries = Vec::new();
                    for v in out {
                        if let Val::Map(m) = v {
                            entries.extend(m.iter().cloned());
                        }
                    }
                    return Val::Map(Rc::new(entries));
                }
                Val::List(Rc::new(out))
            }
            Node::GroupBy(src, f) => {
                let source = src.eval(cx, sc);
                let mut groups: Vec<(Val<'a>, Vec<Val<'a>>)> = Vec::new();
                each(cx, &source, |x| {
                    let k = f.call(cx, sc, Val::Null, x.clone());
                    match groups.iter_mut().find(|(g, _)| {
                        val_eq(cx, g, &k) == Some(true) || (g.is_null() && k.is_null())
                    }) {
                        Some((_, members)) => members.push(x),
                        None => groups.push((k, vec![x])),
                    }
                    true
                });
                Val::Map(Rc::new(
                    groups
                        .into_iter()
                        .map(|(k, v)| (k, Val::List(Rc::new(v))))
                        .collect(),
                ))
            }
            Node::TopN(src, f, n, descending) => {
                let source = src.eval(cx, sc);
                let Val::Int(n) = n.eval(cx, sc) else {
                    return Val::Null;
                };
                let mut keyed: Vec<(Val<'a>, Val<'a>)> = Vec::new();
                each(cx, &source, |x| {
                    let k = f.call(cx, sc, Val::Null, x.clone());
                    // Elements without a comparable key are left out of the ranking.
                    if !k.is_null() {
                        keyed.push((k, x));
                    }
                    true
                });
                // Stable sort: ties keep their original order.
                keyed.sort_by(|(a, _), (b, _)| {
                    let o = val_cmp(a, b).unwrap_or(Ordering::Equal);
                    if *descending { o.reverse() } else { o }
                });
                let n = usize::try_from(n.max(0)).unwrap_or(0);
                Val::List(Rc::new(keyed.into_iter().take(n).map(|(_, x)| x).collect()))
            }
            Node::Quant(..)
            | Node::Chain(..)
            | Node::InSegment(_)
            | Node::Occurs(..)
            | Node::And(..)
            | Node::Or(..)
            | Node::Not(_)
            | Node::Cmp(..) => Val::Bool(self.test(cx, sc)),
            Node::Let(v, body) => {
                let s = push(v.eval(cx, sc), sc);
                body.eval(cx, Some(&s))
            }
            Node::Lambda1(body) => {
                let s = push(Val::Profile, sc);
                body.eval(cx, Some(&s))
            }
            Node::Method(m, recv, args) => method(cx, sc, *m, recv, args),
            Node::If(c, a, b) => {
                if c.test(cx, sc) {
                    a.eval(cx, sc)
                } else {
                    b.eval(cx, sc)
                }
            }
            Node::Clock(c) => {
                let (y, m, d) = time::civil_from_days(cx.now.div_euclid(DAY_MS));
                Val::Int(match c {
                    Clock::Month => i64::from(m),
                    Clock::Year => y,
                    Clock::DayOfMonth => i64::from(d),
                })
            }
            Node::Array(items) => Val::List(Rc::new(
                items
                    .iter()
                    .map(|i| materialize(cx, i.eval(cx, sc)))
                    .collect(),
            )),
            Node::Object(entries) => Val::Map(Rc::new(
                entries
                    .iter()
                    .map(|(k, v)| (Val::Str(k), materialize(cx, v.eval(cx, sc))))
                    .collect(),
            )),
            Node::MapEntry(k, v) => Val::Map(Rc::new(vec![(k.eval(cx, sc), v.eval(cx, sc))])),
        }
    }
}

/// Applies `f` to a string value, or existentially to the strings of a list. An instant is seen
/// as its canonical text (`YYYY-MM-DDTHH:MM:SS.mmmZ`), so a date-time field gives the same answer
/// whether the store holds it as text or, like the columnar sample, as an instant. Other
/// non-strings are missing for string predicates.
fn any_str<'a>(cx: &Cx<'a>, v: &Val<'a>, mut f: impl FnMut(&str) -> bool) -> bool {
    let mut test = |x: &Val<'_>| match x {
        Val::Time(t) => f(&time::format_instant_millis(*t)),
        other => other.as_str().is_some_and(&mut f),
    };
    if is_multi(v) {
        let mut hit = false;
        each(cx, v, |x| {
            hit = test(&x);
            !hit
        });
        return hit;
    }
    test(v)
}

fn lookup<'a>(cx: &Cx<'a>, base: Val<'a>, path: &super::view::FieldPath) -> Val<'a> {
    match base {
        Val::Profile => cx.view.attribute(path),
        Val::Event(i) => cx.view.event_attribute(i, path),
        Val::Json(j) => walk_json(j, path.segments()),
        Val::Events => {
            let mut out = Vec::new();
            for i in 0..cx.view.event_count() {
                push_flat(&mut out, cx.view.event_attribute(i, path));
            }
            Val::List(Rc::new(out))
        }
        Val::List(items) => {
            let mut out = Vec::new();
            for it in items.iter() {
                push_flat(&mut out, lookup(cx, it.clone(), path));
            }
            Val::List(Rc::new(out))
        }
        Val::Map(entries) => {
            let (first, rest) = path.segments().split_first().expect("paths are non-empty");
            let hit = entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(&**first))
                .map(|(_, v)| v.clone());
            match (hit, rest.is_empty()) {
                (None, _) => Val::Null,
                (Some(v), true) => v,
                (Some(v), false) => {
                    let sub = super::view::FieldPath::new(
                        path.id(),
                        rest.iter().map(|s| s.to_string()).collect(),
                    );
                    lookup(cx, v, &sub)
                }
            }
        }
        _ => Val::Null,
    }
}

fn aggregate<'a>(
    cx: &Cx<'a>,
    sc: Sc<'_, 'a>,
    func: Agg,
    src: &Val<'a>,
    filter: Option<&'a ElemFn>,
    value: Option<&'a ElemFn>,
) -> Val<'a> {
    let mut count: i64 = 0;
    let mut int_sum: Option<i64> = Some(0);
    let mut sum = 0.0;
    let mut best: Option<Val<'a>> = None;
    each(cx, src, |x| {
        if let Some(f) = filter
            && !f.test(cx, sc, x.clone())
        {
            return true;
        }
        if func == Agg::Count {
            count += 1;
            return true;
        }
        let v = match value {
            Some(f) => f.call(cx, sc, Val::Null, x),
            None => x,
        };
        match func {
            Agg::Sum | Agg::Average => {
                // Non-numeric and missing values are skipped.
                if let Some(n) = num(&v) {
                    count += 1;
                    sum += n;
                    int_sum = match (int_sum, &v) {
                        (Some(s), Val::Int(i)) => s.checked_add(*i),
                        _ => None,
                    };
                }
            }
            _ => {
                if !v.is_null() {
                    let replace = match &best {
                        None => true,
                        Some(b) => {
                            let o = val_cmp(&v, b);
                            if func == Agg::Min {
                                o == Some(Ordering::Less)
                            } else {
                                o == Some(Ordering::Greater)
                            }
                        }
                    };
                    if replace {
                        best = Some(v);
                    }
                }
            }
        }
        true
    });
    match func {
        Agg::Count => Val::Int(count),
        // Sum of nothing is 0; integer sums stay integers (pql.md §3 \[I\]).
        Agg::Sum => int_sum.map_or(Val::Double(sum), Val::Int),
        Agg::Average if count == 0 => Val::Null,
        Agg::Average => Val::Double(sum / count as f64),
        _ => best.unwrap_or(Val::Null),
    }
}

fn method<'a>(cx: &Cx<'a>, sc: Sc<'_, 'a>, m: Method, recv: &'a Node, args: &'a [Node]) -> Val<'a> {
    let r = recv.eval(cx, sc);
    let arg = |i: usize| args.get(i).map_or(Val::Null, |a| a.eval(cx, sc));
    match m {
        Method::IsNull => Val::Bool(r.is_null()),
        Method::IsNotNull => Val::Bool(!r.is_null()),
        Method::GetMonth | Method::GetYear | Method::GetDayOfMonth => date_part(&r, m),
        Method::Head => {
            let mut first = Val::Null;
            each(cx, &r, |x| {
                first = x;
                false
            });
            first
        }
        Method::Keys => {
            let mut out = Vec::new();
            each_entry(cx, &r, |k, _| {
                out.push(k);
                true
            });
            Val::List(Rc::new(out))
        }
        Method::Values => Val::List(Rc::new(to_vec(cx, &r))),
        Method::Get => {
            let key = arg(0);
            let Some(k) = key.as_str() else {
                return Val::Null;
            };
            match materialize(cx, r) {
                Val::Json(serde_json::Value::Object(map)) => {
                    map.get(k).map_or(Val::Null, Val::from_json)
                }
                Val::Map(entries) => entries
                    .iter()
                    .find(|(ek, _)| ek.as_str() == Some(k))
                    .map_or(Val::Null, |(_, v)| v.clone()),
                _ => Val::Null,
            }
        }
        Method::Includes => {
            let x = arg(0);
            if r.is_null() || x.is_null() {
                return Val::Bool(false);
            }
            Val::Bool(contains_val(cx, &r, &x))
        }
        Method::Distinct => {
            let mut out: Vec<Val<'a>> = Vec::new();
            each(cx, &r, |x| {
                if !out.iter().any(|y| val_eq(cx, y, &x) == Some(true)) {
                    out.push(x);
                }
                true
            });
            Val::List(Rc::new(out))
        }
        Method::Intersects | Method::Intersection | Method::SubsetOf | Method::SupersetOf => {
            let other = arg(0);
            if r.is_null() || other.is_null() {
                return if m == Method::Intersection {
                    Val::Null
                } else {
                    Val::Bool(false)
                };
            }
            match m {
                Method::Intersects => {
                    let mut hit = false;
                    each(cx, &r, |x| {
                        hit = contains_val(cx, &other, &x);
                        !hit
                    });
                    Val::Bool(hit)
                }
                // Keeps the receiver's order and drops duplicates (pql.md §4.5 \[I\]).
                Method::Intersection => {
                    let mut out: Vec<Val<'a>> = Vec::new();
                    each(cx, &r, |x| {
                        if contains_val(cx, &other, &x)
                            && !out.iter().any(|y| val_eq(cx, y, &x) == Some(true))
                        {
                            out.push(x);
                        }
                        true
                    });
                    Val::List(Rc::new(out))
                }
                Method::SubsetOf => {
                    let mut all = true;
                    each(cx, &r, |x| {
                        all = contains_val(cx, &other, &x);
                        all
                    });
                    Val::Bool(all)
                }
                _ => {
                    let mut all = true;
                    each(cx, &other, |x| {
                        all = contains_val(cx, &r, &x);
                        all
                    });
                    Val::Bool(all)
                }
            }
        }
    }
}

/// Converts a runtime value to JSON for [`super::CompiledQuery::evaluate`].
pub fn to_json<'a>(cx: &Cx<'a>, v: &Val<'a>) -> Result<serde_json::Value, EvalError> {
    use serde_json::Value as J;
    Ok(match v {
        Val::Null => J::Null,
        Val::Bool(b) => J::Bool(*b),
        Val::Int(i) => J::from(*i),
        Val::Double(d) => J::Number(
            serde_json::Number::from_f64(*d)
                .ok_or_else(|| EvalError::Unrepresentable(format!("{d}")))?,
        ),
        Val::Str(s) => J::String((*s).to_string()),
        Val::OwnedStr(s) => J::String(s.to_string()),
        Val::Time(t) => J::String(time::format_instant(*t)),
        Val::Json(j) => (*j).clone(),
        Val::List(items) => J::Array(
            items
                .iter()
                .map(|i| to_json(cx, i))
                .collect::<Result<_, _>>()?,
        ),
        Val::Map(entries) => {
            let mut m = serde_json::Map::new();
            for (k, val) in entries.iter() {
                let key = match k {
                    Val::Str(s) => (*s).to_string(),
                    Val::OwnedStr(s) => s.to_string(),
                    other => match to_json(cx, other)? {
                        J::String(s) => s,
                        j => j.to_string(),
                    },
                };
                m.insert(key, to_json(cx, val)?);
            }
            J::Object(m)
        }
        Val::Profile => to_json(cx, &cx.view.profile_value())?,
        Val::Event(i) => to_json(cx, &cx.view.event_value(*i))?,
        Val::Events => J::Array(
            (0..cx.view.event_count())
                .map(|i| to_json(cx, &cx.view.event_value(i)))
                .collect::<Result<_, _>>()?,
        ),
    })
}
