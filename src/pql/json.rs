//! The `pql/json` format (pql.md §5).
//!
//! The four documented node types are produced exactly as Adobe documents them:
//! `fnApply {fnName, params}` (operators and functions; a method's receiver is `params[0]`),
//! `fieldLookup {fieldName, object}`, `parameterReference {position}` (the implicit profile is
//! position 1) and `literal {literalType, value}`. Constructs Adobe does not document are
//! encoded with extension node types, following the proposal of pql.md §5.3:
//!
//! | nodeType | fields |
//! | --- | --- |
//! | `literal` | `literalType` ∈ `String`, `Integer`, `Double`, `Boolean`, `Null`, `Array` (array of scalars) |
//! | `arrayLiteral` | `items` (nodes) |
//! | `objectLiteral` | `entries`: `[{key, value}]` |
//! | `contextReference` | `up`: filter levels climbed (`^` = 1); only as a `fieldLookup` object |
//! | `variableReference` | `name` |
//! | `xEvent` | — |
//! | `timeReference` | `word` (`now`, `today`, ...) or `anchor` + `unit` (`last` `week`) |
//! | `occurs` | `subject`, `condition` |
//! | `filter` | `array`, `predicate` |
//! | `lambda` | `params`, `body` |
//! | `let` | `name`, `value`, `body` |
//! | `exists` / `forall` | `binders`: `[{name, from, where?}]`, `condition?` |
//! | `select` | `name`, `from`, `where` |
//! | `aggregate` | `function`, `value`, `name`, `from`, `where?` |
//! | `chain` | `events`, `timestampField`, `steps`: `[{label, what, when?, count?, where?}]` |
//!
//! An `occurs` condition is `{form: "distance", comparison, amount, unit, direction, reference}`,
//! `{form: "direction", direction, reference}`, `{form: "on", reference}` or
//! `{form: "between", from, to}`.
//!
//! Inside a filter or per-element argument a bare field belongs to the current element; a
//! `parameterReference` there is always the profile, and element fields use
//! `contextReference {up: 0}`.

use serde_json::{Map, Value, json};

use super::ast::*;
use super::error::{PqlError, PqlErrors};
use super::functions;
use super::parser::MAX_DEPTH;
use super::text::is_method;

/// Deepest array/object nesting serde_json accepts when parsing (its recursion limit).
pub const MAX_JSON_NESTING: usize = 127;

