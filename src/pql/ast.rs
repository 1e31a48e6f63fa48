//! Abstract syntax tree shared by the `pql/text` parser, the `pql/json` codec, the checker and
//! the compiler.
//!
//! Every node carries the byte [`Span`] of the source it came from so that checker errors can
//! point at it. Nodes built from `pql/json` get the span of the whole JSON document, because JSON
//! positions are not tracked per node.

use std::fmt;

/// A half-open byte range `[start, end)` into the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Span {
    /// First byte of the range.
    pub start: usize,
    /// One past the last byte of the range.
    pub end: usize,
}

impl Span {
    /// Builds a span from its bounds.
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The smallest span covering both `self` and `other`.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// One expression node with its source position.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// What the node is.
    pub kind: ExprKind,
    /// Where it came from.
    pub span: Span,
}

impl Expr {
    /// Builds a node.
    pub fn new(kind: ExprKind, span: Span) -> Self {
        Expr { kind, span }
    }
}

/// A literal constant.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `"text"`.
    Str(String),
    /// `42`, `-201`.
    Int(i64),
    /// `3.14`.
    Double(f64),
    /// `true` / `false`.
    Bool(bool),
    /// `null` (accepted as an extension, see pql.md §2.2).
    Null,
}

/// Unary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    /// `not x` / `!x` / `not(x)`.
    Not,
    /// `-x`.
    Neg,
}

/// Binary operators, in the order of the precedence table in [`crate::pql`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `or`
    Or,
    /// `and`
    And,
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `in`
    In,
    /// `notIn`
    NotIn,
    /// `like`
    Like,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
}

impl BinOp {
    /// The operator as written in `pql/text`, also used as `fnName` in `pql/json`.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "=",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::In => "in",
            BinOp::NotIn => "notIn",
            BinOp::Like => "like",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        }
    }

    /// Inverse of [`BinOp::symbol`].
    pub fn from_symbol(s: &str) -> Option<BinOp> {
        ALL_BINOPS.iter().copied().find(|op| op.symbol() == s)
    }

    /// Binding strength; higher binds tighter. Comparisons share one level and do not chain.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq
            | BinOp::Ne
            | BinOp::Lt
            | BinOp::Le
            | BinOp::Gt
            | BinOp::Ge
            | BinOp::In
            | BinOp::NotIn
            | BinOp::Like => 4,
            BinOp::Add | BinOp::Sub => 5,
            BinOp::Mul | BinOp::Div | BinOp::Rem => 6,
        }
    }
}

/// Every binary operator, used for symbol lookup.
pub const ALL_BINOPS: [BinOp; 16] = [
    BinOp::Or,
    BinOp::And,
    BinOp::Eq,
    BinOp::Ne,
    BinOp::Lt,
    BinOp::Le,
    BinOp::Gt,
    BinOp::Ge,
    BinOp::In,
    BinOp::NotIn,
    BinOp::Like,
    BinOp::Add,
    BinOp::Sub,
    BinOp::Mul,
    BinOp::Div,
    BinOp::Rem,
];

/// Comparison operators allowed in the distance form of `occurs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    /// Symbol as written.
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// Inverse of [`CmpOp::symbol`].
    pub fn from_symbol(s: &str) -> Option<CmpOp> {
        [
            CmpOp::Eq,
            CmpOp::Ne,
            CmpOp::Lt,
            CmpOp::Le,
            CmpOp::Gt,
            CmpOp::Ge,
        ]
        .into_iter()
        .find(|op| op.symbol() == s)
    }
}

/// Calendar or fixed-length time units of the relative-time vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// millisecond(s)
    Millisecond,
    /// second(s)
    Second,
    /// minute(s)
    Minute,
    /// hour(s)
    Hour,
    /// day(s)
    Day,
    /// week(s), weeks start on Monday (ISO 8601)
    Week,
    /// month(s), calendar-aware
    Month,
    /// year(s)
    Year,
    /// decade(s)
    Decade,
    /// century / centuries
    Century,
    /// millennium / millennia
    Millennium,
}

impl TimeUnit {
    /// Parses a singular or plural unit word (case-insensitive).
    pub fn parse(word: &str) -> Option<TimeUnit> {
        let w = word.to_ascii_lowercase();
        Some(match w.as_str() {
            "millisecond" | "milliseconds" => TimeUnit::Millisecond,
            "second" | "seconds" => TimeUnit::Second,
            "minute" | "minutes" => TimeUnit::Minute,
            "hour" | "hours" => TimeUnit::Hour,
            "day" | "days" => TimeUnit::Day,
            "week" | "weeks" => TimeUnit::Week,
            "month" | "months" => TimeUnit::Month,
            "year" | "years" => TimeUnit::Year,
            "decade" | "decades" => TimeUnit::Decade,
            "century" | "centuries" => TimeUnit::Century,
            "millennium" | "millennia" => TimeUnit::Millennium,
            _ => return None,
        })
    }

