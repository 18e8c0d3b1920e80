//! A small, strict evaluator of the subset of Helm's template language (Go `text/template` plus
//! a few Sprig functions) that Coffer's chart uses.
//!
//! Why our own: `helm` cannot be assumed on a user's machine, yet `coffer k8s render` must give
//! the objects `helm template` gives. The chart's templates are the one source of both; this
//! evaluator implements exactly the constructs they use, with Go's semantics, and refuses
//! everything else with an error naming the template and line, so a template can never render
//! silently differently here than under Helm. Where Helm would print something surprising
//! (a missing value as an empty string, a large YAML number as `1e+06`), this evaluator refuses.
//!
//! The subset:
//! - text, and actions `{{ … }}` with Go's whitespace trimming `{{- ` / ` -}}`, comments
//!   `{{/* … */}}`;
//! - operands: `.` fields (`.Values.a.b`, `.Release.Namespace`), variables `$`, `$x`, `$.a`,
//!   string literals (`"…"`, `` `…` ``), integers, `true`/`false`, parenthesised pipelines;
//! - pipelines `x | f a` (the piped value is the last argument);
//! - `if` / `else if` / `else` / `end`; `range [$i [, $e] :=] pipeline` / `else` / `end` with
//!   Go's rebinding of `.` to the element;
//! - functions `eq ne lt not and or printf` (text/template; `printf` with the verbs `%s %v %d
//!   %q %%` only), `quote toYaml nindent indent int until join` (Sprig) and `fail` (Helm).

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Bound on `until N`: a typo in a value must not make the renderer allocate without limit.
const MAX_UNTIL: i64 = 10_000;
/// Bound on nested `if`/`range` blocks and parentheses (the templates are small; recursion
/// stays far from the stack's limit).
const MAX_DEPTH: usize = 64;

/// A template error before it is given the template's name: line and message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TplError {
    pub(crate) line: usize,
    pub(crate) message: String,
    /// True when the template called `fail` (a refusal of the values, not a template bug).
    pub(crate) fail: bool,
}

impl TplError {
    fn new(line: usize, message: impl Into<String>) -> Self {
        TplError {
            line,
            message: message.into(),
            fail: false,
        }
    }
}

type Result<T> = std::result::Result<T, TplError>;

/// A template value, with Go's distinction between integers and floats: Helm reads every
/// number in a values file as a float64, and Go refuses to compare a float with an integer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    /// YAML null (Go nil).
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer (a literal, or the result of `int`).
    Int(i64),
    /// A number read from values (float64 in Helm).
    Float(f64),
    /// A string.
    Str(String),
    /// A list.
    List(Vec<Val>),
    /// A map; sorted by key, as Helm's `toYaml` emits it.
    Map(BTreeMap<String, Val>),
}

impl Val {
    /// Converts YAML values; every number becomes a float, as in Helm.
    pub(crate) fn from_yaml(v: &serde_yaml::Value) -> std::result::Result<Val, String> {
        Ok(match v {
            serde_yaml::Value::Null => Val::Null,
            serde_yaml::Value::Bool(b) => Val::Bool(*b),
            serde_yaml::Value::Number(n) => match n.as_f64() {
                Some(f) => Val::Float(f),
                None => return Err(format!("number {n} is not representable")),
            },
            serde_yaml::Value::String(s) => Val::Str(s.clone()),
            serde_yaml::Value::Sequence(items) => Val::List(
                items
                    .iter()
                    .map(Val::from_yaml)
                    .collect::<std::result::Result<_, _>>()?,
            ),
            serde_yaml::Value::Mapping(m) => {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    let serde_yaml::Value::String(k) = k else {
                        return Err(format!("map key {k:?} is not a string"));
                    };
                    out.insert(k.clone(), Val::from_yaml(v)?);
                }
                Val::Map(out)
            }
            serde_yaml::Value::Tagged(t) => {
                return Err(format!("YAML tag {} is not supported in values", t.tag))
            }
        })
    }

    /// Back to YAML for `toYaml`. Integral floats become integers, as Go's YAML encoder writes
    /// float64 `2` as `2`.
    fn to_yaml(&self) -> serde_yaml::Value {
        match self {
            Val::Null => serde_yaml::Value::Null,
            Val::Bool(b) => serde_yaml::Value::Bool(*b),
            Val::Int(i) => serde_yaml::Value::Number((*i).into()),
            Val::Float(f) => {
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    serde_yaml::Value::Number((*f as i64).into())
                } else {
                    serde_yaml::Value::Number((*f).into())
                }
            }
            Val::Str(s) => serde_yaml::Value::String(s.clone()),
            Val::List(l) => serde_yaml::Value::Sequence(l.iter().map(Val::to_yaml).collect()),
            Val::Map(m) => serde_yaml::Value::Mapping(
                m.iter()
                    .map(|(k, v)| (serde_yaml::Value::String(k.clone()), v.to_yaml()))
                    .collect(),
            ),
        }
    }

    /// Go's `truth`: false, 0, nil and empty strings, lists and maps are false.
    fn truthy(&self) -> bool {
        match self {
            Val::Null => false,
            Val::Bool(b) => *b,
            Val::Int(i) => *i != 0,
            Val::Float(f) => *f != 0.0,
            Val::Str(s) => !s.is_empty(),
            Val::List(l) => !l.is_empty(),
            Val::Map(m) => !m.is_empty(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Float(_) => "float64",
            Val::Str(_) => "string",
            Val::List(_) => "list",
            Val::Map(_) => "map",
        }
    }

    /// The text Go prints for a scalar (`fmt.Sprint`, Sprig's `strval`). Floats print the same
    /// under every Go version only when integral and below 1e6 (beyond, Go writes `1e+06`), so
    /// other floats are refused rather than printed differently from Helm.
    fn print(&self, line: usize) -> Result<String> {
        match self {
            Val::Str(s) => Ok(s.clone()),
            Val::Bool(b) => Ok(b.to_string()),
            Val::Int(i) => Ok(i.to_string()),
            Val::Float(f) if f.fract() == 0.0 && f.abs() < 1.0e6 => Ok((*f as i64).to_string()),
            Val::Float(f) => Err(TplError::new(
                line,
                format!(
                    "the number {f} would print differently under Helm; quote it in the values"
                ),
            )),
            Val::Null => Err(TplError::new(
                line,
                "a null value cannot be printed (Helm would print nothing); set the value",
            )),
            Val::List(_) | Val::Map(_) => Err(TplError::new(
                line,
                format!("a {} cannot be printed as text; use toYaml", self.kind()),
            )),
        }
    }
}