/// Array/object nesting of a JSON value (a scalar is 0).
pub fn nesting(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

/// Renders `e` as a `pql/json` document.
pub fn to_json(e: &Expr) -> Value {
    enc(e, 0)
}

fn lit(ty: &str, value: Value) -> Value {
    json!({"nodeType": "literal", "literalType": ty, "value": value})
}

fn scalar(e: &Expr) -> Option<Value> {
    match &e.kind {
        ExprKind::Lit(Literal::Str(s)) => Some(Value::from(s.as_str())),
        ExprKind::Lit(Literal::Int(i)) => Some(Value::from(*i)),
        ExprKind::Lit(Literal::Double(d)) => serde_json::Number::from_f64(*d).map(Value::Number),
        ExprKind::Lit(Literal::Bool(b)) => Some(Value::Bool(*b)),
        _ => None,
    }
}

fn time_ref(r: &TimeRef, depth: u32) -> Value {
    match r {
        TimeRef::Word(w) => json!({"nodeType": "timeReference", "word": w.as_str()}),
        TimeRef::Relative(a, u) => {
            json!({"nodeType": "timeReference", "anchor": a.as_str(), "unit": u.singular()})
        }
        TimeRef::Expr(e) => enc(e, depth),
    }
}

fn cond(c: &OccursCond, depth: u32) -> Value {
    match c {
        OccursCond::Distance {
            op,
            amount,
            unit,
            dir,
            anchor,
        } => json!({
            "form": "distance", "comparison": op.symbol(), "amount": amount, "unit": unit.singular(),
            "direction": dir.as_str(), "reference": time_ref(anchor, depth)
        }),
        OccursCond::Direction(d, r) => {
            json!({"form": "direction", "direction": d.as_str(), "reference": time_ref(r, depth)})
        }
        OccursCond::On(r) => json!({"form": "on", "reference": time_ref(r, depth)}),
        OccursCond::Between(a, b) => {
            json!({"form": "between", "from": time_ref(a, depth), "to": time_ref(b, depth)})
        }
    }
}

fn per_element_index(name: &str) -> Option<usize> {
    functions::lookup(name).and_then(|f| f.per_element)
}

/// Builds a node object. Used instead of `json!` in the recursive encoder because each `json!`
/// expansion keeps its temporaries in the caller's stack frame, which made deep (but legal)
/// expressions overflow 2 MiB thread stacks in debug builds.
fn obj(node_type: &str, fields: Vec<(&str, Value)>) -> Value {
    let mut m = Map::with_capacity(fields.len() + 1);
    m.insert("nodeType".to_string(), Value::from(node_type));
    for (k, v) in fields {
        m.insert(k.to_string(), v);
    }
    Value::Object(m)
}

fn fn_apply(name: &str, params: Vec<Value>) -> Value {
    obj(
        "fnApply",
        vec![
            ("fnName", Value::from(name)),
            ("params", Value::Array(params)),
        ],
    )
}

fn s(v: &str) -> Value {
    Value::from(v)
}

/// `depth` is the number of enclosing element contexts. At depth 0 the implicit context is the
/// profile and is written as `parameterReference 1`, as in Adobe's examples.
fn enc(e: &Expr, depth: u32) -> Value {
    match &e.kind {
        ExprKind::Lit(l) => match l {
            Literal::Str(x) => lit("String", s(x)),
            Literal::Int(i) => lit("Integer", Value::from(*i)),
            Literal::Double(d) => lit(
                "Double",
                serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
            ),
            Literal::Bool(b) => lit("Boolean", Value::Bool(*b)),
            Literal::Null => lit("Null", Value::Null),
        },
        ExprKind::Array(items) => match items.iter().map(scalar).collect::<Option<Vec<_>>>() {
            Some(vals) => lit("Array", Value::Array(vals)),
            None => obj(
                "arrayLiteral",
                vec![(
                    "items",
                    Value::Array(items.iter().map(|i| enc(i, depth)).collect()),
                )],
            ),
        },
        ExprKind::Object(entries) => {
            let entries = entries
                .iter()
                .map(|(k, v)| {
                    let mut m = Map::new();
                    m.insert("key".into(), s(k));
                    m.insert("value".into(), enc(v, depth));
                    Value::Object(m)
                })
                .collect();
            obj("objectLiteral", vec![("entries", Value::Array(entries))])
        }
        ExprKind::Param(n) => obj("parameterReference", vec![("position", Value::from(*n))]),
        ExprKind::Context(0) if depth == 0 => {
            obj("parameterReference", vec![("position", Value::from(1))])
        }
        ExprKind::Context(up) => obj("contextReference", vec![("up", Value::from(*up))]),
        ExprKind::Var(v) => obj("variableReference", vec![("name", s(v))]),
        ExprKind::Field { object, name } => obj(
            "fieldLookup",
            vec![("fieldName", s(name)), ("object", enc(object, depth))],
        ),
        ExprKind::Call {
            name,
            receiver,
            args,
            ..
        } => {
            let mut params = Vec::new();
            if let Some(r) = receiver {
                params.push(enc(r, depth));
            }
            let pe = per_element_index(name);
            for (i, a) in args.iter().enumerate() {
                let inner = if pe == Some(i) && !matches!(a.kind, ExprKind::Lambda(..)) {
                    depth + 1
                } else {
                    depth
                };
                params.push(enc(a, inner));
            }
            let has_params = !params.is_empty();
            let mut node = fn_apply(name, params);
            // Unknown functions, and known ones called in the other style (`exists()` without a
            // receiver, which the checker rejects later), carry their call style explicitly so
            // the text form survives.
            if functions::lookup(name).is_none()
                || is_method(name, has_params) != receiver.is_some()
            {
                node["method"] = Value::Bool(receiver.is_some());
            }
            node
        }
        ExprKind::Unary(UnOp::Not, x) => fn_apply("not", vec![enc(x, depth)]),
        ExprKind::Unary(UnOp::Neg, x) => fn_apply("-", vec![enc(x, depth)]),
        ExprKind::Binary(op, a, b) => fn_apply(op.symbol(), vec![enc(a, depth), enc(b, depth)]),
        ExprKind::Occurs(x, c) => obj(
            "occurs",
            vec![("subject", enc(x, depth)), ("condition", cond(c, depth))],
        ),
        ExprKind::Filter(a, p) => obj(
            "filter",
            vec![("array", enc(a, depth)), ("predicate", enc(p, depth + 1))],
        ),
        ExprKind::Lambda(params, body) => obj(
            "lambda",
            vec![
                (
                    "params",
                    Value::Array(params.iter().map(|p| s(p)).collect()),
                ),
                ("body", enc(body, depth)),
            ],
        ),
        ExprKind::Let(n, v, b) => obj(
            "let",
            vec![
                ("name", s(n)),
                ("value", enc(v, depth)),
                ("body", enc(b, depth)),
            ],
        ),
        ExprKind::Quant(q, binders, c) => {
            let bs: Vec<Value> = binders
                .iter()
                .map(|b| {
                    let mut o = Map::new();
                    o.insert("name".into(), s(&b.var));
                    o.insert("from".into(), enc(&b.source, depth));
                    if let Some(w) = &b.cond {
                        o.insert("where".into(), enc(w, depth));
                    }
                    Value::Object(o)
                })
                .collect();
            let mut fields = vec![("binders", Value::Array(bs))];
            if let Some(c) = c {
                fields.push(("condition", enc(c, depth)));
            }
            obj(
                if *q == Quantifier::Exists {
                    "exists"
                } else {
                    "forall"
                },
                fields,
            )
        }
        ExprKind::Select(v, src, c) => obj(
            "select",
            vec![
                ("name", s(v)),
                ("from", enc(src, depth)),
                ("where", enc(c, depth)),
            ],
        ),
        ExprKind::Aggregate {
            func,
            value,
            var,
            source,
            cond: c,
        } => {
            let mut fields = vec![
                ("function", s(func.as_str())),
                ("value", enc(value, depth)),
                ("name", s(var)),
                ("from", enc(source, depth)),
            ];
            if let Some(c) = c {
                fields.push(("where", enc(c, depth)));
            }
            obj("aggregate", fields)
        }
        ExprKind::Chain {
            events,
            ts_field,
            steps,
        } => {
            let steps: Vec<Value> = steps
                .iter()
                .map(|st| {
                    let mut o = Map::new();
                    o.insert("label".into(), s(&st.label));
                    o.insert("what".into(), enc(&st.what, depth + 1));
                    if let Some(w) = &st.when {
                        o.insert("when".into(), cond(w, depth + 1));
                    }
                    if let Some(n) = st.count {
                        o.insert("count".into(), Value::from(n));
                    }
                    if let Some(w) = &st.where_ {
                        o.insert("where".into(), enc(w, depth + 1));
                    }
                    Value::Object(o)
                })
                .collect();
            obj(
                "chain",
                vec![
                    ("events", enc(events, depth)),
                    ("timestampField", s(ts_field)),
                    ("steps", Value::Array(steps)),
                ],
            )
        }
        ExprKind::XEvent => obj("xEvent", vec![]),
        ExprKind::Time(w) => obj("timeReference", vec![("word", s(w.as_str()))]),
    }
}

/// Parses a `pql/json` document given as text.
pub fn parse_json_text(src: &str) -> Result<Expr, PqlErrors> {
    let v: Value = serde_json::from_str(src).map_err(|e| {
        let (line, col) = (e.line(), e.column());
        // Map serde's 1-based line/column back to a byte offset for the span.
        let offset = src
            .split_inclusive('\n')
            .take(line.saturating_sub(1))
            .map(str::len)
            .sum::<usize>()
            + col.saturating_sub(1);
        let offset = offset.min(src.len());
        PqlErrors::from(
            PqlError::new(
                "invalid_json",
                format!("invalid JSON: {e}"),
                Span::new(offset, offset),
                src,
            )
            .expected("a pql/json document"),
        )
    })?;
    from_json(&v, src)
}

/// Decodes a `pql/json` value. `src` is the document text errors point into (the whole
/// document is the span, and the message names the JSON pointer of the faulty node).
pub fn from_json(v: &Value, src: &str) -> Result<Expr, PqlErrors> {
    let d = Decoder {
        src,
        span: Span::new(0, src.len()),
    };
    d.node(v, "", 0, 0).map_err(PqlErrors::from)
}

/// The node being decoded: its object, JSON pointer, element depth and nesting.
struct Ctx<'v> {
    o: &'v Map<String, Value>,
    at: &'v str,
    depth: u32,
    nest: usize,
}

