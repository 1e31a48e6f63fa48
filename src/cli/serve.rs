//! `segmentd serve`: loads the layered configuration and runs the service until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::config::{ClientConfig, LogFormat, Settings};
use crate::startup::{Application, shutdown_signal};

/// Settings come from `config/default.toml`, then `--config FILE`, then `SEGMENTD_*` environment
/// variables, then these flags (later wins).
#[derive(Debug, Args)]
#[command(
    after_long_help = "API clients are configured in the file as [[auth.clients]] tables with \
`api_key`, `token` and `orgs` (a list of IMS org ids). A client authenticates with `x-api-key: <api_key>`, \
`Authorization: Bearer <token>` and one of its orgs in `x-gw-ims-org-id`.\n\n\
Environment variables: SEGMENTD_LISTEN, SEGMENTD_DATA_DIR, SEGMENTD_LOG_FORMAT, \
SEGMENTD_HTTP__BODY_LIMIT_BYTES, SEGMENTD_HTTP__UPLOAD_LIMIT_BYTES, SEGMENTD_HTTP__REQUEST_TIMEOUT_SECS, \
SEGMENTD_HTTP__SHUTDOWN_TIMEOUT_SECS, SEGMENTD_WORKERS__PREVIEW_WORKERS, \
SEGMENTD_PREVIEW__TTL_SECS, SEGMENTD_PREVIEW__QUEUE_LIMIT, SEGMENTD_SAMPLE__DAILY_AT. \
Log filtering: RUST_LOG (default `info`)."
)]
pub struct ServeArgs {
    /// TOML configuration file layered over the defaults [key: none].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free one [key: listen; default 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory for all durable state [key: data_dir; default ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Adds the development client (x-api-key demo, token demo, org demo@AdobeOrg) and, when the data
    /// directory is empty, generates and loads a demo store for demo@AdobeOrg/prod first.
    #[arg(long)]
    pub demo: bool,
    /// Profiles in the demo store that --demo loads into an empty data directory (0: none).
    #[arg(long, value_name = "N", default_value_t = DEMO_PROFILES)]
    pub demo_profiles: u64,
    /// Log format [key: log_format; default text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Largest JSON request body in bytes [key: http.body_limit_bytes; default 10485760].
    #[arg(long, value_name = "BYTES")]
    pub body_limit_bytes: Option<usize>,
    /// Largest file upload in bytes [key: http.upload_limit_bytes; default 536870912].
    #[arg(long, value_name = "BYTES")]
    pub upload_limit_bytes: Option<usize>,
    /// Per-request deadline in seconds [key: http.request_timeout_secs; default 60].
    #[arg(long, value_name = "SECS")]
    pub request_timeout_secs: Option<u64>,
    /// Drain deadline at shutdown in seconds [key: http.shutdown_timeout_secs; default 20].
    #[arg(long, value_name = "SECS")]
    pub shutdown_timeout_secs: Option<u64>,
    /// Preview jobs evaluating at once [key: workers.preview_workers; default 2].
    #[arg(long, value_name = "N")]
    pub preview_workers: Option<usize>,
    /// Seconds a preview stays retrievable [key: preview.ttl_secs; default 86400].
    #[arg(long, value_name = "SECS")]
    pub preview_ttl_secs: Option<u64>,
    /// UTC time of day (HH:MM) of the daily sample job [key: sample.daily_at; default 07:30].
    #[arg(long, value_name = "HH:MM")]
    pub sample_daily_at: Option<String>,
    /// Previews allowed to wait for a worker before 429 [key: preview.queue_limit; default 32].
    #[arg(long, value_name = "N")]
    pub preview_queue_limit: Option<usize>,
}