/// A parsed template.
#[derive(Debug)]
pub(crate) struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug)]
enum Node {
    Text(String),
    Action {
        pipe: Pipe,
        line: usize,
    },
    If {
        /// `if` and each `else if`: condition and body.
        branches: Vec<(Pipe, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    Range {
        vars: Vec<String>,
        pipe: Pipe,
        body: Vec<Node>,
        otherwise: Vec<Node>,
        line: usize,
    },
}

#[derive(Debug)]
struct Pipe {
    cmds: Vec<Cmd>,
    line: usize,
}

#[derive(Debug)]
struct Cmd {
    args: Vec<Term>,
}

#[derive(Debug)]
enum Term {
    /// `.a.b` (empty: `.` itself).
    Field(Vec<String>),
    /// `$name.a.b` (`$` is the root).
    Var(String, Vec<String>),
    Func(String),
    Lit(Val),
    Paren(Pipe),
}

/// One piece of the source before parsing: text, or an action's inner text and line.
enum Piece {
    Text(String),
    Action(String, usize),
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Splits the source into text and actions, applying Go's trim markers and dropping comments.
fn split(src: &str) -> Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut rest = src;
    let mut line = 1usize;
    let mut trim_next = false;
    loop {
        let Some(open) = rest.find("{{") else {
            let mut text = rest;
            if trim_next {
                text = text.trim_start_matches(is_space);
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(text.to_string()));
            }
            return Ok(pieces);
        };
        let before = &rest[..open];
        let after = open + 2;
        let action_line = line + before.matches('\n').count();
        let tail = &rest[after..];
        let left_trim = tail.starts_with('-') && tail[1..].starts_with(is_space);
        let mut text = before;
        if trim_next {
            text = text.trim_start_matches(is_space);
        }
        if left_trim {
            text = text.trim_end_matches(is_space);
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text.to_string()));
        }
        let inner_start = if left_trim { after + 1 } else { after };
        let close = find_close(&rest[inner_start..])
            .ok_or_else(|| TplError::new(action_line, "unclosed action: no matching }}"))?;
        let mut inner = &rest[inner_start..inner_start + close];
        let right_trim = inner.ends_with('-') && inner[..inner.len() - 1].ends_with(is_space);
        if right_trim {
            inner = &inner[..inner.len() - 1];
        }
        let consumed = inner_start + close + 2;
        line += rest[..consumed].matches('\n').count();
        rest = &rest[consumed..];
        trim_next = right_trim;
        let trimmed = inner.trim_matches(is_space);
        if trimmed.starts_with("/*") {
            if !trimmed.ends_with("*/") || trimmed.len() < 4 {
                return Err(TplError::new(action_line, "unclosed comment"));
            }
            continue;
        }
        pieces.push(Piece::Action(inner.to_string(), action_line));
    }
}

/// The offset of the `}}` closing an action, skipping string literals.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Str(String),
    Int(i64),
    LParen,
    RParen,
    Pipe,
    Declare,
    Comma,
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Reads `.a.b` style field chains starting at a `.`.
fn lex_fields(chars: &[char], i: &mut usize, line: usize) -> Result<Vec<String>> {
    let mut fields = Vec::new();
    while *i < chars.len() && chars[*i] == '.' {
        *i += 1;
        let start = *i;
        while *i < chars.len() && is_ident_char(chars[*i]) {
            *i += 1;
        }
        if start == *i {
            // A lone `.` (dot itself) is allowed only as the whole chain.
            if fields.is_empty() {
                return Ok(fields);
            }
            return Err(TplError::new(line, "a field name must follow '.'"));
        }
        fields.push(chars[start..*i].iter().collect());
    }
    Ok(fields)
}

