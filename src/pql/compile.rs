//! Type checking and compilation of an [`Expr`] into the evaluation tree [`Node`].
//!
//! Checking and code generation are one pass: every node is compiled together with its static
//! [`Ty`], and mismatches are recorded as positioned errors while compilation continues, so one
//! `check` reports every problem at once.
//!
//! Name resolution happens here too. Element contexts (filters, per-element method arguments,
//! chain steps) and named binders (`let`, quantifiers, `select`, aggregates, lambdas) push a
//! compile-time frame; references become "walk `d` frames up" ([`Node::Frame`]), mirrored at
//! run time by a linked list of frames on the stack, so no lookup by name and no allocation
//! happens during evaluation.

use std::collections::HashMap;

use super::ast::*;
use super::error::{PqlError, PqlErrors, suggest};
use super::functions::{self, FUNCTIONS, Style, Ty};
use super::regex::Regex;
use super::time;
use super::view::FieldPath;

/// A compile-time constant.
#[derive(Debug, Clone, PartialEq)]
pub enum Konst {
    /// `null`
    Null,
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Double.
    Double(f64),
    /// String.
    Str(Box<str>),
    /// Instant (epoch ms), from `date(...)`.
    Time(i64),
    /// Constant array of scalars, kept as JSON so that evaluating it borrows instead of
    /// allocating.
    Json(serde_json::Value),
}

/// String predicates, all sharing one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrKind {
    /// `startsWith`, `doesNotStartWith`
    Prefix,
    /// `endsWith`, `doesNotEndWith`
    Suffix,
    /// `contains`, `doesNotContain`
    Contains,
    /// `equals`, `notEqualTo`
    Equals,
}

/// Aggregates (methods and comprehensions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    /// Number of elements.
    Count,
    /// Sum.
    Sum,
    /// Mean.
    Average,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
}

/// Array, map, object and date methods without a dedicated node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `a.intersects(b)`
    Intersects,
    /// `a.intersection(b)`
    Intersection,
    /// `a.subsetOf(b)`
    SubsetOf,
    /// `a.supersetOf(b)`
    SupersetOf,
    /// `a.includes(x)`
    Includes,
    /// `a.distinct()`
    Distinct,
    /// `a.head()`
    Head,
    /// `m.get(k)`
    Get,
    /// `m.keys()`
    Keys,
    /// `m.values()`
    Values,
    /// `x.isNull()`
    IsNull,
    /// `x.isNotNull()`
    IsNotNull,
    /// `t.getMonth()`
    GetMonth,
    /// `t.getYear()`
    GetYear,
    /// `t.getDayOfMonth()`
    GetDayOfMonth,
}

/// Functions of the evaluation instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// `currentMonth()`
    Month,
    /// `currentYear()`
    Year,
    /// `currentDayOfMonth()`
    DayOfMonth,
}

/// A per-element argument: evaluated once per element with frames pushed for it.
/// `arity` 0 is the implicit element context, 1 a named lambda parameter (both push the
/// element), 2 a `(K, G) =>` lambda (pushes key then value).
#[derive(Debug, Clone, PartialEq)]
pub struct ElemFn {
    /// Frames pushed per element.
    pub arity: u8,
    /// The body.
    pub body: Node,
}

/// A regex known at compile time or computed.
#[derive(Debug, Clone, PartialEq)]
pub enum RegexArg {
    /// Literal pattern, compiled once.
    Fixed(Regex),
    /// Pattern from an expression, compiled per evaluation.
    Dynamic(Box<Node>),
}

/// One `like` pattern token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LikeTok {
    /// A literal character.
    Lit(char),
    /// `_`
    One,
    /// `%`
    Many,
}

/// A `like` pattern known at compile time or computed.
#[derive(Debug, Clone, PartialEq)]
pub enum LikeArg {
    /// Literal, tokenized once.
    Fixed(Vec<LikeTok>),
    /// Computed.
    Dynamic(Box<Node>),
}

/// Tokenizes a `like` pattern.
pub fn like_tokens(p: &str) -> Vec<LikeTok> {
    p.chars()
        .map(|c| match c {
            '%' => LikeTok::Many,
            '_' => LikeTok::One,
            c => LikeTok::Lit(c),
        })
        .collect()
}

/// A reference time of an `occurs`.
#[derive(Debug, Clone, PartialEq)]
pub enum CRef {
    /// `now`, `today`, ...
    Word(TimeWord),
    /// `this month`, ...
    Relative(Anchor, TimeUnit),
    /// `date(y, m, d)`: the whole UTC day starting at this instant.
    Day(i64),
    /// A timestamp-valued expression: an instant.
    Expr(Box<Node>),
}

/// A compiled `occurs` condition.
#[derive(Debug, Clone, PartialEq)]
pub enum CCond {
    /// Distance form.
    Distance(CmpOp, u32, TimeUnit, Direction, CRef),
    /// Direction form.
    Direction(Direction, CRef),
    /// On form.
    On(CRef),
    /// Between form.
    Between(CRef, CRef),
}

