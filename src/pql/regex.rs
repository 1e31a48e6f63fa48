//! A small backtracking regular-expression engine for `matches` and `regexGroup`.
//!
//! PQL regexes are Java `java.util.regex.Pattern`s (pql.md §4.4). The crate may only depend on
//! serde, serde_json, chrono and thiserror, so this module implements the subset real segment
//! definitions use: literals, `.`, classes (`[a-z]`, `[^...]`, `\d \w \s` and negations),
//! anchors `^ $ \b \B`, groups (capturing and `(?:...)`), alternation, greedy and lazy
//! quantifiers (`* + ? {n} {n,} {n,m}`) and the inline flags `(?i)` and `(?s)`. Look-around and
//! back-references are rejected with an error at compile time.
//!
//! Matching is a backtracking VM with a step budget, so a pathological pattern returns "no match"
//! after [`STEP_LIMIT`] steps instead of hanging a segment job.

/// Maximum VM steps per match attempt over the whole input.
pub const STEP_LIMIT: usize = 1_000_000;
/// Maximum compiled program size (counted repetitions are expanded).
const MAX_PROGRAM: usize = 10_000;
/// Maximum group nesting.
const MAX_NESTING: usize = 100;

#[derive(Debug, Clone, PartialEq)]
enum Inst {
    Char(char, bool),
    Any(bool),
    Class(Vec<(char, char)>, bool, bool),
    Bol,
    Eol,
    WordBoundary(bool),
    Split(usize, usize),
    Jmp(usize),
    Save(usize),
    Match,
}

/// A compiled regular expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Regex {
    prog: Vec<Inst>,
    groups: usize,
}

#[derive(Debug, Clone)]
enum Ast {
    Empty,
    Char(char, bool),
    Any(bool),
    Class(Vec<(char, char)>, bool, bool),
    Bol,
    Eol,
    WordBoundary(bool),
    Group(Box<Ast>, Option<usize>),
    Concat(Vec<Ast>),
    Alt(Vec<Ast>),
    Repeat(Box<Ast>, u32, Option<u32>, bool),
}

struct Parser<'p> {
    chars: Vec<char>,
    pos: usize,
    ci: bool,
    dotall: bool,
    groups: usize,
    depth: usize,
    _src: &'p str,
}

const DIGIT: &[(char, char)] = &[('0', '9')];
const WORD: &[(char, char)] = &[('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')];
const SPACE: &[(char, char)] = &[('\t', '\r'), (' ', ' ')];

impl Regex {
    /// Compiles `pattern`; the error says what is unsupported or malformed.
    pub fn new(pattern: &str) -> Result<Regex, String> {
        let mut p = Parser {
            chars: pattern.chars().collect(),
            pos: 0,
            ci: false,
            dotall: false,
            groups: 0,
            depth: 0,
            _src: pattern,
        };
        let ast = p.alt()?;
        if p.pos < p.chars.len() {
            return Err(format!("unmatched `)` at position {}", p.pos));
        }
        let mut prog = vec![Inst::Save(0)];
        emit(&ast, &mut prog)?;
        prog.push(Inst::Save(1));
        prog.push(Inst::Match);
        Ok(Regex {
            prog,
            groups: p.groups,
        })
    }

    /// Number of capturing groups.
    pub fn group_count(&self) -> usize {
        self.groups
    }

    /// Finds the leftmost match anywhere in `s` (Java `Matcher.find`, not `String.matches`).
    pub fn is_match(&self, s: &str) -> bool {
        self.captures(s).is_some()
    }

    /// Byte range of capture group `group` (0 = whole match) in the leftmost match.
    pub fn group(&self, s: &str, group: usize) -> Option<(usize, usize)> {
        if group > self.groups {
            return None;
        }
        let caps = self.captures(s)?;
        match (caps[2 * group], caps[2 * group + 1]) {
            (Some(a), Some(b)) => Some((a, b)),
            _ => None,
        }
    }

    fn captures(&self, s: &str) -> Option<Vec<Option<usize>>> {
        let mut budget = STEP_LIMIT;
        let mut start = 0;
        loop {
            if let Some(c) = self.run(s, start, &mut budget) {
                return Some(c);
            }
            if start >= s.len() || budget == 0 {
                return None;
            }
            start += s[start..].chars().next().map_or(1, char::len_utf8);
        }
    }