fn lex(src: &str, line: usize) -> Result<Vec<Tok>> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if is_space(c) => i += 1,
            '(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                toks.push(Tok::RParen);
                i += 1;
            }
            '|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            ',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                toks.push(Tok::Declare);
                i += 2;
            }
            '.' => {
                let fields = lex_fields(&chars, &mut i, line)?;
                if fields.is_empty() {
                    i += 1;
                }
                toks.push(Tok::Field(fields));
            }
            '$' => {
                i += 1;
                let start = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                let name: String = std::iter::once('$')
                    .chain(chars[start..i].iter().copied())
                    .collect();
                let fields = if chars.get(i) == Some(&'.') {
                    let f = lex_fields(&chars, &mut i, line)?;
                    if f.is_empty() {
                        return Err(TplError::new(line, "a field name must follow '.'"));
                    }
                    f
                } else {
                    Vec::new()
                };
                toks.push(Tok::Var(name, fields));
            }
            '"' => {
                i += 1;
                let mut s = String::new();
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err(TplError::new(line, "unterminated string"));
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let Some(&e) = chars.get(i) else {
                                return Err(TplError::new(line, "unterminated string"));
                            };
                            i += 1;
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                '\\' => '\\',
                                '"' => '"',
                                other => {
                                    return Err(TplError::new(
                                        line,
                                        format!("escape \\{other} is not supported"),
                                    ))
                                }
                            });
                        }
                        '\n' => return Err(TplError::new(line, "newline in string")),
                        c => s.push(c),
                    }
                }
                toks.push(Tok::Str(s));
            }
            '`' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != '`' {
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(TplError::new(line, "unterminated raw string"));
                }
                toks.push(Tok::Str(chars[start..i].iter().collect()));
                i += 1;
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let n = text.parse::<i64>().map_err(|_| {
                    TplError::new(line, format!("number {text:?} is not a decimal integer"))
                })?;
                toks.push(Tok::Int(n));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                toks.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => {
                return Err(TplError::new(
                    line,
                    format!("character {other:?} is not supported in an action"),
                ))
            }
        }
    }
    Ok(toks)
}

/// Functions this evaluator implements; any other name is refused at parse time.
const FUNCS: &[&str] = &[
    "eq", "ne", "lt", "not", "and", "or", "quote", "toYaml", "nindent", "indent", "int", "until",
    "join", "fail", "printf",
];

struct PipeParser<'a> {
    toks: &'a [Tok],
    pos: usize,
    line: usize,
    depth: usize,
}

impl PipeParser<'_> {
    fn pipeline(&mut self) -> Result<Pipe> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(TplError::new(self.line, "expression nested too deeply"));
        }
        let mut cmds = vec![self.command()?];
        while self.toks.get(self.pos) == Some(&Tok::Pipe) {
            self.pos += 1;
            cmds.push(self.command()?);
        }
        self.depth -= 1;
        Ok(Pipe {
            cmds,
            line: self.line,
        })
    }

    fn command(&mut self) -> Result<Cmd> {
        let mut args = Vec::new();
        while let Some(tok) = self.toks.get(self.pos) {
            let term = match tok {
                Tok::Pipe | Tok::RParen => break,
                Tok::Field(f) => Term::Field(f.clone()),
                Tok::Var(n, f) => Term::Var(n.clone(), f.clone()),
                Tok::Str(s) => Term::Lit(Val::Str(s.clone())),
                Tok::Int(i) => Term::Lit(Val::Int(*i)),
                Tok::Ident(name) => match name.as_str() {
                    "true" => Term::Lit(Val::Bool(true)),
                    "false" => Term::Lit(Val::Bool(false)),
                    name if FUNCS.contains(&name) => {
                        if !args.is_empty() {
                            return Err(TplError::new(
                                self.line,
                                format!("function {name:?} as an argument: wrap the call in parentheses"),
                            ));
                        }
                        Term::Func(name.to_string())
                    }
                    other => {
                        return Err(TplError::new(
                            self.line,
                            format!(
                                "unknown function {other:?} (supported: {})",
                                FUNCS.join(" ")
                            ),
                        ))
                    }
                },
                Tok::LParen => {
                    self.pos += 1;
                    let inner = self.pipeline()?;
                    if self.toks.get(self.pos) != Some(&Tok::RParen) {
                        return Err(TplError::new(self.line, "unclosed '('"));
                    }
                    Term::Paren(inner)
                }
                Tok::Declare | Tok::Comma => {
                    return Err(TplError::new(
                        self.line,
                        "variable declarations are supported only in range",
                    ))
                }
            };
            self.pos += 1;
            args.push(term);
        }
        if args.is_empty() {
            return Err(TplError::new(self.line, "missing value in pipeline"));
        }
        if args.len() > 1 && !matches!(args[0], Term::Func(_)) {
            return Err(TplError::new(
                self.line,
                "can't give arguments to a non-function",
            ));
        }
        Ok(Cmd { args })
    }
}

fn parse_pipe(toks: &[Tok], line: usize) -> Result<Pipe> {
    let mut p = PipeParser {
        toks,
        pos: 0,
        line,
        depth: 0,
    };
    let pipe = p.pipeline()?;
    if p.pos != toks.len() {
        return Err(TplError::new(
            line,
            "unexpected ')' or token after the expression",
        ));
    }
    Ok(pipe)
}

/// What ended a block of nodes.
enum Stop {
    Eof,
    End(usize),
    Else(usize, Option<Pipe>),
}