/// Distinct `occurs` conditions whose time window is cached per evaluation.
pub const MAX_WINDOWS: usize = 8;

/// A compiled `occurs` condition, with the slot of its cached time window when the window
/// depends only on the evaluation instant (no attribute references), so that testing many
/// events is two integer comparisons each.
#[derive(Debug, Clone, PartialEq)]
pub struct Cond {
    /// The condition.
    pub kind: CCond,
    /// Index into the per-evaluation window cache, if cacheable.
    pub slot: Option<usize>,
}

/// A compiled chain step.
#[derive(Debug, Clone, PartialEq)]
pub struct CStep {
    /// Event predicate.
    pub what: Node,
    /// Time condition on the event timestamp.
    pub when: Option<Cond>,
    /// Minimum matches.
    pub count: u32,
    /// Extra predicate.
    pub where_: Option<Node>,
}

/// The evaluation tree. See [`super::eval`] for the semantics of each node.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Constant.
    Const(Konst),
    /// The profile (parameter 1).
    Root,
    /// The value of the frame `d` levels up.
    Frame(usize),
    /// `xEvent`.
    Events,
    /// `now`, `today`, ... as an instant.
    TimeWord(TimeWord),
    /// Path lookup on a base value.
    Path(Box<Node>, FieldPath),
    /// `not`.
    Not(Box<Node>),
    /// Unary minus.
    Neg(Box<Node>),
    /// `and` (short-circuit).
    And(Box<Node>, Box<Node>),
    /// `or` (short-circuit).
    Or(Box<Node>, Box<Node>),
    /// Comparison.
    Cmp(CmpOp, Box<Node>, Box<Node>),
    /// `in` / `notIn` (`negate`).
    In(Box<Node>, Box<Node>, bool),
    /// `like`.
    Like(Box<Node>, LikeArg),
    /// Arithmetic.
    Arith(BinOp, Box<Node>, Box<Node>),
    /// String predicate: kind, negated, receiver, needle, case-sensitivity argument
    /// (`None` = case-sensitive), needle lower-cased at compile time when constant.
    StrTest {
        /// Which test.
        kind: StrKind,
        /// `doesNot*` / `notEqualTo`.
        negate: bool,
        /// Receiver.
        recv: Box<Node>,
        /// Needle.
        arg: Box<Node>,
        /// Case-sensitivity flag (`true` = sensitive).
        case: Option<Box<Node>>,
        /// Lower-cased constant needle, for case-insensitive tests without allocation.
        lower: Option<Box<str>>,
    },
    /// `matches`.
    Matches(Box<Node>, RegexArg),
    /// `regexGroup`: receiver, regex, group (None = the default group).
    RegexGroup(Box<Node>, RegexArg, Option<Box<Node>>),
    /// Aggregate over a source, optionally filtered, optionally mapped.
    Agg {
        /// Which aggregate.
        func: Agg,
        /// Source array.
        source: Box<Node>,
        /// Element filter.
        filter: Option<Box<ElemFn>>,
        /// Element value.
        value: Option<Box<ElemFn>>,
    },
    /// `a[pred]`, `a.filter(pred)`.
    Filter(Box<Node>, Box<ElemFn>),
    /// `a.map(f)`.
    Map(Box<Node>, Box<ElemFn>),
    /// `a.groupBy(f)`.
    GroupBy(Box<Node>, Box<ElemFn>),
    /// `a.topN(f, n)` (`descending`) / `a.bottomN(f, n)`.
    TopN(Box<Node>, Box<ElemFn>, Box<Node>, bool),
    /// Quantifier: exists?, source, per-element restriction, per-element condition.
    Quant(bool, Box<Node>, Option<Box<ElemFn>>, Box<ElemFn>),
    /// `select X from A where C`.
    Select(Box<Node>, Box<ElemFn>),
    /// `let`: value, body evaluated with one frame pushed.
    Let(Box<Node>, Box<Node>),
    /// Top-level `(P) => body`: body evaluated with the profile pushed.
    Lambda1(Box<Node>),
    /// Other methods: which, receiver, arguments.
    Method(Method, Box<Node>, Vec<Node>),
    /// `if(c, a, b)`.
    If(Box<Node>, Box<Node>, Box<Node>),
    /// `occurs`.
    Occurs(Box<Node>, Cond),
    /// `chain(events, ts, steps)`.
    Chain(Box<Node>, FieldPath, Vec<CStep>),
    /// `inSegment("id")`.
    InSegment(Box<str>),
    /// `currentMonth()` ...
    Clock(Clock),
    /// Array literal with computed items.
    Array(Vec<Node>),
    /// Object literal.
    Object(Vec<(Box<str>, Node)>),
    /// `mapEntry(k, v)`.
    MapEntry(Box<Node>, Box<Node>),
}

/// A compile-time frame.
#[derive(Debug, Clone, PartialEq)]
enum Frame {
    Element,
    Var(String),
}

/// Output of [`compile_expr`].
pub struct Compiled {
    /// The tree.
    pub root: Node,
    /// Static type of the result.
    pub ty: Ty,
    /// Interned paths, indexed by id.
    pub paths: Vec<FieldPath>,
    /// `inSegment` ids in order of first use.
    pub segments: Vec<String>,
}