    fn run(&self, s: &str, start: usize, budget: &mut usize) -> Option<Vec<Option<usize>>> {
        enum Frame {
            Try(usize, usize),
            Restore(usize, Option<usize>),
        }
        let mut caps = vec![None; 2 * (self.groups + 1)];
        let mut stack = vec![Frame::Try(0, start)];
        while let Some(frame) = stack.pop() {
            let (mut pc, mut pos) = match frame {
                Frame::Try(pc, pos) => (pc, pos),
                Frame::Restore(slot, old) => {
                    caps[slot] = old;
                    continue;
                }
            };
            loop {
                if *budget == 0 {
                    return None;
                }
                *budget -= 1;
                let next = s[pos..].chars().next();
                match &self.prog[pc] {
                    Inst::Match => return Some(caps),
                    Inst::Char(c, ci) => match next {
                        Some(n) if n == *c || (*ci && fold_eq(n, *c)) => {
                            pos += n.len_utf8();
                            pc += 1;
                        }
                        _ => break,
                    },
                    Inst::Any(dotall) => match next {
                        Some(n) if *dotall || n != '\n' => {
                            pos += n.len_utf8();
                            pc += 1;
                        }
                        _ => break,
                    },
                    Inst::Class(ranges, negated, ci) => match next {
                        Some(n) if class_has(ranges, n, *ci) != *negated => {
                            pos += n.len_utf8();
                            pc += 1;
                        }
                        _ => break,
                    },
                    Inst::Bol => {
                        if pos != 0 {
                            break;
                        }
                        pc += 1;
                    }
                    Inst::Eol => {
                        if pos != s.len() {
                            break;
                        }
                        pc += 1;
                    }
                    Inst::WordBoundary(want) => {
                        let before = s[..pos].chars().next_back().is_some_and(is_word);
                        let after = next.is_some_and(is_word);
                        if (before != after) != *want {
                            break;
                        }
                        pc += 1;
                    }
                    Inst::Split(a, b) => {
                        stack.push(Frame::Try(*b, pos));
                        pc = *a;
                    }
                    Inst::Jmp(a) => pc = *a,
                    Inst::Save(slot) => {
                        stack.push(Frame::Restore(*slot, caps[*slot]));
                        caps[*slot] = Some(pos);
                        pc += 1;
                    }
                }
            }
        }
        None
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn fold_eq(a: char, b: char) -> bool {
    a.to_lowercase().eq(b.to_lowercase())
}

fn class_has(ranges: &[(char, char)], c: char, ci: bool) -> bool {
    let hit = |c: char| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
    hit(c) || (ci && (c.to_lowercase().any(hit) || c.to_uppercase().any(hit)))
}

fn emit(ast: &Ast, prog: &mut Vec<Inst>) -> Result<(), String> {
    if prog.len() > MAX_PROGRAM {
        return Err("pattern is too large".into());
    }
    match ast {
        Ast::Empty => {}
        Ast::Char(c, ci) => prog.push(Inst::Char(*c, *ci)),
        Ast::Any(d) => prog.push(Inst::Any(*d)),
        Ast::Class(r, n, ci) => prog.push(Inst::Class(r.clone(), *n, *ci)),
        Ast::Bol => prog.push(Inst::Bol),
        Ast::Eol => prog.push(Inst::Eol),
        Ast::WordBoundary(b) => prog.push(Inst::WordBoundary(*b)),
        Ast::Group(inner, idx) => {
            if let Some(i) = idx {
                prog.push(Inst::Save(2 * i));
            }
            emit(inner, prog)?;
            if let Some(i) = idx {
                prog.push(Inst::Save(2 * i + 1));
            }
        }
        Ast::Concat(items) => {
            for i in items {
                emit(i, prog)?;
            }
        }
        Ast::Alt(alts) => {
            let mut jumps = Vec::new();
            for (k, alt) in alts.iter().enumerate() {
                if k + 1 < alts.len() {
                    let split = prog.len();
                    prog.push(Inst::Split(split + 1, 0));
                    emit(alt, prog)?;
                    jumps.push(prog.len());
                    prog.push(Inst::Jmp(0));
                    let next = prog.len();
                    prog[split] = Inst::Split(split + 1, next);
                } else {
                    emit(alt, prog)?;
                }
            }
            let end = prog.len();
            for j in jumps {
                prog[j] = Inst::Jmp(end);
            }
        }
        Ast::Repeat(inner, min, max, greedy) => {
            for _ in 0..*min {
                emit(inner, prog)?;
            }
            let split = |a: usize, b: usize| {
                if *greedy {
                    Inst::Split(a, b)
                } else {
                    Inst::Split(b, a)
                }
            };
            match max {
                None => {
                    let l = prog.len();
                    prog.push(Inst::Jmp(0));
                    emit(inner, prog)?;
                    prog.push(Inst::Jmp(l));
                    let end = prog.len();
                    prog[l] = split(l + 1, end);
                }
                Some(max) => {
                    let mut holes = Vec::new();
                    for _ in *min..*max {
                        holes.push(prog.len());
                        prog.push(Inst::Jmp(0));
                        emit(inner, prog)?;
                        if prog.len() > MAX_PROGRAM {
                            return Err("pattern is too large".into());
                        }
                    }
                    let end = prog.len();
                    for h in holes {
                        prog[h] = split(h + 1, end);
                    }
                }
            }
        }
    }
    Ok(())
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn alt(&mut self) -> Result<Ast, String> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err("pattern is nested too deeply".into());
        }
        let mut alts = vec![self.concat()?];
        while self.eat('|') {
            alts.push(self.concat()?);
        }
        self.depth -= 1;
        Ok(if alts.len() == 1 {
            alts.pop().unwrap_or(Ast::Empty)
        } else {
            Ast::Alt(alts)
        })
    }

