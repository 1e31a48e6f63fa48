//! Optional validation of profile field names against a schema's list of paths.
//!
//! PQL itself has no schema (attributes are untyped until evaluation), so misspelt field names
//! are only detectable when the caller knows the profile schema, e.g. the tenant's union
//! schema. [`check_fields`] reports each profile path that is not in the list, with the closest
//! known path as a suggestion.

use super::ast::*;
use super::error::{PqlError, PqlErrors, edit_distance};
use super::functions;

/// Checks every profile field path of `expr` against `known` (dotted paths such as
/// `person.name.lastName`). A path is accepted when it is listed, when it is a prefix of a
/// listed path (an object), or when it extends a listed path (a map or array whose inner
/// fields the list does not enumerate). Event fields (inside filters of `xEvent`, chain steps)
/// are not checked. `source` is the text `expr` was parsed from, for error positions.
pub fn check_fields(expr: &Expr, source: &str, known: &[&str]) -> Result<(), PqlErrors> {
    let mut w = Walker {
        source,
        known,
        errors: Vec::new(),
        profile_var: None,
    };
    if let ExprKind::Lambda(params, body) = &expr.kind {
        w.profile_var = params.first().map(String::as_str);
        w.walk(body, 0);
    } else {
        w.walk(expr, 0);
    }
    if w.errors.is_empty() {
        Ok(())
    } else {
        Err(PqlErrors(w.errors))
    }
}

struct Walker<'a> {
    source: &'a str,
    known: &'a [&'a str],
    errors: Vec<PqlError>,
    profile_var: Option<&'a str>,
}

impl<'a> Walker<'a> {
    fn path(&mut self, e: &Expr, depth: u32) {
        let mut segs = Vec::new();
        let mut cur = e;
        while let ExprKind::Field { object, name } = &cur.kind {
            segs.push(name.as_str());
            cur = object;
        }
        let on_profile = match &cur.kind {
            ExprKind::Context(up) => *up == depth,
            ExprKind::Param(1) => true,
            ExprKind::Var(v) => Some(v.as_str()) == self.profile_var,
            _ => {
                // A computed base: check the base, not the path.
                self.walk(cur, depth);
                return;
            }
        };
        if !on_profile {
            return;
        }
        segs.reverse();
        let path = segs.join(".");
        let ok = self.known.iter().any(|k| {
            *k == path
                || (k.len() > path.len()
                    && k.starts_with(&path)
                    && k.as_bytes()[path.len()] == b'.')
                || (path.len() > k.len() && path.starts_with(k) && path.as_bytes()[k.len()] == b'.')
        });
        if !ok {
            let limit = (path.chars().count() / 3).max(1);
            let suggestion = self
                .known
                .iter()
                .map(|k| (edit_distance(&path, k), *k))
                .filter(|(d, _)| *d <= limit)
                .min_by_key(|(d, _)| *d)
                .map(|(_, k)| k.to_string());
            self.errors.push(
                PqlError::new(
                    "unknown_field",
                    format!("unknown field `{path}`"),
                    e.span,
                    self.source,
                )
                .expected("a field of the profile schema")
                .suggest(suggestion),
            );
        }
    }

    fn cond(&mut self, c: &OccursCond, depth: u32) {
        let refs: Vec<&TimeRef> = match c {
            OccursCond::Distance { anchor, .. } => vec![anchor],
            OccursCond::Direction(_, r) | OccursCond::On(r) => vec![r],
            OccursCond::Between(a, b) => vec![a, b],
        };
        for r in refs {
            if let TimeRef::Expr(e) = r {
                self.walk(e, depth);
            }
        }
    }

