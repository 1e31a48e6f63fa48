//! Recursive-descent parser for `pql/text` (pql.md §2.8, with the precedence table documented in
//! [`crate::pql`]).
//!
//! Recursion is bounded by [`MAX_DEPTH`]: the counter grows with every nested sub-expression
//! *and* with every link of a left-associative chain (`a + b + c`, `a.b.c`), because later passes
//! recurse over the tree and must not overflow the stack either.

use super::ast::*;
use super::error::{PqlError, PqlErrors, suggest};
use super::lexer::{Tok, Token, lex};

/// Maximum nesting depth of a query. Real segment definitions stay far below it; 10,000 nested
/// parentheses get a `too_deep` error instead of a stack overflow.
pub const MAX_DEPTH: usize = 100;

/// Keywords that start a clause inside a chain step, checked case-insensitively.
const CHAIN_CLAUSES: [&str; 4] = ["WHAT", "WHEN", "COUNT", "WHERE"];

/// Parses a full `pql/text` query and resolves bare identifiers (variable or field of the
/// implicit context).
pub fn parse_text(src: &str) -> Result<Expr, PqlErrors> {
    let tokens = lex(src)?;
    let mut p = Parser {
        src,
        tokens,
        pos: 0,
        depth: 0,
        no_in: false,
    };
    let expr = p.parse_query()?;
    Ok(resolve(expr, &mut Vec::new()))
}

struct Parser<'s> {
    src: &'s str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    /// Set while parsing the value of `let X = VALUE in BODY`, where `in` ends the value instead
    /// of being the membership operator. Brackets reset it.
    no_in: bool,
}

type PResult<T> = Result<T, PqlErrors>;

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Ident(s) | Tok::QIdent(s) => format!("`{s}`"),
        Tok::Int(i) => format!("number `{i}`"),
        Tok::Double(d) => format!("number `{d}`"),
        Tok::Str(_) => "a string".to_string(),
        Tok::Param(n) => format!("`${n}`"),
        Tok::Sym(s) => format!("`{s}`"),
        Tok::Eof => "end of input".to_string(),
    }
}