    fn concat(&mut self) -> Result<Ast, String> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            items.push(self.quantified(atom)?);
        }
        Ok(Ast::Concat(items))
    }

    fn number(&mut self) -> Option<u32> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.chars[start..self.pos]
            .iter()
            .collect::<String>()
            .parse()
            .ok()
    }

    fn quantified(&mut self, atom: Ast) -> Result<Ast, String> {
        let (min, max) = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{')
                if self
                    .chars
                    .get(self.pos + 1)
                    .is_some_and(|c| c.is_ascii_digit()) =>
            {
                self.pos += 1;
                let min = self.number().ok_or("bad repetition count")?;
                let max = if self.eat(',') {
                    if self.peek() == Some('}') {
                        None
                    } else {
                        Some(self.number().ok_or("bad repetition count")?)
                    }
                } else {
                    Some(min)
                };
                if self.peek() != Some('}') {
                    return Err("unterminated `{` repetition".into());
                }
                if max.is_some_and(|m| m < min) || min > 1000 || max.is_some_and(|m| m > 1000) {
                    return Err("invalid repetition bounds".into());
                }
                (min, max)
            }
            _ => return Ok(atom),
        };
        self.pos += 1;
        if matches!(atom, Ast::Bol | Ast::Eol | Ast::WordBoundary(_)) {
            return Err("a quantifier cannot follow an anchor".into());
        }
        let greedy = !self.eat('?');
        // Possessive quantifiers are treated as greedy: the difference only matters for
        // performance, not for whether a find succeeds in the patterns seen in practice.
        if greedy {
            self.eat('+');
        }
        Ok(Ast::Repeat(Box::new(atom), min, max, greedy))
    }

    fn atom(&mut self) -> Result<Ast, String> {
        let c = self.peek().ok_or("unexpected end of pattern")?;
        self.pos += 1;
        Ok(match c {
            '.' => Ast::Any(self.dotall),
            '^' => Ast::Bol,
            '$' => Ast::Eol,
            '[' => self.class()?,
            '(' => {
                if self.eat('?') {
                    if self.eat(':') {
                        let inner = self.alt()?;
                        self.close()?;
                        return Ok(Ast::Group(Box::new(inner), None));
                    }
                    // Inline flags `(?i)`, `(?s)`, `(?is)`; they apply to the rest of the pattern.
                    let mut any = false;
                    while let Some(f) = self.peek() {
                        match f {
                            'i' => self.ci = true,
                            's' => self.dotall = true,
                            'u' | 'm' | 'x' | 'U' => {}
                            _ => break,
                        }
                        any = true;
                        self.pos += 1;
                    }
                    if any && self.eat(')') {
                        return Ok(Ast::Empty);
                    }
                    return Err("look-around and inline-flag groups other than (?i) and (?s) are not supported".into());
                }
                self.groups += 1;
                let idx = self.groups;
                let inner = self.alt()?;
                self.close()?;
                Ast::Group(Box::new(inner), Some(idx))
            }
            ')' => return Err("unmatched `)`".into()),
            '*' | '+' | '?' => return Err(format!("nothing to repeat before `{c}`")),
            '\\' => self.escape(false)?,
            c => Ast::Char(c, self.ci),
        })
    }

    fn close(&mut self) -> Result<(), String> {
        if self.eat(')') {
            Ok(())
        } else {
            Err("missing `)`".into())
        }
    }

    fn escape(&mut self, in_class: bool) -> Result<Ast, String> {
        let c = self.peek().ok_or("pattern ends with a backslash")?;
        self.pos += 1;
        let set = |r: &[(char, char)], neg: bool, ci: bool| Ast::Class(r.to_vec(), neg, ci);
        Ok(match c {
            'd' => set(DIGIT, false, false),
            'D' => set(DIGIT, true, false),
            'w' => set(WORD, false, false),
            'W' => set(WORD, true, false),
            's' => set(SPACE, false, false),
            'S' => set(SPACE, true, false),
            'b' if !in_class => Ast::WordBoundary(true),
            'B' if !in_class => Ast::WordBoundary(false),
            'A' if !in_class => Ast::Bol,
            'z' | 'Z' if !in_class => Ast::Eol,
            't' => Ast::Char('\t', false),
            'n' => Ast::Char('\n', false),
            'r' => Ast::Char('\r', false),
            'f' => Ast::Char('\u{c}', false),
            '0'..='9' => return Err("back-references are not supported".into()),
            c if c.is_ascii_alphabetic() => return Err(format!("unsupported escape `\\{c}`")),
            c => Ast::Char(c, self.ci),
        })
    }

    fn class(&mut self) -> Result<Ast, String> {
        let negated = self.eat('^');
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let c = self.peek().ok_or("unterminated character class")?;
            if c == ']' && !first {
                self.pos += 1;
                break;
            }
            first = false;
            self.pos += 1;
            let lo = if c == '\\' {
                match self.escape(true)? {
                    Ast::Char(ch, _) => ch,
                    Ast::Class(r, false, _) => {
                        ranges.extend(r);
                        continue;
                    }
                    _ => {
                        return Err(
                            "negated shorthand classes inside `[...]` are not supported".into()
                        );
                    }
                }
            } else {
                c
            };
            if self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|&n| n != ']') {
                self.pos += 1;
                let mut hi = self.peek().ok_or("unterminated character class")?;
                self.pos += 1;
                if hi == '\\' {
                    match self.escape(true)? {
                        Ast::Char(ch, _) => hi = ch,
                        _ => return Err("invalid class range".into()),
                    }
                }
                if hi < lo {
                    return Err(format!("invalid class range `{lo}-{hi}`"));
                }
                ranges.push((lo, hi));
            } else {
                ranges.push((lo, lo));
            }
        }
        Ok(Ast::Class(ranges, negated, self.ci))
    }
}