struct Decoder<'s> {
    src: &'s str,
    span: Span,
}

type DResult<T> = Result<T, PqlError>;

impl Decoder<'_> {
    fn fail(&self, at: &str, msg: impl Into<String>, expected: &str) -> PqlError {
        let at = if at.is_empty() { "/" } else { at };
        PqlError::new(
            "invalid_pql_json",
            format!("at {at}: {}", msg.into()),
            self.span,
            self.src,
        )
        .expected(expected)
    }

    fn field<'v>(&self, o: &'v Map<String, Value>, key: &str, at: &str) -> DResult<&'v Value> {
        o.get(key).ok_or_else(|| {
            self.fail(
                at,
                format!("missing field `{key}`"),
                &format!("a `{key}` field"),
            )
        })
    }

    fn string(&self, o: &Map<String, Value>, key: &str, at: &str) -> DResult<String> {
        self.field(o, key, at)?
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| self.fail(&format!("{at}/{key}"), "expected a string", "a string"))
    }

    /// Reads the string `key` and parses it as one of a closed set of words; the error names the
    /// key, the word found and `expected`.
    fn keyword<T>(
        &self,
        o: &Map<String, Value>,
        key: &str,
        at: &str,
        what: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> DResult<T> {
        let word = self.string(o, key, at)?;
        parse(&word).ok_or_else(|| {
            self.fail(
                &format!("{at}/{key}"),
                format!("unknown {what} `{word}`"),
                expected,
            )
        })
    }

    fn uint(&self, o: &Map<String, Value>, key: &str, at: &str) -> DResult<u32> {
        self.field(o, key, at)?
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                self.fail(
                    &format!("{at}/{key}"),
                    "expected a non-negative integer",
                    "a non-negative integer",
                )
            })
    }

    fn mk(&self, kind: ExprKind) -> Expr {
        Expr::new(kind, self.span)
    }

    /// Decodes one node. Each node type is decoded by its own method so that this recursive
    /// dispatcher keeps a small stack frame (see [`obj`] for why that matters).
    fn node(&self, v: &Value, at: &str, depth: u32, nest: usize) -> DResult<Expr> {
        if nest > MAX_DEPTH {
            return Err(self.fail(
                at,
                format!("nested more than {MAX_DEPTH} levels deep"),
                "a flatter expression",
            ));
        }
        let Value::Object(o) = v else {
            return Err(self.fail(at, "expected a node object", "an object with a `nodeType`"));
        };
        let ty = self.string(o, "nodeType", at)?;
        let c = Ctx { o, at, depth, nest };
        let kind = match ty.as_str() {
            "literal" => self.literal(&c)?,
            "arrayLiteral" => ExprKind::Array(self.nodes(o, "items", at, depth, nest)?),
            "objectLiteral" => self.object_literal(&c)?,
            "parameterReference" => self.parameter(&c)?,
            "contextReference" => {
                return Err(self.fail(
                    at,
                    "a contextReference may only be the object of a fieldLookup",
                    "a fieldLookup object",
                ));
            }
            "variableReference" => ExprKind::Var(self.name(o, "name", at)?),
            "fieldLookup" => self.field_lookup(&c)?,
            "xEvent" => ExprKind::XEvent,
            "timeReference" => match self.time_ref(v, at, depth, nest)? {
                TimeRef::Word(w) => ExprKind::Time(w),
                _ => {
                    return Err(self.fail(
                        at,
                        "a relative time (`last week`) is only valid inside `occurs`",
                        "a time word",
                    ));
                }
            },
            "fnApply" => return self.fn_apply(o, at, depth, nest),
            "occurs" => self.occurs(&c)?,
            "filter" => ExprKind::Filter(
                Box::new(self.sub(&c, "array", depth)?),
                Box::new(self.sub(&c, "predicate", depth + 1)?),
            ),
            "lambda" => self.lambda(&c)?,
            "let" => ExprKind::Let(
                self.name(o, "name", at)?,
                Box::new(self.sub(&c, "value", depth)?),
                Box::new(self.sub(&c, "body", depth)?),
            ),
            "exists" | "forall" => self.quantifier(&c, ty == "exists")?,
            "select" => ExprKind::Select(
                self.name(o, "name", at)?,
                Box::new(self.sub(&c, "from", depth)?),
                Box::new(self.sub(&c, "where", depth)?),
            ),
            "aggregate" => self.aggregate(&c)?,
            "chain" => self.chain(&c)?,
            other => {
                return Err(self
                    .fail(at, format!("unknown nodeType `{other}`"), "fnApply, fieldLookup, parameterReference, literal or a documented extension")
                    .suggest(super::error::suggest(other, NODE_TYPES)));
            }
        };
        Ok(self.mk(kind))
    }

    fn sub(&self, c: &Ctx<'_>, key: &str, depth: u32) -> DResult<Expr> {
        self.node(
            self.field(c.o, key, c.at)?,
            &format!("{}/{key}", c.at),
            depth,
            c.nest + 1,
        )
    }

    fn opt_sub(
        &self,
        o: &Map<String, Value>,
        key: &str,
        at: &str,
        depth: u32,
        nest: usize,
    ) -> DResult<Option<Expr>> {
        o.get(key)
            .map(|w| self.node(w, &format!("{at}/{key}"), depth, nest + 1))
            .transpose()
    }

    fn literal(&self, c: &Ctx<'_>) -> DResult<ExprKind> {
        let (o, at) = (c.o, c.at);
        let value = self.field(o, "value", at)?;
        let lt = self.string(o, "literalType", at)?;
        Ok(match (lt.as_str(), value) {
            ("Array", Value::Array(items)) => ExprKind::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| {
                        self.scalar(x, &format!("{at}/value/{i}"))
                            .map(|l| self.mk(ExprKind::Lit(l)))
                    })
                    .collect::<DResult<_>>()?,
            ),
            ("String", Value::String(s)) => ExprKind::Lit(Literal::Str(s.clone())),
            ("Integer", Value::Number(n)) if n.is_i64() => {
                ExprKind::Lit(Literal::Int(n.as_i64().unwrap_or(0)))
            }
            ("Double", Value::Number(n)) => {
                ExprKind::Lit(Literal::Double(n.as_f64().unwrap_or(0.0)))
            }
            ("Boolean", Value::Bool(b)) => ExprKind::Lit(Literal::Bool(*b)),
            ("Null", Value::Null) => ExprKind::Lit(Literal::Null),
            _ => {
                return Err(self.fail(
                    at,
                    format!("literal of type `{lt}` has an incompatible value {value}"),
                    "literalType String, Integer, Double, Boolean, Null or Array with a matching value",
                ));
            }
        })
    }

    fn object_literal(&self, c: &Ctx<'_>) -> DResult<ExprKind> {
        let entries = self.array(c.o, "entries", c.at)?;
        let mut out = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let at_i = format!("{}/entries/{i}", c.at);
            let Value::Object(eo) = e else {
                return Err(self.fail(&at_i, "expected an entry object", "{\"key\", \"value\"}"));
            };
            let key = self.string(eo, "key", &at_i)?;
            let value = self.node(
                self.field(eo, "value", &at_i)?,
                &format!("{at_i}/value"),
                c.depth,
                c.nest + 1,
            )?;
            out.push((key, value));
        }
        Ok(ExprKind::Object(out))
    }

    fn parameter(&self, c: &Ctx<'_>) -> DResult<ExprKind> {
        let n = self.uint(c.o, "position", c.at)?;
        if n == 0 {
            return Err(self.fail(c.at, "parameter positions start at 1", "position >= 1"));
        }
        // Outside any filter, parameter 1 is the implicit context: a bare name in text.
        Ok(if n == 1 && c.depth == 0 {
            ExprKind::Context(0)
        } else {
            ExprKind::Param(n)
        })
    }

    fn field_lookup(&self, c: &Ctx<'_>) -> DResult<ExprKind> {
        let name = self.string(c.o, "fieldName", c.at)?;
        let obj_v = self.field(c.o, "object", c.at)?;
        let object = match obj_v {
            Value::Object(oo)
                if oo.get("nodeType").and_then(Value::as_str) == Some("contextReference") =>
            {
                let up = self.uint(oo, "up", &format!("{}/object", c.at))?;
                self.mk(ExprKind::Context(up))
            }
            _ => self.node(obj_v, &format!("{}/object", c.at), c.depth, c.nest + 1)?,
        };
        Ok(ExprKind::Field {
            object: Box::new(object),
            name,
        })
    }

    fn occurs(&self, c: &Ctx<'_>) -> DResult<ExprKind> {
        let subject = self.sub(c, "subject", c.depth)?;
        let cond = self.cond(
            self.field(c.o, "condition", c.at)?,
            &format!("{}/condition", c.at),
            c.depth,
            c.nest,
        )?;
        Ok(ExprKind::Occurs(Box::new(subject), cond))
    }

    fn lambda(&self, c: &Ctx<'_>) -> DResult<ExprKind> {
        let params = self
            .array(c.o, "params", c.at)?
            .iter()
            .map(|p| {
                p.as_str()
                    .filter(|s| super::text::is_plain_ident(s))
                    .map(str::to_string)
                    .ok_or_else(|| {
                        self.fail(
                            &format!("{}/params", c.at),
                            "parameter names must be identifiers",
                            "identifiers",
                        )
                    })
            })
            .collect::<DResult<Vec<_>>>()?;
        if params.is_empty() {
            return Err(self.fail(
                c.at,
                "a lambda needs at least one parameter",
                "a non-empty `params`",
            ));
        }
        Ok(ExprKind::Lambda(
            params,
            Box::new(self.sub(c, "body", c.depth)?),
        ))
    }

    fn quantifier(&self, c: &Ctx<'_>, exists: bool) -> DResult<ExprKind> {
        let q = if exists {
            Quantifier::Exists
        } else {
            Quantifier::Forall
        };
        let mut binders = Vec::new();
        for (i, b) in self.array(c.o, "binders", c.at)?.iter().enumerate() {
            let at_i = format!("{}/binders/{i}", c.at);
            let Value::Object(bo) = b else {
                return Err(self.fail(
                    &at_i,
                    "expected a binder object",
                    "{\"name\", \"from\", \"where\"?}",
                ));
            };
            binders.push(Binder {
                var: self.name(bo, "name", &at_i)?,
                source: self.node(
                    self.field(bo, "from", &at_i)?,
                    &format!("{at_i}/from"),
                    c.depth,
                    c.nest + 1,
                )?,
                cond: self.opt_sub(bo, "where", &at_i, c.depth, c.nest)?,
            });
        }
        if binders.is_empty() {
            return Err(self.fail(
                c.at,
                "a quantifier needs at least one binder",
                "a non-empty `binders`",
            ));
        }
        let cond = self.opt_sub(c.o, "condition", c.at, c.depth, c.nest)?;
        Ok(ExprKind::Quant(q, binders, cond.map(Box::new)))
    }

    fn aggregate(&self, c: &Ctx<'_>) -> DResult<ExprKind> {
        let fname = self.string(c.o, "function", c.at)?;
        let func = AggFn::parse(&fname).ok_or_else(|| {
            self.fail(
                &format!("{}/function", c.at),
                format!("unknown aggregate `{fname}`"),
                "sum, count, min, max or average",
            )
        })?;
        Ok(ExprKind::Aggregate {
            func,
            value: Box::new(self.sub(c, "value", c.depth)?),
            var: self.name(c.o, "name", c.at)?,
            source: Box::new(self.sub(c, "from", c.depth)?),
            cond: self
                .opt_sub(c.o, "where", c.at, c.depth, c.nest)?
                .map(Box::new),
        })
    }

    fn chain(&self, c: &Ctx<'_>) -> DResult<ExprKind> {
        let events = self.sub(c, "events", c.depth)?;
        let ts_field = self.string(c.o, "timestampField", c.at)?;
        let inner = c.depth + 1;
        let mut steps = Vec::new();
        for (i, st) in self.array(c.o, "steps", c.at)?.iter().enumerate() {
            let at_i = format!("{}/steps/{i}", c.at);
            let Value::Object(so) = st else {
                return Err(self.fail(
                    &at_i,
                    "expected a step object",
                    "{\"label\", \"what\", ...}",
                ));
            };
            let count = match so.get("count") {
                None => None,
                Some(_) => match self.uint(so, "count", &at_i)? {
                    0 => {
                        return Err(self.fail(
                            &at_i,
                            "COUNT must be at least 1",
                            "a positive count",
                        ));
                    }
                    n => Some(n),
                },
            };
            steps.push(ChainStep {
                label: self.name(so, "label", &at_i)?,
                what: self.node(
                    self.field(so, "what", &at_i)?,
                    &format!("{at_i}/what"),
                    inner,
                    c.nest + 1,
                )?,
                when: so
                    .get("when")
                    .map(|w| self.cond(w, &format!("{at_i}/when"), inner, c.nest))
                    .transpose()?,
                count,
                where_: self.opt_sub(so, "where", &at_i, inner, c.nest)?,
            });
        }
        if steps.is_empty() {
            return Err(self.fail(
                c.at,
                "a chain needs at least one step",
                "a non-empty `steps`",
            ));
        }
        Ok(ExprKind::Chain {
            events: Box::new(events),
            ts_field,
            steps,
        })
    }

    fn name(&self, o: &Map<String, Value>, key: &str, at: &str) -> DResult<String> {
        let s = self.string(o, key, at)?;
        if super::text::is_plain_ident(&s) {
            Ok(s)
        } else {
            Err(self.fail(
                &format!("{at}/{key}"),
                format!("`{s}` is not a valid name"),
                "an identifier",
            ))
        }
    }

    fn array<'v>(&self, o: &'v Map<String, Value>, key: &str, at: &str) -> DResult<&'v Vec<Value>> {
        self.field(o, key, at)?
            .as_array()
            .ok_or_else(|| self.fail(&format!("{at}/{key}"), "expected an array", "an array"))
    }

    fn nodes(
        &self,
        o: &Map<String, Value>,
        key: &str,
        at: &str,
        depth: u32,
        nest: usize,
    ) -> DResult<Vec<Expr>> {
        self.array(o, key, at)?
            .iter()
            .enumerate()
            .map(|(i, x)| self.node(x, &format!("{at}/{key}/{i}"), depth, nest + 1))
            .collect()
    }

    fn scalar(&self, v: &Value, at: &str) -> DResult<Literal> {
        Ok(match v {
            Value::String(s) => Literal::Str(s.clone()),
            Value::Bool(b) => Literal::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) if !n.is_f64() => Literal::Int(i),
                _ => Literal::Double(n.as_f64().unwrap_or(0.0)),
            },
            Value::Null => Literal::Null,
            _ => {
                return Err(self.fail(
                    at,
                    "array literal items must be scalars",
                    "a string, number, boolean or null",
                ));
            }
        })
    }

    fn fn_apply(&self, o: &Map<String, Value>, at: &str, depth: u32, nest: usize) -> DResult<Expr> {
        let name = self.string(o, "fnName", at)?;
        let raw = self.array(o, "params", at)?;
        let param = |i: usize, d: u32| self.node(&raw[i], &format!("{at}/params/{i}"), d, nest + 1);
        let arity = |n: usize| -> DResult<()> {
            if raw.len() == n {
                Ok(())
            } else {
                Err(self.fail(
                    at,
                    format!("`{name}` takes {n} params, found {}", raw.len()),
                    &format!("{n} params"),
                ))
            }
        };
        let kind = if let Some(op) =
            BinOp::from_symbol(&name).filter(|_| !(name == "-" && raw.len() == 1))
        {
            arity(2)?;
            ExprKind::Binary(op, Box::new(param(0, depth)?), Box::new(param(1, depth)?))
        } else if name == "not" || name == "!" {
            arity(1)?;
            ExprKind::Unary(UnOp::Not, Box::new(param(0, depth)?))
        } else if name == "-" {
            ExprKind::Unary(UnOp::Neg, Box::new(param(0, depth)?))
        } else {
            let method = match o.get("method").and_then(Value::as_bool) {
                Some(m) => m,
                None => is_method(&name, !raw.is_empty()),
            };
            if method && raw.is_empty() {
                return Err(self.fail(
                    at,
                    format!("method `{name}` needs its receiver as params[0]"),
                    "a receiver in params[0]",
                ));
            }
            let pe = functions::lookup(&name).and_then(|f| f.per_element);
            let offset = usize::from(method);
            let receiver = if method {
                Some(Box::new(param(0, depth)?))
            } else {
                None
            };
            let mut args = Vec::new();
            for (i, raw_arg) in raw.iter().enumerate().skip(offset) {
                let lambda = raw_arg.get("nodeType").and_then(Value::as_str) == Some("lambda");
                let d = if pe == Some(i - offset) && !lambda {
                    depth + 1
                } else {
                    depth
                };
                args.push(param(i, d)?);
            }
            ExprKind::Call {
                name,
                name_span: self.span,
                receiver,
                args,
            }
        };
        Ok(self.mk(kind))
    }

    fn time_ref(&self, v: &Value, at: &str, depth: u32, nest: usize) -> DResult<TimeRef> {
        if let Value::Object(o) = v
            && o.get("nodeType").and_then(Value::as_str) == Some("timeReference")
        {
            if let Some(w) = o.get("word") {
                let w = w.as_str().and_then(TimeWord::parse).ok_or_else(|| {
                    self.fail(
                        &format!("{at}/word"),
                        "unknown time word",
                        "now, today, yesterday or tomorrow",
                    )
                })?;
                return Ok(TimeRef::Word(w));
            }
            let anchor = self.keyword(
                o,
                "anchor",
                at,
                "anchor",
                "this, last or next",
                Anchor::parse,
            )?;
            let unit = self.keyword(o, "unit", at, "time unit", "a time unit", TimeUnit::parse)?;
            return Ok(TimeRef::Relative(anchor, unit));
        }
        Ok(TimeRef::Expr(Box::new(self.node(
            v,
            at,
            depth,
            nest + 1,
        )?)))
    }

    fn cond(&self, v: &Value, at: &str, depth: u32, nest: usize) -> DResult<OccursCond> {
        let Value::Object(o) = v else {
            return Err(self.fail(at, "expected an occurs condition object", "{\"form\", ...}"));
        };
        let form = self.string(o, "form", at)?;
        let r = |key: &str| -> DResult<TimeRef> {
            self.time_ref(self.field(o, key, at)?, &format!("{at}/{key}"), depth, nest)
        };
        let dir = || {
            self.keyword(
                o,
                "direction",
                at,
                "direction",
                "before, after or from",
                Direction::parse,
            )
        };
        Ok(match form.as_str() {
            "distance" => {
                let op = self.keyword(
                    o,
                    "comparison",
                    at,
                    "comparison",
                    "=, !=, <, <=, > or >=",
                    CmpOp::from_symbol,
                )?;
                let unit =
                    self.keyword(o, "unit", at, "time unit", "a time unit", TimeUnit::parse)?;
                OccursCond::Distance {
                    op,
                    amount: self.uint(o, "amount", at)?,
                    unit,
                    dir: dir()?,
                    anchor: r("reference")?,
                }
            }
            "direction" => OccursCond::Direction(dir()?, r("reference")?),
            "on" => OccursCond::On(r("reference")?),
            "between" => OccursCond::Between(r("from")?, r("to")?),
            other => {
                return Err(self.fail(
                    &format!("{at}/form"),
                    format!("unknown occurs form `{other}`"),
                    "distance, direction, on or between",
                ));
            }
        })
    }
}

const NODE_TYPES: [&str; 19] = [
    "fnApply",
    "fieldLookup",
    "parameterReference",
    "literal",
    "arrayLiteral",
    "objectLiteral",
    "contextReference",
    "variableReference",
    "xEvent",
    "timeReference",
    "occurs",
    "filter",
    "lambda",
    "let",
    "exists",
    "forall",
    "select",
    "aggregate",
    "chain",
];
