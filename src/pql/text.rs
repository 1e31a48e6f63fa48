//! Renders an [`Expr`] as `pql/text`.
//!
//! The output re-parses to the same tree (modulo spans and redundant parentheses): operands are
//! parenthesized by precedence, names that are not plain identifiers or that collide with
//! keywords are backquoted, strings use JSON escapes.

use super::ast::*;
use super::functions::{self, Style};

/// Renders `e` as `pql/text`.
pub fn to_text(e: &Expr) -> String {
    let mut out = String::new();
    write(e, &mut out);
    out
}

/// Precedence of a node as an operand; see the table in [`crate::pql`].
fn prec(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Binary(op, ..) => op.precedence(),
        ExprKind::Unary(UnOp::Not, _) => 3,
        ExprKind::Occurs(..) => 4,
        ExprKind::Unary(UnOp::Neg, _) => 7,
        ExprKind::Let(..)
        | ExprKind::Quant(..)
        | ExprKind::Select(..)
        | ExprKind::Aggregate { .. }
        | ExprKind::Lambda(..) => 0,
        ExprKind::Lit(Literal::Int(i)) if *i < 0 => 7,
        ExprKind::Lit(Literal::Double(d)) if d.is_sign_negative() => 7,
        _ => 9,
    }
}

fn operand(e: &Expr, min: u8, out: &mut String) {
    if prec(e) < min {
        out.push('(');
        write(e, out);
        out.push(')');
    } else {
        write(e, out);
    }
}

/// Words the parser treats specially when they appear as a bare name.
const RESERVED: [&str; 27] = [
    "and",
    "or",
    "not",
    "in",
    "notin",
    "like",
    "occurs",
    "true",
    "false",
    "null",
    "xevent",
    "let",
    "exists",
    "forall",
    "select",
    "chain",
    "now",
    "today",
    "yesterday",
    "tomorrow",
    "sum",
    "count",
    "min",
    "max",
    "average",
    "from",
    "where",
];

/// Tells whether `name` can be written without backquotes: a letter or `_`, then letters, digits or `_`.
pub(crate) fn is_plain_ident(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

fn name(n: &str, bare: bool, out: &mut String) {
    let reserved = bare && RESERVED.iter().any(|r| r.eq_ignore_ascii_case(n));
    if is_plain_ident(n) && !reserved {
        out.push_str(n);
    } else {
        out.push('`');
        out.push_str(n);
        out.push('`');
    }
}

fn string(s: &str, out: &mut String) {
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

fn list(items: &[Expr], out: &mut String) {
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write(it, out);
    }
}

fn double(d: f64, out: &mut String) {
    // `{:?}` always keeps a decimal point or exponent, so the value re-lexes as a double.
    out.push_str(&format!("{d:?}"));
}

fn time_ref(r: &TimeRef, out: &mut String) {
    match r {
        TimeRef::Word(w) => out.push_str(w.as_str()),
        TimeRef::Relative(a, u) => {
            out.push_str(a.as_str());
            out.push(' ');
            out.push_str(u.singular());
        }
        TimeRef::Expr(e) => {
            if plain_time_ref(e) {
                write(e, out);
            } else {
                // Parenthesized so that `now.x` or `last.y` is not read as a time word.
                out.push('(');
                write(e, out);
                out.push(')');
            }
        }
    }
}

/// Whether the rendering of `e` starts with a digit (a non-negative number literal, possibly
/// as the receiver of a postfix chain).
fn starts_with_unsigned_number(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Lit(Literal::Int(i)) => *i >= 0,
        ExprKind::Lit(Literal::Double(d)) => !d.is_sign_negative(),
        ExprKind::Field { object, .. } | ExprKind::Filter(object, _) => {
            starts_with_unsigned_number(object)
        }
        ExprKind::Call {
            receiver: Some(r), ..
        } => starts_with_unsigned_number(r),
        _ => false,
    }
}

/// `date(...)` or a field path not starting with a time word reads back unambiguously.
fn plain_time_ref(e: &Expr) -> bool {
    let mut cur = e;
    loop {
        match &cur.kind {
            ExprKind::Call {
                name,
                receiver: None,
                ..
            } => return name == "date",
            ExprKind::Field { object, name } => {
                if matches!(object.kind, ExprKind::Context(0)) {
                    return TimeWord::parse(name).is_none()
                        && Anchor::parse(name).is_none()
                        && !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name));
                }
                cur = object;
            }
            _ => return false,
        }
    }
}

/// Renders the part after `occurs` (also the inside of `WHEN(...)`).
pub fn cond(c: &OccursCond, out: &mut String) {
    match c {
        OccursCond::Distance {
            op,
            amount,
            unit,
            dir,
            anchor,
        } => {
            let u = if *amount == 1 {
                unit.singular()
            } else {
                unit.plural()
            };
            out.push_str(&format!("{} {amount} {u} {} ", op.symbol(), dir.as_str()));
            time_ref(anchor, out);
        }
        OccursCond::Direction(d, r) => {
            out.push_str(d.as_str());
            out.push(' ');
            time_ref(r, out);
        }
        OccursCond::On(r) => {
            if matches!(r, TimeRef::Expr(_)) {
                out.push_str("on ");
            }
            time_ref(r, out);
        }
        OccursCond::Between(a, b) => {
            out.push_str("between ");
            time_ref(a, out);
            out.push_str(" and ");
            time_ref(b, out);
        }
    }
}