/// Checks and compiles `expr`. `source` is the text the spans refer to (for line/column).
pub fn compile_expr(expr: &Expr, source: &str) -> Result<Compiled, PqlErrors> {
    let mut c = Compiler {
        src: source,
        errors: Vec::new(),
        frames: Vec::new(),
        paths: Vec::new(),
        interned: HashMap::new(),
        segments: Vec::new(),
        windows: 0,
    };
    let (root, ty) = match &expr.kind {
        ExprKind::Lambda(params, body) => {
            if params.len() != 1 {
                c.err(
                    "bad_lambda",
                    "a query takes exactly one parameter, the profile",
                    expr.span,
                    "`(Profile) => ...`",
                );
            }
            c.frames
                .push(Frame::Var(params.first().cloned().unwrap_or_default()));
            let (b, t) = c.compile(body);
            (Node::Lambda1(Box::new(b)), t)
        }
        _ => c.compile(expr),
    };
    // A `select` at the root is a segment predicate: true when the selection is non-empty
    // (pql.md §2.5 \[I\]). Nested selects keep their list value.
    let (root, ty) = match root {
        Node::Select(source, pred) => (Node::Quant(true, source, None, pred), Ty::Bool),
        other => (other, ty),
    };
    if c.errors.is_empty() {
        Ok(Compiled {
            root,
            ty,
            paths: c.paths,
            segments: c.segments,
        })
    } else {
        c.errors.sort_by_key(|e| e.span.start);
        Err(PqlErrors(c.errors))
    }
}

struct Compiler<'s> {
    src: &'s str,
    errors: Vec<PqlError>,
    frames: Vec<Frame>,
    paths: Vec<FieldPath>,
    interned: HashMap<Vec<String>, usize>,
    segments: Vec<String>,
    windows: usize,
}

fn bx(n: Node) -> Box<Node> {
    Box::new(n)
}