#[cfg(test)]
mod tests {
    use super::Regex;

    fn m(p: &str, s: &str) -> bool {
        Regex::new(p).unwrap().is_match(s)
    }

    #[test]
    fn find_semantics_and_flags() {
        assert!(m("(?i)^john", "Johnny Appleseed"));
        assert!(!m("^Apple", "Johnny Appleseed"));
        assert!(m("Apple", "Johnny Appleseed"));
        assert!(m("^a.c$", "abc"));
        assert!(!m("^a.c$", "abcd"));
        assert!(m("colou?r", "color"));
        assert!(m("^(ab|cd)+$", "abcdab"));
        assert!(m("^\\d{3}-\\d{2,}$", "123-4567"));
        assert!(!m("^\\d{3}$", "12"));
        assert!(m("[^a-z]", "abc1"));
        assert!(m("\\bcat\\b", "a cat sat"));
        assert!(!m("\\bcat\\b", "concatenate"));
    }

    #[test]
    fn groups() {
        let r = Regex::new("@(\\w+)").unwrap();
        let s = "johnny2010@gmail.com";
        let (a, b) = r.group(s, 1).unwrap();
        assert_eq!(&s[a..b], "gmail");
        assert_eq!(r.group(s, 2), None);
        let lazy = Regex::new("<(.+?)>").unwrap();
        let t = "<a><b>";
        let (a, b) = lazy.group(t, 1).unwrap();
        assert_eq!(&t[a..b], "a");
    }

    #[test]
    fn rejects_unsupported_and_bounds_work() {
        assert!(Regex::new("(?=x)").is_err());
        assert!(Regex::new("(a").is_err());
        assert!(Regex::new("\\1").is_err());
        // Catastrophic backtracking gives up instead of hanging.
        let r = Regex::new("^(a+)+$").unwrap();
        assert!(!r.is_match(&format!("{}b", "a".repeat(40))));
    }
}