    /// Singular name.
    pub fn singular(self) -> &'static str {
        match self {
            TimeUnit::Millisecond => "millisecond",
            TimeUnit::Second => "second",
            TimeUnit::Minute => "minute",
            TimeUnit::Hour => "hour",
            TimeUnit::Day => "day",
            TimeUnit::Week => "week",
            TimeUnit::Month => "month",
            TimeUnit::Year => "year",
            TimeUnit::Decade => "decade",
            TimeUnit::Century => "century",
            TimeUnit::Millennium => "millennium",
        }
    }

    /// Plural name, used when rendering an amount other than 1.
    pub fn plural(self) -> &'static str {
        match self {
            TimeUnit::Millisecond => "milliseconds",
            TimeUnit::Second => "seconds",
            TimeUnit::Minute => "minutes",
            TimeUnit::Hour => "hours",
            TimeUnit::Day => "days",
            TimeUnit::Week => "weeks",
            TimeUnit::Month => "months",
            TimeUnit::Year => "years",
            TimeUnit::Decade => "decades",
            TimeUnit::Century => "centuries",
            TimeUnit::Millennium => "millennia",
        }
    }
}

/// `now`, `today`, `yesterday`, `tomorrow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeWord {
    /// The evaluation instant.
    Now,
    /// The UTC day containing the evaluation instant.
    Today,
    /// The UTC day before today.
    Yesterday,
    /// The UTC day after today.
    Tomorrow,
}

impl TimeWord {
    /// Parses the word (case-insensitive).
    pub fn parse(word: &str) -> Option<TimeWord> {
        match word.to_ascii_lowercase().as_str() {
            "now" => Some(TimeWord::Now),
            "today" => Some(TimeWord::Today),
            "yesterday" => Some(TimeWord::Yesterday),
            "tomorrow" => Some(TimeWord::Tomorrow),
            _ => None,
        }
    }

    /// The word as written.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeWord::Now => "now",
            TimeWord::Today => "today",
            TimeWord::Yesterday => "yesterday",
            TimeWord::Tomorrow => "tomorrow",
        }
    }
}

/// `this`, `last`, `next` in `occurs last week`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// The calendar period containing now.
    This,
    /// The period before it.
    Last,
    /// The period after it.
    Next,
}

impl Anchor {
    /// Parses the word (case-insensitive).
    pub fn parse(word: &str) -> Option<Anchor> {
        match word.to_ascii_lowercase().as_str() {
            "this" => Some(Anchor::This),
            "last" => Some(Anchor::Last),
            "next" => Some(Anchor::Next),
            _ => None,
        }
    }

    /// The word as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Anchor::This => "this",
            Anchor::Last => "last",
            Anchor::Next => "next",
        }
    }
}

/// `before`, `after`, `from` (`from` is a synonym of `after`, pql.md §4.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `before`
    Before,
    /// `after`
    After,
    /// `from`, evaluated like `after`
    From,
}

impl Direction {
    /// Parses the word (case-insensitive).
    pub fn parse(word: &str) -> Option<Direction> {
        match word.to_ascii_lowercase().as_str() {
            "before" => Some(Direction::Before),
            "after" => Some(Direction::After),
            "from" => Some(Direction::From),
            _ => None,
        }
    }

    /// The word as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Before => "before",
            Direction::After => "after",
            Direction::From => "from",
        }
    }
}

/// The reference time of an `occurs` condition.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeRef {
    /// `now`, `today`, ...
    Word(TimeWord),
    /// `this month`, `last week`, ...
    Relative(Anchor, TimeUnit),
    /// `date(...)` or a timestamp attribute.
    Expr(Box<Expr>),
}

/// The part of an `occurs` after the keyword; also the argument of a chain `WHEN(...)`.
#[derive(Debug, Clone, PartialEq)]
pub enum OccursCond {
    /// `occurs < 7 days before now`
    Distance {
        /// Comparison applied to the distance.
        op: CmpOp,
        /// Number of units.
        amount: u32,
        /// The unit.
        unit: TimeUnit,
        /// Which side of the reference.
        dir: Direction,
        /// The reference.
        anchor: TimeRef,
    },
    /// `occurs before today`
    Direction(Direction, TimeRef),
    /// `occurs today`, `occurs on date(2024, 6, 10)`
    On(TimeRef),
    /// `occurs between A and B`
    Between(TimeRef, TimeRef),
}