impl Compiler<'_> {
    fn err(&mut self, code: &'static str, msg: impl Into<String>, span: Span, expected: &str) {
        self.errors
            .push(PqlError::new(code, msg, span, self.src).expected(expected));
    }

    fn expect_ty(&mut self, got: Ty, want: Ty, span: Span, what: &str) {
        if !got.fits(want) {
            self.errors.push(
                PqlError::new(
                    "type_mismatch",
                    format!("{what} must be a {}, found a {}", want.name(), got.name()),
                    span,
                    self.src,
                )
                .expected(format!("a {} expression", want.name())),
            );
        }
    }

    fn intern(&mut self, segs: Vec<String>) -> FieldPath {
        let id = match self.interned.get(&segs) {
            Some(&id) => id,
            None => {
                let id = self.paths.len();
                self.paths.push(FieldPath::new(id as u32, segs.clone()));
                self.interned.insert(segs, id);
                id
            }
        };
        self.paths[id].clone()
    }

    fn with_frames<T>(&mut self, frames: Vec<Frame>, f: impl FnOnce(&mut Self) -> T) -> T {
        let n = self.frames.len();
        self.frames.extend(frames);
        let r = f(self);
        self.frames.truncate(n);
        r
    }

    /// Compiles a per-element argument. A lambda names the element (or key and value).
    fn elem_fn(&mut self, e: &Expr) -> (ElemFn, Ty) {
        if let ExprKind::Lambda(params, body) = &e.kind {
            if params.len() > 2 {
                self.err(
                    "bad_lambda",
                    "a per-element lambda takes one or two parameters",
                    e.span,
                    "`(X) => ...` or `(K, G) => ...`",
                );
            }
            let frames = params
                .iter()
                .take(2)
                .map(|p| Frame::Var(p.clone()))
                .collect::<Vec<_>>();
            let arity = frames.len() as u8;
            let (body, ty) = self.with_frames(frames, |c| c.compile(body));
            return (ElemFn { arity, body }, ty);
        }
        let (body, ty) = self.with_frames(vec![Frame::Element], |c| c.compile(e));
        (ElemFn { arity: 0, body }, ty)
    }

    fn named_fn(&mut self, var: &str, e: &Expr) -> (ElemFn, Ty) {
        let (body, ty) = self.with_frames(vec![Frame::Var(var.to_string())], |c| c.compile(e));
        (ElemFn { arity: 1, body }, ty)
    }

    fn predicate(&mut self, e: &Expr, what: &str) -> Node {
        let (n, t) = self.compile(e);
        self.expect_bool(t, e.span, what);
        n
    }

    fn expect_bool(&mut self, t: Ty, span: Span, what: &str) {
        // Arrays are accepted in boolean position: a filter or select is true when non-empty.
        if !matches!(t, Ty::Bool | Ty::Any | Ty::Null | Ty::Array) {
            self.expect_ty(t, Ty::Bool, span, what);
        }
    }

    fn context(&mut self, up: u32, span: Span) -> Node {
        let mut seen = 0;
        for (d, f) in self.frames.iter().rev().enumerate() {
            if *f == Frame::Element {
                if seen == up {
                    return Node::Frame(d);
                }
                seen += 1;
            }
        }
        if seen < up {
            self.err(
                "bad_up_reference",
                format!(
                    "`{}` climbs above the profile: only {seen} enclosing filter level(s)",
                    "^".repeat(up as usize)
                ),
                span,
                &format!("at most {seen} `^`"),
            );
        }
        Node::Root
    }

    fn compile(&mut self, e: &Expr) -> (Node, Ty) {
        let span = e.span;
        match &e.kind {
            ExprKind::Lit(l) => match l {
                Literal::Str(s) => (Node::Const(Konst::Str(s.as_str().into())), Ty::Str),
                Literal::Int(i) => (Node::Const(Konst::Int(*i)), Ty::Number),
                Literal::Double(d) => (Node::Const(Konst::Double(*d)), Ty::Number),
                Literal::Bool(b) => (Node::Const(Konst::Bool(*b)), Ty::Bool),
                Literal::Null => (Node::Const(Konst::Null), Ty::Null),
            },
            ExprKind::Array(items) => {
                let compiled: Vec<(Node, Ty)> = items.iter().map(|i| self.compile(i)).collect();
                let consts: Option<Vec<serde_json::Value>> = compiled
                    .iter()
                    .map(|(n, _)| match n {
                        Node::Const(Konst::Str(s)) => Some(serde_json::Value::from(&**s)),
                        Node::Const(Konst::Int(i)) => Some(serde_json::Value::from(*i)),
                        Node::Const(Konst::Double(d)) => {
                            serde_json::Number::from_f64(*d).map(serde_json::Value::Number)
                        }
                        Node::Const(Konst::Bool(b)) => Some(serde_json::Value::Bool(*b)),
                        _ => None,
                    })
                    .collect();
                match consts {
                    Some(vals) => (
                        Node::Const(Konst::Json(serde_json::Value::Array(vals))),
                        Ty::Array,
                    ),
                    None => (
                        Node::Array(compiled.into_iter().map(|(n, _)| n).collect()),
                        Ty::Array,
                    ),
                }
            }
            ExprKind::Object(entries) => {
                let nodes = entries
                    .iter()
                    .map(|(k, v)| (k.as_str().into(), self.compile(v).0))
                    .collect();
                (Node::Object(nodes), Ty::Object)
            }
            ExprKind::Param(n) => {
                if *n != 1 {
                    self.err(
                        "unknown_parameter",
                        format!(
                            "`${n}` is not bound: a query has one parameter, `$1` (the profile)"
                        ),
                        span,
                        "`$1`",
                    );
                }
                (Node::Root, Ty::Any)
            }
            ExprKind::Context(up) => (self.context(*up, span), Ty::Any),
            ExprKind::Var(name) => match self
                .frames
                .iter()
                .rev()
                .position(|f| *f == Frame::Var(name.clone()))
            {
                Some(d) => (Node::Frame(d), Ty::Any),
                None => {
                    // Only reachable for hand-written pql/json with a dangling variable.
                    self.err(
                        "unknown_variable",
                        format!("variable `{name}` is not bound here"),
                        span,
                        "a bound variable",
                    );
                    (Node::Const(Konst::Null), Ty::Any)
                }
            },
            ExprKind::XEvent => (Node::Events, Ty::Array),
            ExprKind::Time(w) => (Node::TimeWord(*w), Ty::Time),
            ExprKind::Field { .. } => self.field_chain(e),
            ExprKind::Unary(UnOp::Not, x) => {
                let n = self.predicate(x, "the operand of `not`");
                (Node::Not(bx(n)), Ty::Bool)
            }
            ExprKind::Unary(UnOp::Neg, x) => {
                let (n, t) = self.compile(x);
                self.expect_ty(t, Ty::Number, x.span, "the operand of unary `-`");
                (Node::Neg(bx(n)), Ty::Number)
            }
            ExprKind::Binary(op, a, b) => self.binary(*op, a, b, span),
            ExprKind::Occurs(subject, cond) => {
                let (s, t) = self.compile(subject);
                self.expect_ty(t, Ty::Time, subject.span, "the subject of `occurs`");
                let c = self.cond(cond);
                (Node::Occurs(bx(s), c), Ty::Bool)
            }
            ExprKind::Filter(arr, pred) => {
                let (a, t) = self.compile(arr);
                self.expect_array(t, arr.span, "the filtered value");
                let (f, pt) = self.elem_fn(pred);
                self.expect_bool(pt, pred.span, "a filter condition");
                (Node::Filter(bx(a), Box::new(f)), Ty::Array)
            }
            ExprKind::Lambda(..) => {
                self.err(
                    "misplaced_lambda",
                    "a lambda is only allowed at the start of a query or as the argument of a per-element method",
                    span,
                    "an expression",
                );
                (Node::Const(Konst::Null), Ty::Any)
            }
            ExprKind::Let(name, value, body) => {
                let (v, _) = self.compile(value);
                let (b, t) = self.with_frames(vec![Frame::Var(name.clone())], |c| c.compile(body));
                (Node::Let(bx(v), bx(b)), t)
            }
            ExprKind::Quant(q, binders, cond) => (
                self.quant(*q == Quantifier::Exists, binders, cond.as_deref()),
                Ty::Bool,
            ),
            ExprKind::Select(var, source, cond) => {
                let (s, t) = self.compile(source);
                self.expect_array(t, source.span, "the `from` source");
                let (f, ct) = self.named_fn(var, cond);
                self.expect_bool(ct, cond.span, "the `where` condition");
                (Node::Select(bx(s), Box::new(f)), Ty::Array)
            }
            ExprKind::Aggregate {
                func,
                value,
                var,
                source,
                cond,
            } => {
                let (s, t) = self.compile(source);
                self.expect_array(t, source.span, "the `from` source");
                let (v, vt) = self.named_fn(var, value);
                if matches!(func, AggFn::Sum | AggFn::Average) {
                    self.expect_ty(vt, Ty::Number, value.span, "the aggregated value");
                }
                let filter = cond.as_ref().map(|c| {
                    let (f, ct) = self.named_fn(var, c);
                    self.expect_bool(ct, c.span, "the `where` condition");
                    Box::new(f)
                });
                let agg = match func {
                    AggFn::Sum => Agg::Sum,
                    AggFn::Count => Agg::Count,
                    AggFn::Min => Agg::Min,
                    AggFn::Max => Agg::Max,
                    AggFn::Average => Agg::Average,
                };
                let value = (agg != Agg::Count).then(|| Box::new(v));
                let ty = if matches!(agg, Agg::Min | Agg::Max) {
                    Ty::Any
                } else {
                    Ty::Number
                };
                (
                    Node::Agg {
                        func: agg,
                        source: bx(s),
                        filter,
                        value,
                    },
                    ty,
                )
            }
            ExprKind::Chain {
                events,
                ts_field,
                steps,
            } => {
                let (ev, t) = self.compile(events);
                self.expect_array(t, events.span, "the first argument of `chain`");
                let ts = self.intern(vec![ts_field.clone()]);
                let steps = steps
                    .iter()
                    .map(|s| {
                        self.with_frames(vec![Frame::Element], |c| CStep {
                            what: c.predicate(&s.what, "WHAT(...)"),
                            when: s.when.as_ref().map(|w| c.cond(w)),
                            count: s.count.unwrap_or(1),
                            where_: s.where_.as_ref().map(|w| c.predicate(w, "WHERE(...)")),
                        })
                    })
                    .collect();
                (Node::Chain(bx(ev), ts, steps), Ty::Bool)
            }
            ExprKind::Call {
                name,
                name_span,
                receiver,
                args,
            } => self.call(name, *name_span, receiver.as_deref(), args, span),
        }
    }

    fn expect_array(&mut self, t: Ty, span: Span, what: &str) {
        if !matches!(t, Ty::Array | Ty::Map | Ty::Any | Ty::Null) {
            self.expect_ty(t, Ty::Array, span, what);
        }
    }

    fn field_chain(&mut self, e: &Expr) -> (Node, Ty) {
        let mut segs = Vec::new();
        let mut cur = e;
        while let ExprKind::Field { object, name } = &cur.kind {
            segs.push(name.clone());
            cur = object;
        }
        segs.reverse();
        let (base, t) = self.compile(cur);
        if matches!(t, Ty::Number | Ty::Bool | Ty::Str | Ty::Time) {
            self.err(
                "type_mismatch",
                format!("cannot read field `{}` of a {}", segs[0], t.name()),
                e.span,
                "an object, array or attribute",
            );
        }
        let path = self.intern(segs);
        (Node::Path(bx(base), path), Ty::Any)
    }

    fn binary(&mut self, op: BinOp, a: &Expr, b: &Expr, span: Span) -> (Node, Ty) {
        let (na, ta) = self.compile(a);
        let (nb, tb) = self.compile(b);
        let sym = op.symbol();
        match op {
            BinOp::And | BinOp::Or => {
                self.expect_bool(ta, a.span, &format!("the left operand of `{sym}`"));
                self.expect_bool(tb, b.span, &format!("the right operand of `{sym}`"));
                let n = if op == BinOp::And {
                    Node::And(bx(na), bx(nb))
                } else {
                    Node::Or(bx(na), bx(nb))
                };
                (n, Ty::Bool)
            }
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let ordering = !matches!(op, BinOp::Eq | BinOp::Ne);
                let bad_order = ordering
                    && [ta, tb]
                        .iter()
                        .any(|t| matches!(t, Ty::Bool | Ty::Map | Ty::Object));
                if !(ta.fits(tb) || tb.fits(ta)) || bad_order {
                    self.errors.push(
                        PqlError::new(
                            "type_mismatch",
                            format!(
                                "cannot compare a {} with a {} using `{sym}`",
                                ta.name(),
                                tb.name()
                            ),
                            span,
                            self.src,
                        )
                        .expected(format!(
                            "operands of the same type as the left side ({})",
                            ta.name()
                        )),
                    );
                }
                let cmp = CmpOp::from_symbol(sym).unwrap_or(CmpOp::Eq);
                (Node::Cmp(cmp, bx(na), bx(nb)), Ty::Bool)
            }
            BinOp::In | BinOp::NotIn => {
                self.expect_array(tb, b.span, &format!("the right operand of `{sym}`"));
                (Node::In(bx(na), bx(nb), op == BinOp::NotIn), Ty::Bool)
            }
            BinOp::Like => {
                self.expect_ty(ta, Ty::Str, a.span, "the left operand of `like`");
                self.expect_ty(tb, Ty::Str, b.span, "the pattern of `like`");
                let pat = match nb {
                    Node::Const(Konst::Str(p)) => LikeArg::Fixed(like_tokens(&p)),
                    other => LikeArg::Dynamic(bx(other)),
                };
                (Node::Like(bx(na), pat), Ty::Bool)
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
                self.expect_ty(
                    ta,
                    Ty::Number,
                    a.span,
                    &format!("the left operand of `{sym}`"),
                );
                self.expect_ty(
                    tb,
                    Ty::Number,
                    b.span,
                    &format!("the right operand of `{sym}`"),
                );
                (Node::Arith(op, bx(na), bx(nb)), Ty::Number)
            }
        }
    }

    fn time_ref(&mut self, r: &TimeRef) -> CRef {
        match r {
            TimeRef::Word(w) => CRef::Word(*w),
            TimeRef::Relative(a, u) => CRef::Relative(*a, *u),
            TimeRef::Expr(e) => {
                let (n, t) = self.compile(e);
                self.expect_ty(t, Ty::Time, e.span, "a time reference");
                match n {
                    // `date(...)` stands for the whole day (pql.md §3).
                    Node::Const(Konst::Time(ms)) => CRef::Day(ms),
                    other => CRef::Expr(bx(other)),
                }
            }
        }
    }

    fn cond(&mut self, c: &OccursCond) -> Cond {
        let kind = self.ccond(c);
        let refs: &[&CRef] = match &kind {
            // `!=` on the distance is not one interval; it is evaluated directly.
            CCond::Distance(CmpOp::Ne, ..) => &[],
            CCond::Distance(.., r) | CCond::Direction(_, r) | CCond::On(r) => &[r],
            CCond::Between(a, b) => &[a, b],
        };
        let cacheable = !refs.is_empty() && refs.iter().all(|r| !matches!(r, CRef::Expr(_)));
        let slot = (cacheable && self.windows < MAX_WINDOWS).then(|| {
            self.windows += 1;
            self.windows - 1
        });
        Cond { kind, slot }
    }

    fn ccond(&mut self, c: &OccursCond) -> CCond {
        match c {
            OccursCond::Distance {
                op,
                amount,
                unit,
                dir,
                anchor,
            } => CCond::Distance(*op, *amount, *unit, *dir, self.time_ref(anchor)),
            OccursCond::Direction(d, r) => CCond::Direction(*d, self.time_ref(r)),
            OccursCond::On(r) => CCond::On(self.time_ref(r)),
            OccursCond::Between(a, b) => CCond::Between(self.time_ref(a), self.time_ref(b)),
        }
    }

    /// Chained binders nest: `exists a from A where c1, b from B where c2 : c` is
    /// ∃a∈A (c1 ∧ ∃b∈B (c2 ∧ c)); `forall` is ∀a∈A (c1 → ∀b∈B (c2 → c)). Without `: c`, the
    /// last binder's `where` is the condition (pql.md §4.11 \[I\]); for `exists` that is the same
    /// thing, for `forall` it makes `forall x from A where p` mean "every x satisfies p".
    fn quant(&mut self, exists: bool, binders: &[Binder], cond: Option<&Expr>) -> Node {
        let Some((first, rest)) = binders.split_first() else {
            return Node::Const(Konst::Bool(!exists));
        };
        let (s, t) = self.compile(&first.source);
        self.expect_array(t, first.source.span, "the `from` source");
        let last = rest.is_empty();
        self.with_frames(vec![Frame::Var(first.var.clone())], |c| {
            let (filter, inner) = if last && cond.is_none() {
                let inner = match &first.cond {
                    Some(w) => c.predicate(w, "the `where` condition"),
                    None => Node::Const(Konst::Bool(true)),
                };
                (None, inner)
            } else {
                let filter = first
                    .cond
                    .as_ref()
                    .map(|w| c.predicate(w, "the `where` condition"));
                let inner = if last {
                    c.predicate(cond.expect("checked above"), "the quantified condition")
                } else {
                    c.quant(exists, rest, cond)
                };
                (filter, inner)
            };
            Node::Quant(
                exists,
                bx(s),
                filter.map(|body| Box::new(ElemFn { arity: 1, body })),
                Box::new(ElemFn {
                    arity: 1,
                    body: inner,
                }),
            )
        })
    }

    fn unknown_function(&mut self, name: &str, span: Span, method: bool) {
        let exact_case = functions::lookup_ignore_case(name).map(|f| f.name.to_string());
        let sugg = exact_case.or_else(|| suggest(name, FUNCTIONS.iter().map(|f| f.name)));
        let kind = if method { "method" } else { "function" };
        self.errors.push(
            PqlError::new(
                "unknown_function",
                format!("unknown {kind} `{name}`"),
                span,
                self.src,
            )
            .expected(format!("a known {kind}"))
            .suggest(sugg),
        );
    }

    fn call(
        &mut self,
        name: &str,
        name_span: Span,
        recv: Option<&Expr>,
        args: &[Expr],
        span: Span,
    ) -> (Node, Ty) {
        let null = (Node::Const(Konst::Null), Ty::Any);
        let Some(spec) = functions::lookup(name) else {
            self.unknown_function(name, name_span, recv.is_some());
            if let Some(r) = recv {
                self.compile(r);
            }
            for a in args {
                self.compile(a);
            }
            return null;
        };
        match (spec.style, recv) {
            (Style::Method, None) => {
                self.err(
                    "wrong_call_style",
                    format!("`{name}` is a method: call it on a value, e.g. `x.{name}(...)`"),
                    name_span,
                    &format!("`<value>.{name}(...)`"),
                );
                return null;
            }
            (Style::Function, Some(_)) => {
                self.err(
                    "wrong_call_style",
                    format!("`{name}` is a function, not a method: write `{name}(...)`"),
                    name_span,
                    &format!("`{name}(...)`"),
                );
                return null;
            }
            _ => {}
        }
        if args.len() < spec.min_args || args.len() > spec.args.len() {
            let want = if spec.min_args == spec.args.len() {
                format!("{}", spec.min_args)
            } else {
                format!("{} to {}", spec.min_args, spec.args.len())
            };
            self.err(
                "wrong_arity",
                format!("`{name}` takes {want} argument(s), found {}", args.len()),
                span,
                &format!("{want} argument(s)"),
            );
            return null;
        }
        let recv = recv.map(|r| {
            let (n, t) = self.compile(r);
            let ok = match spec.receiver {
                Ty::Array => matches!(t, Ty::Array | Ty::Map | Ty::Any | Ty::Null),
                want => t.fits(want),
            };
            if !ok {
                self.err(
                    "type_mismatch",
                    format!(
                        "`{name}` needs a {} receiver, found a {}",
                        spec.receiver.name(),
                        t.name()
                    ),
                    r.span,
                    &format!("a {} value", spec.receiver.name()),
                );
            }
            n
        });
        // Per-element argument (if any) compiled with the element frame; others normally.
        let mut elem: Option<(ElemFn, Ty)> = None;
        let mut plain: Vec<Node> = Vec::new();
        for (i, a) in args.iter().enumerate() {
            let want = spec.args[i];
            if spec.per_element == Some(i) {
                let (f, t) = self.elem_fn(a);
                if want == Ty::Bool {
                    self.expect_bool(t, a.span, &format!("the argument of `{name}`"));
                } else {
                    self.expect_ty(t, want, a.span, &format!("the argument of `{name}`"));
                }
                elem = Some((f, t));
            } else {
                let (n, t) = self.compile(a);
                self.expect_ty(t, want, a.span, &format!("argument {} of `{name}`", i + 1));
                plain.push(n);
            }
        }
        let recv = recv.map(bx);
        let arg = |i: usize, plain: &mut Vec<Node>| -> Option<Box<Node>> {
            (i < plain.len())
                .then(|| bx(std::mem::replace(&mut plain[i], Node::Const(Konst::Null))))
        };
        let ret = spec.ret;
        let node = match name {
            "startsWith" | "doesNotStartWith" | "endsWith" | "doesNotEndWith" | "contains"
            | "doesNotContain" | "equals" | "notEqualTo" => {
                let kind = match name {
                    "startsWith" | "doesNotStartWith" => StrKind::Prefix,
                    "endsWith" | "doesNotEndWith" => StrKind::Suffix,
                    "contains" | "doesNotContain" => StrKind::Contains,
                    _ => StrKind::Equals,
                };
                let needle = arg(0, &mut plain).expect("arity checked");
                let lower = match &*needle {
                    Node::Const(Konst::Str(s)) => Some(s.to_lowercase().into_boxed_str()),
                    _ => None,
                };
                Node::StrTest {
                    kind,
                    negate: name.starts_with("doesNot") || name == "notEqualTo",
                    recv: recv.expect("method"),
                    arg: needle,
                    case: arg(1, &mut plain),
                    lower,
                }
            }
            "matches" | "regexGroup" => {
                let pat = arg(0, &mut plain).expect("arity checked");
                let rx = match *pat {
                    Node::Const(Konst::Str(p)) => match Regex::new(&p) {
                        Ok(r) => RegexArg::Fixed(r),
                        Err(reason) => {
                            self.err(
                                "invalid_regex",
                                format!("invalid regular expression: {reason}"),
                                args[0].span,
                                "a Java-style regular expression",
                            );
                            return null;
                        }
                    },
                    other => RegexArg::Dynamic(bx(other)),
                };
                if name == "matches" {
                    Node::Matches(recv.expect("method"), rx)
                } else {
                    Node::RegexGroup(recv.expect("method"), rx, arg(1, &mut plain))
                }
            }
            "count" | "sum" | "average" | "min" | "max" => {
                let func = match name {
                    "count" => Agg::Count,
                    "sum" => Agg::Sum,
                    "average" => Agg::Average,
                    "min" => Agg::Min,
                    _ => Agg::Max,
                };
                let value = elem.map(|(f, _)| Box::new(f));
                // `a[p].count()` and friends aggregate the filter in place instead of building
                // the filtered list first: the hot path of event-count segments.
                match *recv.expect("method") {
                    Node::Filter(source, pred) => Node::Agg {
                        func,
                        source,
                        filter: Some(pred),
                        value,
                    },
                    source => Node::Agg {
                        func,
                        source: bx(source),
                        filter: None,
                        value,
                    },
                }
            }
            "filter" => Node::Filter(
                recv.expect("method"),
                Box::new(elem.expect("per-element").0),
            ),
            "exists" | "forall" => Node::Quant(
                name == "exists",
                recv.expect("method"),
                None,
                Box::new(elem.expect("per-element").0),
            ),
            "map" => Node::Map(
                recv.expect("method"),
                Box::new(elem.expect("per-element").0),
            ),
            "groupBy" => Node::GroupBy(
                recv.expect("method"),
                Box::new(elem.expect("per-element").0),
            ),
            "topN" | "bottomN" => Node::TopN(
                recv.expect("method"),
                Box::new(elem.expect("per-element").0),
                arg(0, &mut plain).expect("arity checked"),
                name == "topN",
            ),
            "if" => {
                let mut it = plain.into_iter();
                let (c, a, b) = (it.next(), it.next(), it.next());
                let ret = if let [_, x, y] = args {
                    let (tx, ty) = (self.static_ty(x), self.static_ty(y));
                    if tx == ty { tx } else { Ty::Any }
                } else {
                    Ty::Any
                };
                return (
                    Node::If(
                        bx(c.expect("arity")),
                        bx(a.expect("arity")),
                        bx(b.expect("arity")),
                    ),
                    ret,
                );
            }
            "date" => {
                let lits: Vec<Option<i64>> = args
                    .iter()
                    .map(|a| match a.kind {
                        ExprKind::Lit(Literal::Int(i)) => Some(i),
                        _ => None,
                    })
                    .collect();
                let [Some(y), Some(m), Some(d)] = lits[..] else {
                    self.err(
                        "bad_date",
                        "`date` takes three integer literals: year, month, day",
                        span,
                        "`date(2024, 6, 15)`",
                    );
                    return null;
                };
                match time::date_ms(y, m, d) {
                    Some(ms) => Node::Const(Konst::Time(ms)),
                    None => {
                        self.err(
                            "bad_date",
                            format!("date({y}, {m}, {d}) is not a valid calendar date"),
                            span,
                            "a valid year, month (1-12) and day",
                        );
                        return null;
                    }
                }
            }
            "currentMonth" => Node::Clock(Clock::Month),
            "currentYear" => Node::Clock(Clock::Year),
            "currentDayOfMonth" => Node::Clock(Clock::DayOfMonth),
            "inSegment" => match &args[0].kind {
                ExprKind::Lit(Literal::Str(id)) => {
                    if !self.segments.contains(id) {
                        self.segments.push(id.clone());
                    }
                    Node::InSegment(id.as_str().into())
                }
                _ => {
                    self.err(
                        "bad_segment_reference",
                        "`inSegment` takes a segment id string literal",
                        args[0].span,
                        "`inSegment(\"<segment id>\")`",
                    );
                    return null;
                }
            },
            "mapEntry" => {
                let mut it = plain.into_iter();
                Node::MapEntry(bx(it.next().expect("arity")), bx(it.next().expect("arity")))
            }
            other => {
                let m = match other {
                    "intersects" => Method::Intersects,
                    "intersection" => Method::Intersection,
                    "subsetOf" => Method::SubsetOf,
                    "supersetOf" => Method::SupersetOf,
                    "includes" => Method::Includes,
                    "distinct" => Method::Distinct,
                    "head" => Method::Head,
                    "get" => Method::Get,
                    "keys" => Method::Keys,
                    "values" => Method::Values,
                    "isNull" => Method::IsNull,
                    "isNotNull" => Method::IsNotNull,
                    "getMonth" => Method::GetMonth,
                    "getYear" => Method::GetYear,
                    _ => Method::GetDayOfMonth,
                };
                Node::Method(m, recv.expect("method"), plain)
            }
        };
        (node, ret)
    }

    /// Static type of an expression without recording errors twice: literal kinds only.
    fn static_ty(&self, e: &Expr) -> Ty {
        match &e.kind {
            ExprKind::Lit(Literal::Str(_)) => Ty::Str,
            ExprKind::Lit(Literal::Int(_) | Literal::Double(_)) => Ty::Number,
            ExprKind::Lit(Literal::Bool(_)) => Ty::Bool,
            ExprKind::Array(_) => Ty::Array,
            _ => Ty::Any,
        }
    }
}
