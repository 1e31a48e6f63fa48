//! Tokenizer for `pql/text`.
//!
//! Keywords are not distinguished here: they arrive as identifiers and the parser decides by
//! position, because PQL keywords such as `count`, `last` or `from` are also plausible field
//! names.

use super::ast::Span;
use super::error::{PqlError, PqlErrors};

/// Token kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// Identifier or keyword.
    Ident(String),
    /// Backquoted name: always a name, never a keyword (`\`count\``).
    QIdent(String),
    /// Integer literal (unsigned; the sign is a unary operator folded by the parser).
    Int(i64),
    /// Double literal.
    Double(f64),
    /// String literal, escapes resolved.
    Str(String),
    /// `$n`
    Param(u32),
    /// Punctuation or operator.
    Sym(&'static str),
    /// End of input.
    Eof,
}

/// A token and its byte span.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The token.
    pub tok: Tok,
    /// Where it is.
    pub span: Span,
}

/// Multi-character symbols first so that `<=` wins over `<`.
const SYMBOLS: [&str; 23] = [
    "=>", "!=", "<=", ">=", "==", "(", ")", "[", "]", "{", "}", ",", ".", ":", "=", "<", ">", "+",
    "-", "*", "/", "%", "!",
];

/// Splits `src` into tokens, ending with [`Tok::Eof`].
pub fn lex(src: &str) -> Result<Vec<Token>, PqlErrors> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c == b'"' {
            let (s, end) = lex_string(src, i)?;
            out.push(Token {
                tok: Tok::Str(s),
                span: Span::new(start, end),
            });
            i = end;
        } else if c.is_ascii_digit() {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let mut is_double = false;
            if i + 1 < bytes.len() && bytes[i] == b'.' && bytes[i + 1].is_ascii_digit() {
                is_double = true;
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
                let mut j = i + 1;
                if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
                    j += 1;
                }
                if j < bytes.len() && bytes[j].is_ascii_digit() {
                    is_double = true;
                    i = j;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let text = &src[start..i];
            let span = Span::new(start, i);
            let tok = if is_double {
                // Infinite values have no JSON form, so they are rejected like overflowing integers.
                let d: f64 = text.parse().map_err(|_| bad_number(src, span))?;
                if !d.is_finite() {
                    return Err(PqlError::new(
                        "invalid_number",
                        format!("number literal `{text}` is out of range"),
                        span,
                        src,
                    )
                    .expected("a finite number")
                    .into());
                }
                Tok::Double(d)
            } else {
                Tok::Int(text.parse().map_err(|_| {
                    PqlError::new(
                        "invalid_number",
                        format!("integer literal `{text}` does not fit in 64 bits"),
                        span,
                        src,
                    )
                    .expected("an integer between -9223372036854775808 and 9223372036854775807")
                })?)
            };
            out.push(Token { tok, span });
        } else if c == b'_' || c.is_ascii_alphabetic() || c >= 0x80 {
            // Non-ASCII letters are accepted in names; XDM field names are normally ASCII but
            // nothing forbids tenant fields with accents.
            while i < bytes.len() {
                let ch = src[i..].chars().next().unwrap_or(' ');
                if ch == '_' || ch.is_alphanumeric() {
                    i += ch.len_utf8();
                } else {
                    break;
                }
            }
            if i == start {
                let ch = src[i..].chars().next().unwrap_or(' ');
                return Err(unexpected_char(src, start, ch).into());
            }
            out.push(Token {
                tok: Tok::Ident(src[start..i].to_string()),
                span: Span::new(start, i),
            });
        } else if c == b'`' {
            // Backquoted names allow field names that collide with keywords (`count`, `from`).
            let end = src[i + 1..].find('`').map(|p| i + 1 + p).ok_or_else(|| {
                PqlError::new(
                    "unterminated_name",
                    "unterminated `quoted` name",
                    Span::new(start, src.len()),
                    src,
                )
                .expected("a closing backquote")
            })?;
            out.push(Token {
                tok: Tok::QIdent(src[i + 1..end].to_string()),
                span: Span::new(start, end + 1),
            });
            i = end + 1;
        } else if c == b'$' {
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let span = Span::new(start, i);
            let n: u32 = src[start + 1..i].parse().unwrap_or(0);
            if n == 0 {
                return Err(PqlError::new(
                    "invalid_parameter",
                    "invalid parameter reference",
                    span,
                    src,
                )
                .expected("`$1`, `$2`, ...")
                .into());
            }
            out.push(Token {
                tok: Tok::Param(n),
                span,
            });
        } else if c == b'^' {
            i += 1;
            out.push(Token {
                tok: Tok::Sym("^"),
                span: Span::new(start, i),
            });
        } else if let Some(sym) = SYMBOLS.iter().find(|s| src[i..].starts_with(**s)) {
            i += sym.len();
            // `==` is accepted as a spelling of `=`; it is common in hand-written queries.
            let sym = if *sym == "==" { "=" } else { sym };
            out.push(Token {
                tok: Tok::Sym(sym),
                span: Span::new(start, i),
            });
        } else {
            let ch = src[i..].chars().next().unwrap_or(' ');
            return Err(unexpected_char(src, start, ch).into());
        }
    }
    out.push(Token {
        tok: Tok::Eof,
        span: Span::new(src.len(), src.len()),
    });
    Ok(out)
}

fn bad_number(src: &str, span: Span) -> PqlError {
    PqlError::new("invalid_number", "invalid number literal", span, src)
}

fn unexpected_char(src: &str, pos: usize, ch: char) -> PqlError {
    PqlError::new(
        "unexpected_character",
        format!("unexpected character `{ch}`"),
        Span::new(pos, pos + ch.len_utf8()),
        src,
    )
    .expected("an expression, operator or punctuation")
}

/// Reads a double-quoted string starting at `start`; returns the value and the end offset.
///
/// Escapes follow JSON (`\"`, `\\`, `\n`, `\t`, `\r`, `\b`, `\f`, `\/`, `\uXXXX`), as pql.md §2.2
/// recommends. An unknown escape such as `\w` keeps its backslash: regexes written with a single
/// backslash still work, and the renderer always writes `\\`, so round trips are stable.
fn lex_string(src: &str, start: usize) -> Result<(String, usize), PqlErrors> {
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((off, ch)) = chars.next() {
        let pos = start + 1 + off;
        match ch {
            '"' => return Ok((out, pos + 1)),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, 'r')) => out.push('\r'),
                Some((_, 'b')) => out.push('\u{8}'),
                Some((_, 'f')) => out.push('\u{c}'),
                Some((_, '/')) => out.push('/'),
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, 'u')) => {
                    let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                    let decoded = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                    match decoded {
                        Some(c) if hex.len() == 4 => out.push(c),
                        _ => {
                            return Err(PqlError::new(
                                "invalid_escape",
                                format!("invalid unicode escape `\\u{hex}`"),
                                Span::new(pos, (pos + 2 + hex.len()).min(src.len())),
                                src,
                            )
                            .expected("four hexadecimal digits naming a character")
                            .into());
                        }
                    }
                }
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(PqlError::new(
        "unterminated_string",
        "unterminated string literal",
        Span::new(start, src.len()),
        src,
    )
    .expected("a closing `\"`")
    .into())
}
