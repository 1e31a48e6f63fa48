//! `segmentd pql ...`: check, evaluate and convert PQL expressions from the command line.
//!
//! Scripts depend on these forms:
//!
//! ```text
//! segmentd pql check 'EXPR'
//! segmentd pql eval --profile FILE [--events FILE] [--now RFC3339] 'EXPR'
//! segmentd pql convert --to json|text [--from json|text] 'EXPR'
//! ```
//!
//! The input format is detected when not given: a document starting with `{` that parses as a
//! JSON object with a `nodeType` is `pql/json`, anything else `pql/text`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::pql::{self, JsonProfile, PqlFormat};

/// Format names accepted by `--to` and `--from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// `pql/text`
    Text,
    /// `pql/json`
    Json,
}

impl From<FormatArg> for PqlFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Text => PqlFormat::Text,
            FormatArg::Json => PqlFormat::Json,
        }
    }
}

/// The `pql` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PqlCommand {
    /// Parse and type-check an expression; prints `ok` or the errors with a caret under each.
    Check {
        /// Input format (detected when omitted).
        #[arg(long)]
        from: Option<FormatArg>,
        /// The expression.
        expr: String,
    },
    /// Evaluate an expression against a profile (and its events) and print the result as JSON.
    Eval {
        /// JSON file holding the merged profile object.
        #[arg(long)]
        profile: PathBuf,
        /// JSON file holding the array of ExperienceEvents.
        #[arg(long)]
        events: Option<PathBuf>,
        /// Evaluation instant (RFC 3339); defaults to the current time.
        #[arg(long)]
        now: Option<String>,
        /// Input format (detected when omitted).
        #[arg(long)]
        from: Option<FormatArg>,
        /// The expression.
        expr: String,
    },
    /// Convert an expression between `pql/text` and `pql/json`.
    Convert {
        /// Output format.
        #[arg(long)]
        to: FormatArg,
        /// Input format (detected when omitted).
        #[arg(long)]
        from: Option<FormatArg>,
        /// The expression.
        expr: String,
    },
}

fn detect(expr: &str) -> PqlFormat {
    let looks_json = expr.trim_start().starts_with('{')
        && serde_json::from_str::<serde_json::Value>(expr)
            .is_ok_and(|v| v.get("nodeType").is_some());
    if looks_json {
        PqlFormat::Json
    } else {
        PqlFormat::Text
    }
}

fn parse(expr: &str, from: Option<FormatArg>) -> Result<pql::Expr, String> {
    let format = from.map_or_else(|| detect(expr), PqlFormat::from);
    pql::parse(expr, format).map_err(|e| e.render(expr))
}

fn read_json(path: &Path, what: &str) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {what} file {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{what} file {} is not valid JSON: {e}", path.display()))
}

fn eval(
    profile: &Path,
    events: Option<&Path>,
    now: Option<&str>,
    expr: &str,
    from: Option<FormatArg>,
) -> Result<String, String> {
    let query = pql::compile(&parse(expr, from)?).map_err(|e| e.render(expr))?;
    let profile = read_json(profile, "profile")?;
    if !profile.is_object() {
        return Err("the profile file must hold a JSON object".to_string());
    }
    let events = match events {
        Some(p) => match read_json(p, "events")? {
            serde_json::Value::Array(items) => items,
            _ => return Err("the events file must hold a JSON array".to_string()),
        },
        None => Vec::new(),
    };
    let now = match now {
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map_err(|e| format!("--now `{s}` is not an RFC 3339 timestamp: {e}"))?
            .with_timezone(&chrono::Utc),
        None => chrono::Utc::now(),
    };
    let value = query
        .evaluate(&JsonProfile::new(&profile, &events), now)
        .map_err(|e| e.to_string())?;
    Ok(value.to_string())
}

/// Runs a `pql` subcommand: exit code 0 on success, 1 on a bad expression or input.
pub fn run(cmd: PqlCommand) -> ExitCode {
    let result = match cmd {
        PqlCommand::Check { from, expr } => parse(&expr, from).map(|_| "ok".to_string()),
        PqlCommand::Eval {
            profile,
            events,
            now,
            from,
            expr,
        } => eval(&profile, events.as_deref(), now.as_deref(), &expr, from),
        PqlCommand::Convert { to, from, expr } => parse(&expr, from).map(|e| match to {
            FormatArg::Json => pql::to_json(&e).to_string(),
            FormatArg::Text => pql::to_text(&e),
        }),
    };
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}