fn write(e: &Expr, out: &mut String) {
    match &e.kind {
        ExprKind::Lit(l) => match l {
            Literal::Str(s) => string(s, out),
            Literal::Int(i) => out.push_str(&i.to_string()),
            Literal::Double(d) => double(*d, out),
            Literal::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Literal::Null => out.push_str("null"),
        },
        ExprKind::Array(items) => {
            out.push('[');
            list(items, out);
            out.push(']');
        }
        ExprKind::Object(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                string(k, out);
                out.push_str(": ");
                write(v, out);
            }
            out.push('}');
        }
        ExprKind::Param(n) => out.push_str(&format!("${n}")),
        // A context on its own has no text form except at the top, where it is `$1`.
        ExprKind::Context(_) => out.push_str("$1"),
        ExprKind::Var(v) => name(v, true, out),
        ExprKind::Field { object, name: n } => match &object.kind {
            ExprKind::Context(0) => name(n, true, out),
            ExprKind::Context(up) => {
                out.push_str(&"^".repeat(*up as usize));
                out.push('.');
                name(n, false, out);
            }
            _ => {
                operand(object, 9, out);
                out.push('.');
                name(n, false, out);
            }
        },
        ExprKind::Call {
            name: n,
            receiver,
            args,
            ..
        } => {
            if let Some(r) = receiver {
                operand(r, 9, out);
                out.push('.');
            }
            out.push_str(n);
            out.push('(');
            list(args, out);
            out.push(')');
        }
        ExprKind::Unary(UnOp::Not, x) => {
            out.push_str("not ");
            operand(x, 3, out);
        }
        ExprKind::Unary(UnOp::Neg, x) => {
            out.push('-');
            // `-(5)` and `-(5.f())` must not fold into the literal `-5`; other operands need
            // parentheses only by precedence, and nested minus signs are spaced (`- -x`) rather
            // than parenthesized so that rendering does not deepen the nesting.
            if starts_with_unsigned_number(x) || prec(x) < 7 {
                out.push('(');
                write(x, out);
                out.push(')');
            } else {
                if prec(x) == 7 {
                    out.push(' ');
                }
                write(x, out);
            }
        }
        ExprKind::Binary(op, a, b) => {
            let p = op.precedence();
            // Comparisons do not associate: both sides must bind tighter.
            operand(a, if p == 4 { 5 } else { p }, out);
            out.push(' ');
            out.push_str(op.symbol());
            out.push(' ');
            operand(b, p + 1, out);
        }
        ExprKind::Occurs(s, c) => {
            operand(s, 5, out);
            out.push_str(" occurs ");
            cond(c, out);
        }
        ExprKind::Filter(a, p) => {
            operand(a, 9, out);
            out.push('[');
            write(p, out);
            out.push(']');
        }
        ExprKind::Lambda(params, body) => {
            out.push('(');
            out.push_str(&params.join(", "));
            out.push_str(") => ");
            write(body, out);
        }
        ExprKind::Let(n, v, b) => {
            out.push_str(&format!("let {n} = "));
            operand(v, 9, out);
            out.push_str(" in ");
            write(b, out);
        }
        ExprKind::Quant(q, binders, c) => {
            out.push_str(if *q == Quantifier::Exists {
                "exists "
            } else {
                "forall "
            });
            for (i, b) in binders.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&b.var);
                out.push_str(" from ");
                operand(&b.source, 1, out);
                if let Some(w) = &b.cond {
                    out.push_str(" where ");
                    operand(w, 1, out);
                }
            }
            if let Some(c) = c {
                out.push_str(" : ");
                write(c, out);
            }
        }
        ExprKind::Select(v, s, c) => {
            out.push_str(&format!("select {v} from "));
            operand(s, 1, out);
            out.push_str(" where ");
            write(c, out);
        }
        ExprKind::Aggregate {
            func,
            value,
            var,
            source,
            cond: c,
        } => {
            out.push_str(func.as_str());
            // Always parenthesized: `sum (V) over` is unambiguous whatever V starts with.
            out.push_str(" (");
            write(value, out);
            out.push(')');
            out.push_str(&format!(" over {var} from "));
            operand(source, 1, out);
            if let Some(c) = c {
                out.push_str(" where ");
                write(c, out);
            }
        }
        ExprKind::Chain {
            events,
            ts_field,
            steps,
        } => {
            out.push_str("chain(");
            write(events, out);
            out.push_str(", ");
            name(ts_field, false, out);
            out.push_str(", [");
            for (i, s) in steps.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&s.label);
                out.push_str(": WHAT(");
                write(&s.what, out);
                out.push(')');
                if let Some(w) = &s.when {
                    out.push_str(" WHEN(");
                    cond(w, out);
                    out.push(')');
                }
                if let Some(n) = s.count {
                    out.push_str(&format!(" COUNT({n})"));
                }
                if let Some(w) = &s.where_ {
                    out.push_str(" WHERE(");
                    write(w, out);
                    out.push(')');
                }
            }
            out.push_str("])");
        }
        ExprKind::XEvent => out.push_str("xEvent"),
        ExprKind::Time(w) => out.push_str(w.as_str()),
    }
}

/// Whether `name` is called method-style, by the function table; unknown names follow
/// `has_receiver`.
pub fn is_method(name: &str, has_receiver: bool) -> bool {
    functions::lookup(name).map_or(has_receiver, |f| f.style == Style::Method)
}