struct Parser {
    pieces: std::vec::IntoIter<Piece>,
}

impl Parser {
    fn block(&mut self, depth: usize) -> Result<(Vec<Node>, Stop)> {
        let mut nodes = Vec::new();
        while let Some(piece) = self.pieces.next() {
            let (src, line) = match piece {
                Piece::Text(t) => {
                    nodes.push(Node::Text(t));
                    continue;
                }
                Piece::Action(src, line) => (src, line),
            };
            let toks = lex(&src, line)?;
            let keyword = match toks.first() {
                Some(Tok::Ident(k)) => k.as_str(),
                None => return Err(TplError::new(line, "empty action")),
                _ => "",
            };
            match keyword {
                "if" => {
                    if depth >= MAX_DEPTH {
                        return Err(TplError::new(line, "blocks nested too deeply"));
                    }
                    let mut branches = vec![(parse_pipe(&toks[1..], line)?, Vec::new())];
                    let otherwise;
                    loop {
                        let (body, end) = self.block(depth + 1)?;
                        if let Some(last) = branches.last_mut() {
                            last.1 = body;
                        }
                        match end {
                            Stop::Eof => {
                                return Err(TplError::new(line, "unclosed if: missing {{ end }}"))
                            }
                            Stop::End(_) => {
                                otherwise = Vec::new();
                                break;
                            }
                            Stop::Else(_, Some(cond)) => branches.push((cond, Vec::new())),
                            Stop::Else(else_line, None) => {
                                let (body, end) = self.block(depth + 1)?;
                                match end {
                                    Stop::End(_) => {}
                                    Stop::Eof => {
                                        return Err(TplError::new(
                                            line,
                                            "unclosed if: missing {{ end }}",
                                        ))
                                    }
                                    Stop::Else(l, _) => {
                                        return Err(TplError::new(
                                            l,
                                            format!(
                                            "second else (the if's else is on line {else_line})"
                                        ),
                                        ))
                                    }
                                }
                                otherwise = body;
                                break;
                            }
                        }
                    }
                    nodes.push(Node::If {
                        branches,
                        otherwise,
                    });
                }
                "range" => {
                    if depth >= MAX_DEPTH {
                        return Err(TplError::new(line, "blocks nested too deeply"));
                    }
                    let rest = &toks[1..];
                    let (vars, expr) = match rest.iter().position(|t| *t == Tok::Declare) {
                        None => (Vec::new(), rest),
                        Some(at) => {
                            let vars: Vec<String> = rest[..at]
                                .iter()
                                .filter(|t| **t != Tok::Comma)
                                .map(|t| match t {
                                    Tok::Var(n, f) if f.is_empty() && n != "$" => Ok(n.clone()),
                                    _ => Err(TplError::new(line, "range declares $variables only")),
                                })
                                .collect::<Result<_>>()?;
                            let commas = rest[..at].iter().filter(|t| **t == Tok::Comma).count();
                            if vars.is_empty() || vars.len() > 2 || commas + 1 != vars.len() {
                                return Err(TplError::new(
                                    line,
                                    "range declares one or two variables",
                                ));
                            }
                            (vars, &rest[at + 1..])
                        }
                    };
                    let pipe = parse_pipe(expr, line)?;
                    let (body, end) = self.block(depth + 1)?;
                    let otherwise = match end {
                        Stop::Eof => {
                            return Err(TplError::new(line, "unclosed range: missing {{ end }}"))
                        }
                        Stop::End(_) => Vec::new(),
                        Stop::Else(l, Some(_)) => {
                            return Err(TplError::new(l, "else if inside range is not supported"))
                        }
                        Stop::Else(_, None) => {
                            let (body, end) = self.block(depth + 1)?;
                            match end {
                                Stop::End(_) => body,
                                Stop::Eof => {
                                    return Err(TplError::new(
                                        line,
                                        "unclosed range: missing {{ end }}",
                                    ))
                                }
                                Stop::Else(l, _) => {
                                    return Err(TplError::new(l, "second else in range"))
                                }
                            }
                        }
                    };
                    nodes.push(Node::Range {
                        vars,
                        pipe,
                        body,
                        otherwise,
                        line,
                    });
                }
                "else" => {
                    if depth == 0 {
                        return Err(TplError::new(line, "else without if"));
                    }
                    let cond = match toks.get(1) {
                        None => None,
                        Some(Tok::Ident(k)) if k == "if" => Some(parse_pipe(&toks[2..], line)?),
                        Some(_) => {
                            return Err(TplError::new(
                                line,
                                "only `else` and `else if` are supported",
                            ))
                        }
                    };
                    return Ok((nodes, Stop::Else(line, cond)));
                }
                "end" => {
                    if toks.len() != 1 {
                        return Err(TplError::new(line, "unexpected tokens after end"));
                    }
                    if depth == 0 {
                        return Err(TplError::new(line, "end without if or range"));
                    }
                    return Ok((nodes, Stop::End(line)));
                }
                "with" | "define" | "template" | "block" | "break" | "continue" | "include"
                | "tpl" => {
                    return Err(TplError::new(
                        line,
                        format!("{keyword:?} is not supported by this chart's evaluator"),
                    ))
                }
                _ => nodes.push(Node::Action {
                    pipe: parse_pipe(&toks, line)?,
                    line,
                }),
            }
        }
        Ok((nodes, Stop::Eof))
    }
}