/// `exists`/`forall`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantifier {
    /// At least one binding satisfies the condition.
    Exists,
    /// Every binding satisfies the condition.
    Forall,
}

/// One `VAR from EXPR (where COND)?` binder.
#[derive(Debug, Clone, PartialEq)]
pub struct Binder {
    /// The bound variable.
    pub var: String,
    /// The array it ranges over.
    pub source: Expr,
    /// Optional restriction.
    pub cond: Option<Expr>,
}

/// Aggregate comprehension functions (`sum X.a over X from A where C`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFn {
    /// Sum of the values.
    Sum,
    /// Number of bindings.
    Count,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Arithmetic mean.
    Average,
}

impl AggFn {
    /// Parses the keyword (case-insensitive).
    pub fn parse(word: &str) -> Option<AggFn> {
        match word.to_ascii_lowercase().as_str() {
            "sum" => Some(AggFn::Sum),
            "count" => Some(AggFn::Count),
            "min" => Some(AggFn::Min),
            "max" => Some(AggFn::Max),
            "average" => Some(AggFn::Average),
            _ => None,
        }
    }

    /// The keyword as written.
    pub fn as_str(self) -> &'static str {
        match self {
            AggFn::Sum => "sum",
            AggFn::Count => "count",
            AggFn::Min => "min",
            AggFn::Max => "max",
            AggFn::Average => "average",
        }
    }
}

/// One `LABEL: WHAT(...) WHEN(...) COUNT(n) WHERE(...)` step of a `chain`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainStep {
    /// Free label (`A`, `C0`, ...).
    pub label: String,
    /// Per-event predicate (event = implicit context).
    pub what: Expr,
    /// Time condition on the event's timestamp.
    pub when: Option<OccursCond>,
    /// Minimum number of matching events (default 1).
    pub count: Option<u32>,
    /// Extra per-event predicate.
    pub where_: Option<Expr>,
}

/// Expression node kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A literal.
    Lit(Literal),
    /// `[a, b, c]`
    Array(Vec<Expr>),
    /// `{"k": v}`
    Object(Vec<(String, Expr)>),
    /// `$n` (1-based).
    Param(u32),
    /// The implicit context `up` levels out: 0 is the current element (or parameter 1 at top
    /// level), `^` is 1, `^^` is 2.
    Context(u32),
    /// A variable bound by a lambda, `let`, `select`, a quantifier or an aggregate comprehension.
    Var(String),
    /// `object.name`
    Field {
        /// The receiver.
        object: Box<Expr>,
        /// Field name.
        name: String,
    },
    /// `name(args)` (function style, `receiver` is `None`) or `receiver.name(args)`.
    Call {
        /// Function name as written (case preserved).
        name: String,
        /// Span of the name, for "unknown function" errors.
        name_span: Span,
        /// Receiver of a method call.
        receiver: Option<Box<Expr>>,
        /// Arguments.
        args: Vec<Expr>,
    },
    /// Prefix operator.
    Unary(UnOp, Box<Expr>),
    /// Infix operator.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `subject occurs ...`
    Occurs(Box<Expr>, OccursCond),
    /// `array[predicate]`
    Filter(Box<Expr>, Box<Expr>),
    /// `(A, B) => body`
    Lambda(Vec<String>, Box<Expr>),
    /// `let name = value in body`
    Let(String, Box<Expr>, Box<Expr>),
    /// `exists ...` / `forall ...`
    Quant(Quantifier, Vec<Binder>, Option<Box<Expr>>),
    /// `select var from source where cond`
    Select(String, Box<Expr>, Box<Expr>),
    /// `sum value over var from source where cond`
    Aggregate {
        /// The aggregate.
        func: AggFn,
        /// Per-binding value.
        value: Box<Expr>,
        /// Bound variable.
        var: String,
        /// Source array.
        source: Box<Expr>,
        /// Optional restriction.
        cond: Option<Box<Expr>>,
    },
    /// `chain(events, tsField, [steps])`
    Chain {
        /// The event array (normally `xEvent`).
        events: Box<Expr>,
        /// Timestamp field of each event.
        ts_field: String,
        /// The ordered steps.
        steps: Vec<ChainStep>,
    },
    /// `xEvent`
    XEvent,
    /// `now`/`today`/... used as a value.
    Time(TimeWord),
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&super::text::to_text(self))
    }
}