impl ServeArgs {
    /// Returns the flags that were given, as a TOML table shaped like the configuration file.
    fn overrides(&self) -> anyhow::Result<toml::Table> {
        let mut root = toml::Table::new();
        let mut http = toml::Table::new();
        let mut workers = toml::Table::new();
        let mut preview = toml::Table::new();
        let set = |table: &mut toml::Table, key: &str, value: Option<toml::Value>| {
            if let Some(value) = value {
                table.insert(key.to_owned(), value);
            }
        };
        let text = |value: String| toml::Value::String(value);
        let int = |value: u64| {
            i64::try_from(value)
                .map(toml::Value::Integer)
                .context("flag value is too large")
        };
        set(
            &mut root,
            "listen",
            self.listen.map(|addr| text(addr.to_string())),
        );
        set(
            &mut root,
            "data_dir",
            self.data_dir
                .as_ref()
                .map(|dir| text(dir.display().to_string())),
        );
        set(
            &mut root,
            "log_format",
            self.log_format
                .map(|format| toml::Value::try_from(format))
                .transpose()?,
        );
        set(
            &mut http,
            "body_limit_bytes",
            self.body_limit_bytes.map(|v| int(v as u64)).transpose()?,
        );
        set(
            &mut http,
            "upload_limit_bytes",
            self.upload_limit_bytes.map(|v| int(v as u64)).transpose()?,
        );
        set(
            &mut http,
            "request_timeout_secs",
            self.request_timeout_secs.map(int).transpose()?,
        );
        set(
            &mut http,
            "shutdown_timeout_secs",
            self.shutdown_timeout_secs.map(int).transpose()?,
        );
        set(
            &mut workers,
            "preview_workers",
            self.preview_workers.map(|v| int(v as u64)).transpose()?,
        );
        set(
            &mut preview,
            "ttl_secs",
            self.preview_ttl_secs.map(int).transpose()?,
        );
        set(
            &mut preview,
            "queue_limit",
            self.preview_queue_limit
                .map(|v| int(v as u64))
                .transpose()?,
        );
        if !preview.is_empty() {
            root.insert("preview".into(), toml::Value::Table(preview));
        }
        let mut sample = toml::Table::new();
        set(
            &mut sample,
            "daily_at",
            self.sample_daily_at.clone().map(text),
        );
        if !sample.is_empty() {
            root.insert("sample".into(), toml::Value::Table(sample));
        }
        if !http.is_empty() {
            root.insert("http".into(), toml::Value::Table(http));
        }
        if !workers.is_empty() {
            root.insert("workers".into(), toml::Value::Table(workers));
        }
        Ok(root)
    }
}

/// Profiles in the demo store.
pub const DEMO_PROFILES: u64 = 200_000;

/// Generates and loads the demo store when the data directory holds no metadata yet.
///
/// The generated files are staged in a temporary folder inside the data directory and removed after
/// loading; the load goes through the batch path, so the demo data has Catalog datasets and batches.
fn load_demo_store(data_dir: &std::path::Path, profiles: u64) -> anyhow::Result<()> {
    if profiles == 0 || data_dir.join("metadata.sqlite3").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let input = tempfile::Builder::new()
        .prefix("demo-input-")
        .tempdir_in(data_dir)
        .context("creating the demo input folder")?;
    eprintln!("segmentd: empty data directory; generating a demo store of {profiles} profiles");
    let config = crate::ingest::generate::GenerateConfig {
        profiles,
        seed: 42,
        // Events end now, so relative-date queries ("in the last 30 days") find demo data.
        now_ms: chrono::Utc::now().timestamp_millis(),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        first_index: 0,
    };
    crate::ingest::generate::generate(&config, input.path(), &|| {})
        .context("generating demo data")?;
    // Stdout carries only the ready line scripts wait for; the load summary goes to stderr.
    crate::cli::ingest::load(
        input.path(),
        data_dir,
        &crate::tenant::Tenant::new("demo@AdobeOrg", "prod"),
        true,
        &mut std::io::stderr(),
    )
}

/// Loads settings and serves until a shutdown signal.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut settings = Settings::load(args.config.as_deref(), std::env::vars(), args.overrides()?)?;
    if args.demo {
        settings.auth.clients.push(ClientConfig::demo());
    }
    crate::telemetry::init(settings.log_format);
    if args.demo {
        load_demo_store(&settings.data_dir, args.demo_profiles)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start runtime")?;
    runtime.block_on(async move {
        let application = Application::build(settings).await?;
        // Scripts wait for this line: it means the listener is bound and requests are served.
        println!("segmentd listening on http://{}", application.local_addr());
        application.run_until(shutdown_signal()).await?;
        anyhow::Ok(())
    })
}