impl Template {
    /// Parses a template; errors carry the line.
    pub(crate) fn parse(src: &str) -> Result<Template> {
        let mut parser = Parser {
            pieces: split(src)?.into_iter(),
        };
        let (nodes, end) = parser.block(0)?;
        match end {
            Stop::Eof => Ok(Template { nodes }),
            // `block(0)` reports else/end at depth 0 as errors itself.
            Stop::End(line) | Stop::Else(line, _) => {
                Err(TplError::new(line, "unexpected end or else"))
            }
        }
    }

    /// Evaluates the template with `root` as `.` and `$`.
    pub(crate) fn execute(&self, root: &Val) -> Result<String> {
        let mut ev = Eval {
            root,
            vars: Vec::new(),
            out: String::new(),
        };
        ev.nodes(&self.nodes, root)?;
        Ok(ev.out)
    }
}

struct Eval<'a> {
    root: &'a Val,
    vars: Vec<(String, Val)>,
    out: String,
}

fn walk(mut v: Val, fields: &[String], origin: &str, line: usize) -> Result<Val> {
    let mut path = origin.to_string();
    for f in fields {
        v = match v {
            Val::Map(mut m) => match m.remove(f) {
                Some(x) => x,
                None => {
                    return Err(TplError::new(
                        line,
                        format!(
                            "no value at {path}.{f} (a missing key; check the name or values.yaml)"
                        ),
                    ))
                }
            },
            other => {
                return Err(TplError::new(
                    line,
                    format!("{path} is a {}, it has no field {f:?}", other.kind()),
                ))
            }
        };
        path.push('.');
        path.push_str(f);
    }
    Ok(v)
}

fn want_int(v: &Val, func: &str, line: usize) -> Result<i64> {
    match v {
        Val::Int(i) => Ok(*i),
        other => Err(TplError::new(
            line,
            format!("{func} wants an int, got a {} (use int)", other.kind()),
        )),
    }
}

fn want_str<'v>(v: &'v Val, func: &str, line: usize) -> Result<&'v str> {
    match v {
        Val::Str(s) => Ok(s),
        other => Err(TplError::new(
            line,
            format!("{func} wants a string, got a {}", other.kind()),
        )),
    }
}

/// Go's `eq` on basic kinds; other kinds, or an int against a float, are errors in Go too.
fn equal(a: &Val, b: &Val, line: usize) -> Result<bool> {
    match (a, b) {
        (Val::Bool(x), Val::Bool(y)) => Ok(x == y),
        (Val::Int(x), Val::Int(y)) => Ok(x == y),
        (Val::Float(x), Val::Float(y)) => Ok(x == y),
        (Val::Str(x), Val::Str(y)) => Ok(x == y),
        _ => Err(TplError::new(
            line,
            format!(
                "incompatible types for comparison: {} and {}",
                a.kind(),
                b.kind()
            ),
        )),
    }
}

/// Go's `strconv.Quote` (Sprig's `quote` uses `%q`).
/// Go's `fmt.Sprintf` for the verbs `%s` (strings), `%v` (scalars, printed as `print` does),
/// `%d` (integers), `%q` (strings, quoted as `quote` does) and `%%`, without flags or widths.
/// Where Go would print an error marker into the text (`%!s(MISSING)`, `%!(EXTRA …)`,
/// `%!d(string=…)`) or a verb is not implemented, this is a template error instead.
fn go_sprintf(format: &str, args: &[Val], line: usize) -> Result<String> {
    let mut out = String::with_capacity(format.len());
    let mut next = args.iter();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(verb) = chars.next() else {
            return Err(TplError::new(line, "printf: the format ends in a lone %"));
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        if !matches!(verb, 's' | 'v' | 'd' | 'q') {
            return Err(TplError::new(
                line,
                format!("printf: %{verb} is not implemented here (only %s %v %d %q %%)"),
            ));
        }
        let Some(arg) = next.next() else {
            return Err(TplError::new(
                line,
                format!("printf: no argument left for %{verb}"),
            ));
        };
        match (verb, arg) {
            ('s', Val::Str(s)) => out.push_str(s),
            ('q', Val::Str(s)) => out.push_str(&go_quote(s)),
            ('d', Val::Int(i)) => {
                let _ = write!(out, "{i}");
            }
            ('v', v) => out.push_str(&v.print(line)?),
            (verb, other) => {
                return Err(TplError::new(
                    line,
                    format!("printf: %{verb} of a {}", other.kind()),
                ))
            }
        }
    }
    let extra = next.count();
    if extra > 0 {
        return Err(TplError::new(
            line,
            format!("printf: {extra} argument(s) more than the format uses"),
        ));
    }
    Ok(out)
}

fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Eval<'_> {
    fn nodes(&mut self, nodes: &[Node], dot: &Val) -> Result<()> {
        for node in nodes {
            match node {
                Node::Text(t) => self.out.push_str(t),
                Node::Action { pipe, line } => {
                    let v = self.pipe(pipe, dot)?;
                    let text = v.print(*line)?;
                    self.out.push_str(&text);
                }
                Node::If {
                    branches,
                    otherwise,
                } => {
                    let mut taken = false;
                    for (cond, body) in branches {
                        if self.pipe(cond, dot)?.truthy() {
                            self.nodes(body, dot)?;
                            taken = true;
                            break;
                        }
                    }
                    if !taken {
                        self.nodes(otherwise, dot)?;
                    }
                }
                Node::Range {
                    vars,
                    pipe,
                    body,
                    otherwise,
                    line,
                } => {
                    let items: Vec<(Val, Val)> = match self.pipe(pipe, dot)? {
                        Val::List(l) => l
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| (Val::Int(i as i64), v))
                            .collect(),
                        Val::Map(m) => m.into_iter().map(|(k, v)| (Val::Str(k), v)).collect(),
                        other => {
                            return Err(TplError::new(
                                *line,
                                format!("range can't iterate over a {}", other.kind()),
                            ))
                        }
                    };
                    if items.is_empty() {
                        self.nodes(otherwise, dot)?;
                        continue;
                    }
                    let mark = self.vars.len();
                    for (key, elem) in items {
                        self.vars.truncate(mark);
                        match vars.as_slice() {
                            [one] => self.vars.push((one.clone(), elem.clone())),
                            [k, v] => {
                                self.vars.push((k.clone(), key));
                                self.vars.push((v.clone(), elem.clone()));
                            }
                            _ => {}
                        }
                        self.nodes(body, &elem)?;
                    }
                    self.vars.truncate(mark);
                }
            }
        }
        Ok(())
    }

    fn pipe(&mut self, pipe: &Pipe, dot: &Val) -> Result<Val> {
        let mut piped: Option<Val> = None;
        for cmd in &pipe.cmds {
            piped = Some(self.cmd(cmd, dot, piped, pipe.line)?);
        }
        piped.ok_or_else(|| TplError::new(pipe.line, "empty pipeline"))
    }

    fn term(&mut self, term: &Term, dot: &Val, line: usize) -> Result<Val> {
        match term {
            Term::Field(fields) => walk(dot.clone(), fields, "", line),
            Term::Var(name, fields) => {
                let base = if name == "$" {
                    self.root.clone()
                } else {
                    self.vars
                        .iter()
                        .rev()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                        .ok_or_else(|| TplError::new(line, format!("undefined variable {name}")))?
                };
                walk(base, fields, name, line)
            }
            Term::Lit(v) => Ok(v.clone()),
            Term::Paren(p) => self.pipe(p, dot),
            Term::Func(name) => Err(TplError::new(line, format!("function {name:?} as a value"))),
        }
    }

    fn cmd(&mut self, cmd: &Cmd, dot: &Val, piped: Option<Val>, line: usize) -> Result<Val> {
        let Some(Term::Func(name)) = cmd.args.first() else {
            if piped.is_some() {
                return Err(TplError::new(
                    line,
                    "can't pipe a value into a non-function",
                ));
            }
            return match cmd.args.as_slice() {
                [one] => self.term(one, dot, line),
                _ => Err(TplError::new(
                    line,
                    "can't give arguments to a non-function",
                )),
            };
        };
        let arg_terms = &cmd.args[1..];
        let n_args = arg_terms.len() + usize::from(piped.is_some());
        // `and` and `or` evaluate lazily, as Go's do since Go 1.18.
        if name == "and" || name == "or" {
            if n_args == 0 {
                return Err(TplError::new(
                    line,
                    format!("{name} wants at least one argument"),
                ));
            }
            let mut last = Val::Null;
            for t in arg_terms {
                last = self.term(t, dot, line)?;
                if last.truthy() == (name == "or") {
                    return Ok(last);
                }
            }
            if let Some(p) = piped {
                last = p;
            }
            return Ok(last);
        }
        let mut args = Vec::with_capacity(n_args);
        for t in arg_terms {
            args.push(self.term(t, dot, line)?);
        }
        if let Some(p) = piped {
            args.push(p);
        }
        let arity = |n: usize| -> Result<()> {
            if args.len() == n {
                Ok(())
            } else {
                Err(TplError::new(
                    line,
                    format!("{name} wants {n} argument(s), got {}", args.len()),
                ))
            }
        };
        match name.as_str() {
            "eq" | "ne" => {
                arity(2)?;
                let same = equal(&args[0], &args[1], line)?;
                Ok(Val::Bool(if name == "eq" { same } else { !same }))
            }
            "lt" => {
                arity(2)?;
                match (&args[0], &args[1]) {
                    (Val::Int(a), Val::Int(b)) => Ok(Val::Bool(a < b)),
                    (Val::Float(a), Val::Float(b)) => Ok(Val::Bool(a < b)),
                    (Val::Str(a), Val::Str(b)) => Ok(Val::Bool(a < b)),
                    (a, b) => Err(TplError::new(
                        line,
                        format!(
                            "incompatible types for comparison: {} and {}",
                            a.kind(),
                            b.kind()
                        ),
                    )),
                }
            }
            "not" => {
                arity(1)?;
                Ok(Val::Bool(!args[0].truthy()))
            }
            "quote" => {
                arity(1)?;
                if args[0] == Val::Null {
                    return Err(TplError::new(
                        line,
                        "quote of a null value (Helm would give an empty string); set the value",
                    ));
                }
                Ok(Val::Str(go_quote(&args[0].print(line)?)))
            }
            "toYaml" => {
                arity(1)?;
                let text = serde_yaml::to_string(&args[0].to_yaml())
                    .map_err(|e| TplError::new(line, format!("toYaml: {e}")))?;
                Ok(Val::Str(text.trim_end_matches('\n').to_string()))
            }
            "nindent" | "indent" => {
                arity(2)?;
                let n = want_int(&args[0], name, line)?;
                if !(0..=200).contains(&n) {
                    return Err(TplError::new(
                        line,
                        format!("{name} {n}: out of range 0..=200"),
                    ));
                }
                let text = want_str(&args[1], name, line)?;
                let pad = " ".repeat(n as usize);
                let body = format!("{pad}{}", text.replace('\n', &format!("\n{pad}")));
                Ok(Val::Str(if name == "nindent" {
                    format!("\n{body}")
                } else {
                    body
                }))
            }
            "int" => {
                arity(1)?;
                match &args[0] {
                    Val::Int(i) => Ok(Val::Int(*i)),
                    Val::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                        Ok(Val::Int(*f as i64))
                    }
                    other => Err(TplError::new(
                        line,
                        format!(
                            "int of a {} ({other:?}): the value must be a whole number",
                            other.kind()
                        ),
                    )),
                }
            }
            "until" => {
                arity(1)?;
                let n = want_int(&args[0], name, line)?;
                if n > MAX_UNTIL {
                    return Err(TplError::new(
                        line,
                        format!("until {n}: more than {MAX_UNTIL}"),
                    ));
                }
                Ok(Val::List((0..n.max(0)).map(Val::Int).collect()))
            }
            "join" => {
                arity(2)?;
                let sep = want_str(&args[0], name, line)?;
                let Val::List(items) = &args[1] else {
                    return Err(TplError::new(
                        line,
                        format!("join wants a list, got a {}", args[1].kind()),
                    ));
                };
                let parts = items
                    .iter()
                    .map(|v| v.print(line))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Val::Str(parts.join(sep)))
            }
            "printf" => {
                let Some((format, rest)) = args.split_first() else {
                    return Err(TplError::new(line, "printf wants a format string"));
                };
                let format = want_str(format, name, line)?;
                Ok(Val::Str(go_sprintf(format, rest, line)?))
            }
            "fail" => {
                arity(1)?;
                let msg = want_str(&args[0], name, line)?;
                Err(TplError {
                    line,
                    message: msg.to_string(),
                    fail: true,
                })
            }
            other => Err(TplError::new(line, format!("unknown function {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(yaml: &str) -> Val {
        let v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        Val::from_yaml(&v).unwrap()
    }

    fn run(src: &str, yaml: &str) -> Result<String> {
        Template::parse(src)?.execute(&root(yaml))
    }

    #[test]
    fn trims_whitespace_like_go() {
        let r = root("a: true\nb: x");
        let t = Template::parse("x:\n  {{- if .a }}\n  y: {{ .b }}\n  {{- end }}\nz").unwrap();
        assert_eq!(t.execute(&r).unwrap(), "x:\n  y: x\nz");
        assert_eq!(run("a  {{- .b -}}  \n c", "b: q").unwrap(), "aqc");
        // Without a space the dash belongs to a number, not a trim marker.
        assert_eq!(run("a {{-3}} b", "{}").unwrap(), "a -3 b");
        assert_eq!(
            run("a {{/* note */}} b {{- /* x */ -}} c", "{}").unwrap(),
            "a  bc"
        );
    }

    #[test]
    fn if_else_if_else() {
        let src = "{{ if eq .t \"a\" }}A{{ else if eq .t \"b\" }}B{{ else }}C{{ end }}";
        assert_eq!(run(src, "t: a").unwrap(), "A");
        assert_eq!(run(src, "t: b").unwrap(), "B");
        assert_eq!(run(src, "t: z").unwrap(), "C");
    }

    #[test]
    fn range_rebinds_dot_and_declares_variables() {
        let src =
            "{{ range $i := until (int .n) }}{{ if $i }},{{ end }}m{{ $i }}.{{ $.ns }}{{ end }}";
        assert_eq!(run(src, "n: 3\nns: x").unwrap(), "m0.x,m1.x,m2.x");
        assert_eq!(
            run("{{ range .l }}[{{ . }}]{{ else }}none{{ end }}", "l: []").unwrap(),
            "none"
        );
        assert_eq!(
            run(
                "{{ range $k, $v := .m }}{{ $k }}={{ $v }};{{ end }}",
                "m: {b: 2, a: 1}"
            )
            .unwrap(),
            "a=1;b=2;"
        );
        // Inside range `.` is the element: the root's fields are reached through `$` only.
        let e = run("{{ range .l }}{{ .ns }}{{ end }}", "l: [a]\nns: x").unwrap_err();
        assert!(e.message.contains("string, it has no field"), "{e:?}");
    }

    #[test]
    fn pipes_quote_toyaml_nindent_join() {
        assert_eq!(run("{{ .s | quote }}", "s: 'a\"b'").unwrap(), "\"a\\\"b\"");
        assert_eq!(run("{{ 5 | quote }}", "{}").unwrap(), "\"5\"");
        assert_eq!(
            run("x:{{ toYaml .m | nindent 2 }}", "m: {b: 1, a: [x, 'true']}").unwrap(),
            "x:\n  a:\n  - x\n  - 'true'\n  b: 1"
        );
        assert_eq!(run("{{ join \",\" .l }}", "l: [a, b, 3]").unwrap(), "a,b,3");
        assert_eq!(run("{{ .m | toYaml | indent 1 }}", "m: {}").unwrap(), " {}");
    }

    #[test]
    fn printf_formats_like_go_and_refuses_what_go_would_mark() {
        assert_eq!(
            run(
                "{{ printf \"%s -n %s: %d%% %v %q\" .a .b (int .n) .t .a }}",
                "a: x\nb: ns\nn: 3\nt: true"
            )
            .unwrap(),
            "x -n ns: 3% true \"x\""
        );
        assert_eq!(
            run("{{ .ns | printf \"in %s\" }}", "ns: coffer").unwrap(),
            "in coffer"
        );
        // Go would print %!s(MISSING), %!(EXTRA …), %!s(int=3) or %!d(string=x) into the
        // text; here each is an error naming the problem.
        let e = run("{{ printf \"%s %s\" .a }}", "a: x").unwrap_err();
        assert!(e.message.contains("no argument left for %s"), "{e:?}");
        let e = run("{{ printf \"%s\" .a .a }}", "a: x").unwrap_err();
        assert!(e.message.contains("1 argument(s) more"), "{e:?}");
        let e = run("{{ printf \"%s\" 3 }}", "{}").unwrap_err();
        assert!(e.message.contains("%s of a int"), "{e:?}");
        let e = run("{{ printf \"%d\" .a }}", "a: x").unwrap_err();
        assert!(e.message.contains("%d of a string"), "{e:?}");
        let e = run("{{ printf \"%5s\" .a }}", "a: x").unwrap_err();
        assert!(e.message.contains("%5 is not implemented"), "{e:?}");
        let e = run("{{ printf \"50%\" }}", "{}").unwrap_err();
        assert!(e.message.contains("lone %"), "{e:?}");
        let e = run("{{ printf }}", "{}").unwrap_err();
        assert!(e.message.contains("wants a format string"), "{e:?}");
    }

    #[test]
    fn and_or_are_lazy_and_return_operands() {
        assert_eq!(run("{{ and .a .b }}", "a: x\nb: y").unwrap(), "y");
        assert_eq!(run("{{ or .a .b }}", "a: ''\nb: y").unwrap(), "y");
        // The failing operand after a false one is never evaluated (as in Go >= 1.18).
        assert_eq!(
            run("{{ if and false (fail \"no\") }}x{{ end }}", "{}").unwrap(),
            ""
        );
    }

    #[test]
    fn refuses_outside_the_subset() {
        let e = run("a\n{{ lower .x }}", "x: A").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("unknown function \"lower\""), "{e:?}");
        let e = run("{{ with .x }}{{ end }}", "x: 1").unwrap_err();
        assert!(e.message.contains("\"with\" is not supported"), "{e:?}");
        let e = run("{{ if .x }}\n\nno end", "x: 1").unwrap_err();
        assert_eq!(
            (e.line, e.message.as_str()),
            (1, "unclosed if: missing {{ end }}")
        );
        let e = run("x\n{{ end }}", "{}").unwrap_err();
        assert_eq!((e.line, e.message.as_str()), (2, "end without if or range"));
        let e = run("{{ .a.nope }}", "a: {b: 1}").unwrap_err();
        assert!(e.message.contains("no value at .a.nope"), "{e:?}");
        let e = run("{{ .x", "{}").unwrap_err();
        assert!(e.message.contains("unclosed action"), "{e:?}");
    }

    #[test]
    fn refuses_what_helm_would_print_differently() {
        // Helm prints a missing or null value as nothing and 1000000 from YAML as 1e+06.
        assert!(run("{{ .n }}", "n: 1000000")
            .unwrap_err()
            .message
            .contains("quote it"));
        assert!(run("{{ .n }}", "n: 1.5")
            .unwrap_err()
            .message
            .contains("quote it"));
        assert!(run("{{ .n }}", "n: null")
            .unwrap_err()
            .message
            .contains("null"));
        assert!(run("{{ .m }}", "m: {a: 1}")
            .unwrap_err()
            .message
            .contains("toYaml"));
        // A YAML number is a float64 in Helm; comparing it with an int literal fails there too.
        let e = run("{{ eq .n 1 }}", "n: 1").unwrap_err();
        assert!(e.message.contains("incompatible types"), "{e:?}");
        assert_eq!(run("{{ eq (int .n) 1 }}", "n: 1").unwrap(), "true");
        assert!(run("{{ int .n }}", "n: 1.5")
            .unwrap_err()
            .message
            .contains("whole number"));
    }

    #[test]
    fn fail_is_marked() {
        let e = run("\n\n{{ fail \"bad value\" }}", "{}").unwrap_err();
        assert_eq!((e.line, e.fail, e.message.as_str()), (3, true, "bad value"));
    }

    #[test]
    fn bounded_until() {
        assert!(run("{{ range until 100000 }}{{ end }}", "{}")
            .unwrap_err()
            .message
            .contains("more than"));
    }
}