    fn walk(&mut self, e: &Expr, depth: u32) {
        match &e.kind {
            ExprKind::Field { .. } => self.path(e, depth),
            ExprKind::Lit(_)
            | ExprKind::Param(_)
            | ExprKind::Context(_)
            | ExprKind::Var(_)
            | ExprKind::XEvent
            | ExprKind::Time(_) => {}
            ExprKind::Array(items) => items.iter().for_each(|i| self.walk(i, depth)),
            ExprKind::Object(entries) => entries.iter().for_each(|(_, v)| self.walk(v, depth)),
            ExprKind::Call {
                name,
                receiver,
                args,
                ..
            } => {
                if let Some(r) = receiver {
                    self.walk(r, depth);
                }
                let pe = functions::lookup(name).and_then(|f| f.per_element);
                for (i, a) in args.iter().enumerate() {
                    let inner = if pe == Some(i) && !matches!(a.kind, ExprKind::Lambda(..)) {
                        depth + 1
                    } else {
                        depth
                    };
                    self.walk(a, inner);
                }
            }
            ExprKind::Unary(_, x) | ExprKind::Lambda(_, x) => self.walk(x, depth),
            ExprKind::Binary(_, a, b) | ExprKind::Let(_, a, b) | ExprKind::Select(_, a, b) => {
                self.walk(a, depth);
                self.walk(b, depth);
            }
            ExprKind::Filter(a, p) => {
                self.walk(a, depth);
                self.walk(p, depth + 1);
            }
            ExprKind::Occurs(s, c) => {
                self.walk(s, depth);
                self.cond(c, depth);
            }
            ExprKind::Quant(_, binders, c) => {
                for b in binders {
                    self.walk(&b.source, depth);
                    if let Some(w) = &b.cond {
                        self.walk(w, depth);
                    }
                }
                if let Some(c) = c {
                    self.walk(c, depth);
                }
            }
            ExprKind::Aggregate {
                value,
                source,
                cond,
                ..
            } => {
                self.walk(value, depth);
                self.walk(source, depth);
                if let Some(c) = cond {
                    self.walk(c, depth);
                }
            }
            ExprKind::Chain { events, steps, .. } => {
                self.walk(events, depth);
                for s in steps {
                    self.walk(&s.what, depth + 1);
                    if let Some(w) = &s.when {
                        self.cond(w, depth + 1);
                    }
                    if let Some(w) = &s.where_ {
                        self.walk(w, depth + 1);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pql::{PqlFormat, parse};

    const KNOWN: [&str; 5] = [
        "person.name",
        "person.birthYear",
        "homeAddress.countryISO",
        "identityMap",
        "orders",
    ];

    fn check(src: &str) -> Result<(), PqlErrors> {
        check_fields(&parse(src, PqlFormat::Text).expect("parses"), src, &KNOWN)
    }

    #[test]
    fn known_fields_and_prefixes_pass() {
        assert!(
            check(r#"person.name = "x" and person.isNotNull() and identityMap.ECID.isNull()"#)
                .is_ok()
        );
        assert!(check(r#"orders.price > 1 and xEvent[anything = 1].count() > 0"#).is_ok());
        assert!(
            check(r#"(P) => P.person.birthYear > 1 and $1.homeAddress.countryISO = "CA""#).is_ok()
        );
        assert!(check(r#"xEvent[anyEventField = 1 or ^.person.name = "x"].count() > 0"#).is_ok());
    }

    #[test]
    fn unknown_field_is_positioned_with_a_suggestion() {
        let src = r#"homeAddress.countryISO = "CA" and person.nmae = "x""#;
        let e = check(src).expect_err("misspelt").0.remove(0);
        assert_eq!(e.code, "unknown_field");
        assert_eq!(e.span, Span::new(34, 45));
        assert_eq!(e.suggestion.as_deref(), Some("person.name"));
        let e = check(r#"xEvent[^.person.brithYear = 1].count() = 0"#)
            .expect_err("up reference")
            .0
            .remove(0);
        assert_eq!(e.suggestion.as_deref(), Some("person.birthYear"));
        let e = check("loyalty.points > 1").expect_err("absent").0.remove(0);
        assert_eq!(e.suggestion, None);
    }
}