fn is_kw(tok: &Tok, kw: &str) -> bool {
    matches!(tok, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
}

impl<'s> Parser<'s> {
    fn peek(&self) -> &Tok {
        &self.tokens[self.pos].tok
    }

    fn peek_at(&self, n: usize) -> &Tok {
        let i = (self.pos + n).min(self.tokens.len() - 1);
        &self.tokens[i].tok
    }

    fn span(&self) -> Span {
        self.tokens[self.pos].span
    }

    fn prev_end(&self) -> usize {
        if self.pos == 0 {
            0
        } else {
            self.tokens[self.pos - 1].span.end
        }
    }

    fn bump(&mut self) -> Token {
        let t = self.tokens[self.pos].clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn error(&self, expected: &str) -> PqlErrors {
        let found = describe(self.peek());
        PqlError::new(
            if matches!(self.peek(), Tok::Eof) {
                "unexpected_end"
            } else {
                "unexpected_token"
            },
            format!("expected {expected}, found {found}"),
            self.span(),
            self.src,
        )
        .expected(expected)
        .into()
    }

    fn expect_sym(&mut self, sym: &'static str) -> PResult<Span> {
        if self.peek() == &Tok::Sym(sym) {
            Ok(self.bump().span)
        } else {
            Err(self.error(&format!("`{sym}`")))
        }
    }

    fn eat_sym(&mut self, sym: &'static str) -> bool {
        if self.peek() == &Tok::Sym(sym) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, kw: &str) -> PResult<Span> {
        if is_kw(self.peek(), kw) {
            Ok(self.bump().span)
        } else {
            Err(self.error(&format!("`{kw}`")))
        }
    }

    fn expect_ident(&mut self, what: &str) -> PResult<(String, Span)> {
        match self.peek().clone() {
            Tok::Ident(s) | Tok::QIdent(s) => Ok((s, self.bump().span)),
            _ => Err(self.error(what)),
        }
    }

    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(PqlError::new(
                "too_deep",
                format!("expression is nested more than {MAX_DEPTH} levels deep"),
                self.span(),
                self.src,
            )
            .expected("a flatter expression")
            .into());
        }
        Ok(())
    }

    fn parse_query(&mut self) -> PResult<Expr> {
        let start = self.span();
        let expr = if self.lambda_ahead() {
            self.parse_lambda()?
        } else {
            self.parse_expr()?
        };
        if !matches!(self.peek(), Tok::Eof) {
            let mut err = self.error("an operator or end of input");
            if let Tok::Ident(name) = self.peek() {
                let kws = ["and", "or", "in", "notIn", "like", "occurs"];
                err.0[0].suggestion = suggest(name, kws);
            }
            return Err(err);
        }
        Ok(Expr::new(expr.kind, start.to(expr.span)))
    }

    /// `(` ident (`,` ident)* `)` `=>` ahead?
    fn lambda_ahead(&self) -> bool {
        if self.peek() != &Tok::Sym("(") {
            return false;
        }
        let mut i = 1;
        loop {
            if !matches!(self.peek_at(i), Tok::Ident(_)) {
                return false;
            }
            match self.peek_at(i + 1) {
                Tok::Sym(",") => i += 2,
                Tok::Sym(")") => return self.peek_at(i + 2) == &Tok::Sym("=>"),
                _ => return false,
            }
        }
    }

    fn parse_lambda(&mut self) -> PResult<Expr> {
        let start = self.expect_sym("(")?;
        let mut params = Vec::new();
        loop {
            params.push(self.expect_ident("a parameter name")?.0);
            if !self.eat_sym(",") {
                break;
            }
        }
        self.expect_sym(")")?;
        self.expect_sym("=>")?;
        let body = self.parse_expr()?;
        let span = start.to(body.span);
        Ok(Expr::new(ExprKind::Lambda(params, Box::new(body)), span))
    }

    fn parse_expr(&mut self) -> PResult<Expr> {
        self.enter()?;
        let e = self.parse_binary(BinOp::Or.precedence());
        self.depth -= 1;
        e
    }

    /// The binary operator at the cursor, if any, honouring the `let ... in` exception.
    fn peek_binop(&self) -> Option<BinOp> {
        match self.peek() {
            Tok::Sym(s) => match *s {
                "=" | "!=" | "<" | "<=" | ">" | ">=" | "+" | "-" | "*" | "/" | "%" => {
                    BinOp::from_symbol(s)
                }
                _ => None,
            },
            Tok::Ident(s) => {
                let l = s.to_ascii_lowercase();
                match l.as_str() {
                    "and" => Some(BinOp::And),
                    "or" => Some(BinOp::Or),
                    "in" if !self.no_in => Some(BinOp::In),
                    "notin" => Some(BinOp::NotIn),
                    "like" => Some(BinOp::Like),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Precedence climbing over the binary levels. `not` sits between `and` (2) and the
    /// comparisons (4), at level 3; `occurs` is parsed with the comparisons.
    fn parse_binary(&mut self, min_prec: u8) -> PResult<Expr> {
        let mut lhs = if min_prec <= 3 {
            self.parse_not()?
        } else {
            self.parse_unary()?
        };
        let saved_depth = self.depth;
        let mut compared = false;
        loop {
            if min_prec <= 4 && is_kw(self.peek(), "occurs") {
                if compared {
                    return Err(self.non_assoc());
                }
                self.bump();
                let cond = self.parse_occurs_tail()?;
                let span = Span::new(lhs.span.start, self.prev_end());
                lhs = Expr::new(ExprKind::Occurs(Box::new(lhs), cond), span);
                compared = true;
                continue;
            }
            let Some(op) = self.peek_binop() else { break };
            let prec = op.precedence();
            if prec < min_prec {
                break;
            }
            if prec == 4 {
                if compared {
                    return Err(self.non_assoc());
                }
                compared = true;
            }
            self.bump();
            // Each link deepens the left spine of the tree.
            self.enter()?;
            let rhs = self.parse_binary(prec + 1)?;
            let span = lhs.span.to(rhs.span);
            lhs = Expr::new(ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)), span);
        }
        self.depth = saved_depth;
        Ok(lhs)
    }

    fn non_assoc(&self) -> PqlErrors {
        PqlError::new(
            "non_associative",
            "comparison operators cannot be chained; add parentheses or use `and`",
            self.span(),
            self.src,
        )
        .expected("`and`, `or` or end of input")
        .into()
    }

    fn parse_not(&mut self) -> PResult<Expr> {
        if is_kw(self.peek(), "not") || self.peek() == &Tok::Sym("!") {
            let start = self.bump().span;
            self.enter()?;
            let operand = self.parse_not()?;
            self.depth -= 1;
            let span = start.to(operand.span);
            return Ok(Expr::new(
                ExprKind::Unary(UnOp::Not, Box::new(operand)),
                span,
            ));
        }
        self.parse_binary(4)
    }

    fn parse_unary(&mut self) -> PResult<Expr> {
        if self.peek() == &Tok::Sym("-") {
            let start = self.bump().span;
            match self.peek().clone() {
                Tok::Int(i) => {
                    let span = start.to(self.bump().span);
                    return self.parse_postfix(Expr::new(ExprKind::Lit(Literal::Int(-i)), span));
                }
                Tok::Double(d) => {
                    let span = start.to(self.bump().span);
                    return self.parse_postfix(Expr::new(ExprKind::Lit(Literal::Double(-d)), span));
                }
                _ => {}
            }
            self.enter()?;
            let operand = self.parse_unary()?;
            self.depth -= 1;
            let span = start.to(operand.span);
            return Ok(Expr::new(
                ExprKind::Unary(UnOp::Neg, Box::new(operand)),
                span,
            ));
        }
        let primary = self.parse_primary()?;
        self.parse_postfix(primary)
    }

    fn parse_postfix(&mut self, mut e: Expr) -> PResult<Expr> {
        let saved = self.depth;
        loop {
            if self.eat_sym(".") {
                self.enter()?;
                let (name, name_span) = self.expect_ident("a field or method name after `.`")?;
                if self.peek() == &Tok::Sym("(") {
                    // `a.and(b)` would be a call no function answers to, and its PQL/JSON form
                    // (`fnName: "and"`) reads back as the operator: operators are not methods.
                    if BinOp::from_symbol(&name).is_some() || name == "not" {
                        return Err(PqlError::new(
                            "unexpected_token",
                            format!("`{name}` is an operator, not a method"),
                            name_span,
                            self.src,
                        )
                        .expected("a method name")
                        .into());
                    }
                    let args = self.parse_args()?;
                    let span = Span::new(e.span.start, self.prev_end());
                    e = Expr::new(
                        ExprKind::Call {
                            name,
                            name_span,
                            receiver: Some(Box::new(e)),
                            args,
                        },
                        span,
                    );
                } else {
                    let span = e.span.to(name_span);
                    e = Expr::new(
                        ExprKind::Field {
                            object: Box::new(e),
                            name,
                        },
                        span,
                    );
                }
            } else if self.peek() == &Tok::Sym("[") {
                self.bump();
                self.enter()?;
                let pred = self.nested(|p| p.parse_expr())?;
                let end = self.expect_sym("]")?;
                let span = e.span.to(end);
                e = Expr::new(ExprKind::Filter(Box::new(e), Box::new(pred)), span);
            } else {
                break;
            }
        }
        self.depth = saved;
        Ok(e)
    }

    /// Runs `f` with the `let ... in` restriction lifted (inside brackets `in` is unambiguous).
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> PResult<T>) -> PResult<T> {
        let saved = std::mem::replace(&mut self.no_in, false);
        let r = f(self);
        self.no_in = saved;
        r
    }

    /// Parses a possibly empty, comma-separated list of `item`s up to the symbol `close` (the
    /// opening symbol is already consumed), with `in` allowed again inside.
    fn delimited<T>(
        &mut self,
        close: &'static str,
        mut item: impl FnMut(&mut Self) -> PResult<T>,
    ) -> PResult<Vec<T>> {
        self.nested(|p| {
            let mut items = Vec::new();
            if p.eat_sym(close) {
                return Ok(items);
            }
            loop {
                items.push(item(p)?);
                if p.eat_sym(close) {
                    return Ok(items);
                }
                if !p.eat_sym(",") {
                    return Err(p.error(&format!("`,` or `{close}`")));
                }
            }
        })
    }

    fn parse_args(&mut self) -> PResult<Vec<Expr>> {
        self.expect_sym("(")?;
        self.delimited(")", |p| {
            if p.lambda_ahead() {
                p.parse_lambda()
            } else {
                p.parse_expr()
            }
        })
    }

    fn parse_primary(&mut self) -> PResult<Expr> {
        let tok = self.peek().clone();
        let span = self.span();
        match tok {
            Tok::Int(i) => {
                self.bump();
                Ok(Expr::new(ExprKind::Lit(Literal::Int(i)), span))
            }
            Tok::Double(d) => {
                self.bump();
                Ok(Expr::new(ExprKind::Lit(Literal::Double(d)), span))
            }
            Tok::Str(s) => {
                self.bump();
                Ok(Expr::new(ExprKind::Lit(Literal::Str(s)), span))
            }
            Tok::Param(n) => {
                self.bump();
                Ok(Expr::new(ExprKind::Param(n), span))
            }
            Tok::Sym("^") => {
                let mut up = 0;
                while self.eat_sym("^") {
                    up += 1;
                }
                self.eat_sym(".");
                let (name, name_span) = self.expect_ident("a field name after `^`")?;
                let ctx = Expr::new(ExprKind::Context(up), span);
                Ok(Expr::new(
                    ExprKind::Field {
                        object: Box::new(ctx),
                        name,
                    },
                    span.to(name_span),
                ))
            }
            Tok::Sym("[") => {
                self.bump();
                let items = self.delimited("]", Self::parse_expr)?;
                Ok(Expr::new(
                    ExprKind::Array(items),
                    Span::new(span.start, self.prev_end()),
                ))
            }
            Tok::Sym("{") => {
                self.bump();
                let entries = self.delimited("}", |p| {
                    let key = match p.peek().clone() {
                        Tok::Str(s) | Tok::Ident(s) => {
                            p.bump();
                            s
                        }
                        _ => return Err(p.error("an object key (a string)")),
                    };
                    p.expect_sym(":")?;
                    Ok((key, p.parse_expr()?))
                })?;
                Ok(Expr::new(
                    ExprKind::Object(entries),
                    Span::new(span.start, self.prev_end()),
                ))
            }
            Tok::Sym("(") => {
                if self.lambda_ahead() {
                    return self.parse_lambda();
                }
                self.bump();
                let inner = self.nested(|p| p.parse_expr())?;
                let end = self.expect_sym(")")?;
                // Parentheses are not kept in the tree, but the span widens so that errors on
                // the whole group underline the parentheses too.
                Ok(Expr::new(inner.kind, span.to(end)))
            }
            Tok::Ident(name) => self.parse_ident(name, span),
            Tok::QIdent(name) => {
                self.bump();
                Ok(Expr::new(ExprKind::Var(name), span))
            }
            _ => Err(self.error("an expression")),
        }
    }

    fn parse_ident(&mut self, name: String, span: Span) -> PResult<Expr> {
        let lower = name.to_ascii_lowercase();
        let next = self.peek_at(1).clone();
        let next_is_ident = matches!(next, Tok::Ident(_));
        match lower.as_str() {
            "true" | "false" => {
                self.bump();
                return Ok(Expr::new(
                    ExprKind::Lit(Literal::Bool(lower == "true")),
                    span,
                ));
            }
            "null" => {
                self.bump();
                return Ok(Expr::new(ExprKind::Lit(Literal::Null), span));
            }
            "xevent" => {
                self.bump();
                return Ok(Expr::new(ExprKind::XEvent, span));
            }
            "let" if next_is_ident => return self.parse_let(),
            "exists" | "forall" if next_is_ident && is_kw(self.peek_at(2), "from") => {
                return self.parse_quant();
            }
            "select" if next_is_ident => return self.parse_select(),
            "chain" if next == Tok::Sym("(") => return self.parse_chain(),
            _ => {}
        }
        if let Some(word) = TimeWord::parse(&name) {
            self.bump();
            return Ok(Expr::new(ExprKind::Time(word), span));
        }
        if let Some(func) = AggFn::parse(&name)
            && self.aggregate_ahead()
        {
            return self.parse_aggregate(func);
        }
        self.bump();
        if self.peek() == &Tok::Sym("(") {
            let args = self.parse_args()?;
            let full = Span::new(span.start, self.prev_end());
            return Ok(Expr::new(
                ExprKind::Call {
                    name,
                    name_span: span,
                    receiver: None,
                    args,
                },
                full,
            ));
        }
        // Bare identifier: a variable or a field of the implicit context, decided by `resolve`.
        Ok(Expr::new(ExprKind::Var(name), span))
    }

    /// After an aggregate word (`sum`, `count`, ...): does a comprehension `sum V over ...`
    /// follow, rather than a field of that name (`count = 1`) or a call (`count(x)`)? A value
    /// starting with `(` counts only when `over` follows the matching `)`.
    fn aggregate_ahead(&self) -> bool {
        match self.peek_at(1) {
            Tok::Ident(w) => !["and", "or", "in", "notin", "like", "occurs"]
                .iter()
                .any(|k| w.eq_ignore_ascii_case(k)),
            Tok::QIdent(_)
            | Tok::Param(_)
            | Tok::Int(_)
            | Tok::Double(_)
            | Tok::Str(_)
            | Tok::Sym("^")
            | Tok::Sym("{") => true,
            Tok::Sym("(") => {
                let mut depth = 0usize;
                let mut i = 1;
                loop {
                    match self.peek_at(i) {
                        Tok::Sym("(") => depth += 1,
                        Tok::Sym(")") => {
                            depth -= 1;
                            if depth == 0 {
                                return is_kw(self.peek_at(i + 1), "over");
                            }
                        }
                        Tok::Eof => return false,
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => false,
        }
    }

    fn parse_let(&mut self) -> PResult<Expr> {
        let start = self.bump().span;
        let (name, _) = self.expect_ident("a variable name")?;
        self.expect_sym("=")?;
        let saved = std::mem::replace(&mut self.no_in, true);
        let value = self.parse_expr();
        self.no_in = saved;
        let value = value?;
        self.expect_kw("in")?;
        let body = self.parse_expr()?;
        let span = start.to(body.span);
        Ok(Expr::new(
            ExprKind::Let(name, Box::new(value), Box::new(body)),
            span,
        ))
    }

    fn parse_binder(&mut self) -> PResult<Binder> {
        let (var, _) = self.expect_ident("a variable name")?;
        self.expect_kw("from")?;
        let source = self.parse_expr()?;
        let cond = if is_kw(self.peek(), "where") {
            self.bump();
            Some(self.parse_expr()?)
        } else {
            None
        };
        Ok(Binder { var, source, cond })
    }

    fn parse_quant(&mut self) -> PResult<Expr> {
        let kw = self.bump();
        let q = if is_kw(&kw.tok, "exists") {
            Quantifier::Exists
        } else {
            Quantifier::Forall
        };
        let mut binders = vec![self.parse_binder()?];
        while self.peek() == &Tok::Sym(",")
            && matches!(self.peek_at(1), Tok::Ident(_))
            && is_kw(self.peek_at(2), "from")
        {
            self.bump();
            binders.push(self.parse_binder()?);
        }
        let cond = if self.eat_sym(":") {
            Some(Box::new(self.parse_expr()?))
        } else {
            None
        };
        let span = Span::new(kw.span.start, self.prev_end());
        Ok(Expr::new(ExprKind::Quant(q, binders, cond), span))
    }

    fn parse_select(&mut self) -> PResult<Expr> {
        let start = self.bump().span;
        let (var, _) = self.expect_ident("a variable name")?;
        self.expect_kw("from")?;
        let source = self.parse_expr()?;
        self.expect_kw("where")?;
        let cond = self.parse_expr()?;
        let span = start.to(cond.span);
        Ok(Expr::new(
            ExprKind::Select(var, Box::new(source), Box::new(cond)),
            span,
        ))
    }

    fn parse_aggregate(&mut self, func: AggFn) -> PResult<Expr> {
        let start = self.bump().span;
        let value = self.parse_expr()?;
        self.expect_kw("over")?;
        let (var, _) = self.expect_ident("a variable name")?;
        self.expect_kw("from")?;
        let source = self.parse_expr()?;
        let cond = if is_kw(self.peek(), "where") {
            self.bump();
            Some(Box::new(self.parse_expr()?))
        } else {
            None
        };
        let span = Span::new(start.start, self.prev_end());
        Ok(Expr::new(
            ExprKind::Aggregate {
                func,
                value: Box::new(value),
                var,
                source: Box::new(source),
                cond,
            },
            span,
        ))
    }

    fn parse_chain(&mut self) -> PResult<Expr> {
        let start = self.bump().span;
        self.expect_sym("(")?;
        let saved = std::mem::replace(&mut self.no_in, false);
        let r = self.parse_chain_body();
        self.no_in = saved;
        let (events, ts_field, steps) = r?;
        let span = Span::new(start.start, self.prev_end());
        Ok(Expr::new(
            ExprKind::Chain {
                events: Box::new(events),
                ts_field,
                steps,
            },
            span,
        ))
    }

    fn parse_chain_body(&mut self) -> PResult<(Expr, String, Vec<ChainStep>)> {
        let events = self.parse_expr()?;
        self.expect_sym(",")?;
        let (ts_field, _) = self.expect_ident("the timestamp field name (e.g. `timestamp`)")?;
        self.expect_sym(",")?;
        self.expect_sym("[")?;
        let mut steps = Vec::new();
        loop {
            steps.push(self.parse_step()?);
            if self.eat_sym("]") {
                break;
            }
            if !self.eat_sym(",") {
                return Err(self.error("`,` or `]`"));
            }
        }
        self.expect_sym(")")?;
        Ok((events, ts_field, steps))
    }

    fn parse_step(&mut self) -> PResult<ChainStep> {
        let (label, label_span) = self.expect_ident("a step label (e.g. `A:`)")?;
        self.expect_sym(":")?;
        let (mut what, mut when, mut count, mut where_) = (None, None, None, None);
        while let Tok::Ident(word) = self.peek().clone() {
            let upper = word.to_ascii_uppercase();
            let clause_span = self.span();
            let duplicate = |p: &Self| {
                PqlErrors::from(
                    PqlError::new(
                        "duplicate_clause",
                        format!("`{upper}` appears twice in step `{label}`"),
                        clause_span,
                        p.src,
                    )
                    .expected("each of WHAT, WHEN, COUNT, WHERE at most once"),
                )
            };
            match upper.as_str() {
                "WHAT" if what.is_none() => {
                    self.bump();
                    self.expect_sym("(")?;
                    what = Some(self.parse_expr()?);
                    self.expect_sym(")")?;
                }
                "WHEN" if when.is_none() => {
                    self.bump();
                    self.expect_sym("(")?;
                    when = Some(self.parse_occurs_tail()?);
                    self.expect_sym(")")?;
                }
                "COUNT" if count.is_none() => {
                    self.bump();
                    self.expect_sym("(")?;
                    match self.peek().clone() {
                        Tok::Int(n) if (1..=i64::from(u32::MAX)).contains(&n) => {
                            self.bump();
                            count = Some(n as u32);
                        }
                        _ => return Err(self.error("a positive integer")),
                    }
                    self.expect_sym(")")?;
                }
                "WHERE" if where_.is_none() => {
                    self.bump();
                    self.expect_sym("(")?;
                    where_ = Some(self.parse_expr()?);
                    self.expect_sym(")")?;
                }
                "WHAT" | "WHEN" | "COUNT" | "WHERE" => return Err(duplicate(self)),
                _ => {
                    let mut err = self.error("`WHAT`, `WHEN`, `COUNT`, `WHERE`, `,` or `]`");
                    err.0[0].suggestion = suggest(&word, CHAIN_CLAUSES);
                    return Err(err);
                }
            }
        }
        let what = what.ok_or_else(|| {
            PqlErrors::from(
                PqlError::new(
                    "missing_clause",
                    format!("chain step `{label}` has no WHAT(...)"),
                    label_span,
                    self.src,
                )
                .expected("`WHAT(<event predicate>)`"),
            )
        })?;
        Ok(ChainStep {
            label,
            what,
            when,
            count,
            where_,
        })
    }

    /// Everything after `occurs` (and the argument of `WHEN`).
    fn parse_occurs_tail(&mut self) -> PResult<OccursCond> {
        if let Tok::Sym(s) = self.peek()
            && let Some(op) = CmpOp::from_symbol(s)
        {
            self.bump();
            let amount = match self.peek().clone() {
                Tok::Int(n) if (0..=i64::from(u32::MAX)).contains(&n) => {
                    self.bump();
                    n as u32
                }
                _ => return Err(self.error("a non-negative integer amount (e.g. `7`)")),
            };
            let unit = self.parse_unit()?;
            let dir = self.parse_direction()?;
            let anchor = self.parse_time_ref()?;
            return Ok(OccursCond::Distance {
                op,
                amount,
                unit,
                dir,
                anchor,
            });
        }
        if let Tok::Ident(w) = self.peek() {
            if let Some(dir) = Direction::parse(w) {
                self.bump();
                return Ok(OccursCond::Direction(dir, self.parse_time_ref()?));
            }
            if w.eq_ignore_ascii_case("between") {
                self.bump();
                let a = self.parse_time_ref()?;
                self.expect_kw("and")?;
                let b = self.parse_time_ref()?;
                return Ok(OccursCond::Between(a, b));
            }
            if w.eq_ignore_ascii_case("on") {
                self.bump();
            }
        }
        Ok(OccursCond::On(self.parse_time_ref()?))
    }

    fn parse_unit(&mut self) -> PResult<TimeUnit> {
        if let Tok::Ident(w) = self.peek()
            && let Some(u) = TimeUnit::parse(w)
        {
            self.bump();
            return Ok(u);
        }
        let mut err = self.error("a time unit (`seconds`, `hours`, `days`, `months`, ...)");
        if let Tok::Ident(w) = self.peek() {
            err.0[0].suggestion = suggest(w, UNIT_WORDS);
        }
        Err(err)
    }

    fn parse_direction(&mut self) -> PResult<Direction> {
        if let Tok::Ident(w) = self.peek()
            && let Some(d) = Direction::parse(w)
        {
            self.bump();
            return Ok(d);
        }
        let mut err = self.error("`before`, `after` or `from`");
        if let Tok::Ident(w) = self.peek() {
            err.0[0].suggestion = suggest(w, ["before", "after", "from"]);
        }
        Err(err)
    }

    fn parse_time_ref(&mut self) -> PResult<TimeRef> {
        if let Tok::Ident(w) = self.peek().clone() {
            if let Some(word) = TimeWord::parse(&w) {
                self.bump();
                return Ok(TimeRef::Word(word));
            }
            if let Some(anchor) = Anchor::parse(&w)
                && let Tok::Ident(u) = self.peek_at(1)
                && TimeUnit::parse(u).is_some()
            {
                self.bump();
                let unit = self.parse_unit()?;
                return Ok(TimeRef::Relative(anchor, unit));
            }
        }
        if matches!(self.peek(), Tok::Eof | Tok::Sym(")") | Tok::Sym("]")) {
            return Err(self.error(
                "a time reference (`now`, `today`, `last month`, `date(...)`, an attribute)",
            ));
        }
        self.enter()?;
        let e = self.parse_binary(5)?;
        self.depth -= 1;
        Ok(TimeRef::Expr(Box::new(e)))
    }
}

/// Unit words for suggestions.
const UNIT_WORDS: [&str; 22] = [
    "millisecond",
    "milliseconds",
    "second",
    "seconds",
    "minute",
    "minutes",
    "hour",
    "hours",
    "day",
    "days",
    "week",
    "weeks",
    "month",
    "months",
    "year",
    "years",
    "decade",
    "decades",
    "century",
    "centuries",
    "millennium",
    "millennia",
];

/// Turns each bare identifier into a variable reference when a binder of that name is in scope,
/// otherwise into a field of the implicit context. Done after parsing because `sum X.a over X`
/// uses `X` before binding it.
pub fn resolve(e: Expr, scope: &mut Vec<String>) -> Expr {
    let span = e.span;
    let r = |e: Expr, scope: &mut Vec<String>| Box::new(resolve(e, scope));
    let kind = match e.kind {
        ExprKind::Var(name) => {
            if scope.contains(&name) {
                ExprKind::Var(name)
            } else {
                ExprKind::Field {
                    object: Box::new(Expr::new(ExprKind::Context(0), span)),
                    name,
                }
            }
        }
        ExprKind::Array(items) => {
            ExprKind::Array(items.into_iter().map(|i| resolve(i, scope)).collect())
        }
        ExprKind::Object(entries) => ExprKind::Object(
            entries
                .into_iter()
                .map(|(k, v)| (k, resolve(v, scope)))
                .collect(),
        ),
        ExprKind::Field { object, name } => ExprKind::Field {
            object: r(*object, scope),
            name,
        },
        ExprKind::Call {
            name,
            name_span,
            receiver,
            args,
        } => ExprKind::Call {
            name,
            name_span,
            receiver: receiver.map(|x| r(*x, scope)),
            args: args.into_iter().map(|a| resolve(a, scope)).collect(),
        },
        ExprKind::Unary(op, x) => ExprKind::Unary(op, r(*x, scope)),
        ExprKind::Binary(op, a, b) => ExprKind::Binary(op, r(*a, scope), r(*b, scope)),
        ExprKind::Occurs(subject, cond) => {
            ExprKind::Occurs(r(*subject, scope), resolve_cond(cond, scope))
        }
        ExprKind::Filter(a, p) => ExprKind::Filter(r(*a, scope), r(*p, scope)),
        ExprKind::Lambda(params, body) => {
            let n = scope.len();
            scope.extend(params.iter().cloned());
            let body = r(*body, scope);
            scope.truncate(n);
            ExprKind::Lambda(params, body)
        }
        ExprKind::Let(name, value, body) => {
            let value = r(*value, scope);
            scope.push(name.clone());
            let body = r(*body, scope);
            scope.pop();
            ExprKind::Let(name, value, body)
        }
        ExprKind::Quant(q, binders, cond) => {
            let n = scope.len();
            let mut out = Vec::new();
            for b in binders {
                let source = resolve(b.source, scope);
                scope.push(b.var.clone());
                let c = b.cond.map(|c| resolve(c, scope));
                out.push(Binder {
                    var: b.var,
                    source,
                    cond: c,
                });
            }
            let cond = cond.map(|c| r(*c, scope));
            scope.truncate(n);
            ExprKind::Quant(q, out, cond)
        }
        ExprKind::Select(var, source, cond) => {
            let source = r(*source, scope);
            scope.push(var.clone());
            let cond = r(*cond, scope);
            scope.pop();
            ExprKind::Select(var, source, cond)
        }
        ExprKind::Aggregate {
            func,
            value,
            var,
            source,
            cond,
        } => {
            let source = r(*source, scope);
            scope.push(var.clone());
            let value = r(*value, scope);
            let cond = cond.map(|c| r(*c, scope));
            scope.pop();
            ExprKind::Aggregate {
                func,
                value,
                var,
                source,
                cond,
            }
        }
        ExprKind::Chain {
            events,
            ts_field,
            steps,
        } => ExprKind::Chain {
            events: r(*events, scope),
            ts_field,
            steps: steps
                .into_iter()
                .map(|s| ChainStep {
                    label: s.label,
                    what: resolve(s.what, scope),
                    when: s.when.map(|w| resolve_cond(w, scope)),
                    count: s.count,
                    where_: s.where_.map(|w| resolve(w, scope)),
                })
                .collect(),
        },
        k @ (ExprKind::Lit(_)
        | ExprKind::Param(_)
        | ExprKind::Context(_)
        | ExprKind::XEvent
        | ExprKind::Time(_)) => k,
    };
    Expr::new(kind, span)
}

fn resolve_ref(t: TimeRef, scope: &mut Vec<String>) -> TimeRef {
    match t {
        TimeRef::Expr(e) => TimeRef::Expr(Box::new(resolve(*e, scope))),
        other => other,
    }
}

fn resolve_cond(c: OccursCond, scope: &mut Vec<String>) -> OccursCond {
    match c {
        OccursCond::Distance {
            op,
            amount,
            unit,
            dir,
            anchor,
        } => OccursCond::Distance {
            op,
            amount,
            unit,
            dir,
            anchor: resolve_ref(anchor, scope),
        },
        OccursCond::Direction(d, t) => OccursCond::Direction(d, resolve_ref(t, scope)),
        OccursCond::On(t) => OccursCond::On(resolve_ref(t, scope)),
        OccursCond::Between(a, b) => {
            OccursCond::Between(resolve_ref(a, scope), resolve_ref(b, scope))
        }
    }
}
