//! Typed configuration: one [`Settings`] struct, layered from the shipped defaults, an optional file,
//! `SEGMENTD_*` environment variables and command-line flags, in that order.
//!
//! Layers are merged as TOML tables before the single deserialisation, so a later layer may set one key
//! of a section without repeating the rest, and unknown keys from any layer are rejected by name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The defaults shipped in `config/default.toml`, compiled in so the binary runs without the file.
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.toml");

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "SEGMENTD_";

/// Every setting of the service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Directory holding all durable state.
    pub data_dir: PathBuf,
    /// Log output format.
    pub log_format: LogFormat,
    /// HTTP limits and deadlines.
    pub http: HttpSettings,
    /// Worker pool sizes.
    pub workers: WorkerSettings,
    /// Preview job lifetime and queue.
    pub preview: PreviewSettings,
    /// The daily sample job.
    pub sample: SampleSettings,
    /// API clients allowed to call the service.
    pub auth: AuthSettings,
}

/// The daily sample job.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SampleSettings {
    /// Time of day (`HH:MM`, UTC) the samples are rebuilt.
    pub daily_at: String,
}

/// Preview job lifetime and queue.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewSettings {
    /// Seconds a preview stays retrievable.
    pub ttl_secs: u64,
    /// Previews allowed to wait for a worker.
    pub queue_limit: usize,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// HTTP limits and deadlines.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Largest accepted JSON request body, in bytes.
    pub body_limit_bytes: usize,
    /// Largest accepted file upload, in bytes.
    pub upload_limit_bytes: usize,
    /// Deadline of one request, in seconds.
    pub request_timeout_secs: u64,
    /// Deadline for draining requests and stopping workers at shutdown, in seconds.
    pub shutdown_timeout_secs: u64,
}

/// Worker pool sizes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Preview jobs evaluating at once.
    pub preview_workers: usize,
}

/// API clients.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// The clients; an empty list means no API call can succeed (health endpoints still answer).
    pub clients: Vec<ClientConfig>,
}

/// One API client: the credentials it presents and the organizations it may act for.
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Value of the `x-api-key` header.
    pub api_key: String,
    /// Bearer token of the `Authorization` header.
    pub token: String,
    /// IMS organization ids this client may name in `x-gw-ims-org-id`.
    pub orgs: Vec<String>,
}

impl std::fmt::Debug for ClientConfig {
    // The token is a secret: it never reaches logs through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("api_key", &self.api_key)
            .field("token", &"<redacted>")
            .field("orgs", &self.orgs)
            .finish()
    }
}

impl ClientConfig {
    /// Returns the development client that `--demo` adds, with fixed, documented credentials.
    pub fn demo() -> Self {
        Self {
            api_key: "demo".into(),
            token: "demo".into(),
            orgs: vec!["demo@AdobeOrg".into()],
        }
    }
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A configuration file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A layer is not valid TOML.
    #[error("{origin} is not valid TOML: {message}")]
    Syntax {
        /// Where the layer came from.
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// The merged layers do not describe valid settings (unknown key, wrong type...).
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads settings from the defaults, then `file`, then the `SEGMENTD_*` entries of `env`, then
    /// `overrides` (the command-line flags, as a TOML table).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: toml::Table,
    ) -> Result<Self, ConfigError> {
        let mut merged = parse_layer(DEFAULT_CONFIG, "config/default.toml")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            merge_tables(
                &mut merged,
                parse_layer(&text, &path.display().to_string())?,
            );
        }
        merge_tables(&mut merged, env_layer(env));
        merge_tables(&mut merged, overrides);
        let settings = Settings::deserialize(toml::Value::Table(merged))
            .map_err(|error| ConfigError::Invalid(error.to_string()))?;
        if crate::sample::service::parse_daily_at(&settings.sample.daily_at).is_none() {
            return Err(ConfigError::Invalid(format!(
                "sample.daily_at `{}` is not a time of day: use HH:MM (UTC)",
                settings.sample.daily_at
            )));
        }
        Ok(settings)
    }
}

fn parse_layer(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|error| ConfigError::Syntax {
            origin: origin.to_owned(),
            message: error.to_string(),
        })
}

/// Turns `SEGMENTD_HTTP__BODY_LIMIT_BYTES=5` into `{http = {body_limit_bytes = 5}}`.
///
/// Values are read as TOML scalars when they parse as one (numbers, booleans, arrays), else as strings,
/// so `SEGMENTD_LISTEN=127.0.0.1:9000` needs no quoting.
fn env_layer(env: impl IntoIterator<Item = (String, String)>) -> toml::Table {
    let mut layer = toml::Table::new();
    for (name, raw) in env {
        let Some(key) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut table| table.remove("v"))
            .unwrap_or(toml::Value::String(raw));
        let (leaf, sections) = path.split_last().expect("split yields at least one part");
        let mut table = &mut layer;
        for section in sections {
            table = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .expect("sections created here are tables");
        }
        table.insert(leaf.clone(), value);
    }
    layer
}

/// Merges `upper` into `lower`: tables merge key by key, any other value replaces.
fn merge_tables(lower: &mut toml::Table, upper: toml::Table) {
    for (key, value) in upper {
        match (lower.get_mut(&key), value) {
            (Some(toml::Value::Table(lower_table)), toml::Value::Table(upper_table)) => {
                merge_tables(lower_table, upper_table)
            }
            (_, value) => {
                lower.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load() {
        let settings = Settings::load(None, [], toml::Table::new()).unwrap();
        assert_eq!(settings.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(settings.data_dir, PathBuf::from("./data"));
        assert!(settings.auth.clients.is_empty());
    }

    #[test]
    fn layers_apply_in_order_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\n[http]\nbody_limit_bytes = 1\n[[auth.clients]]\napi_key = \"k\"\ntoken = \"t\"\norgs = [\"o@AdobeOrg\"]\n",
        )
        .unwrap();
        let environment = env(&[
            ("SEGMENTD_LISTEN", "127.0.0.1:2"),
            ("SEGMENTD_HTTP__REQUEST_TIMEOUT_SECS", "7"),
            ("OTHER", "ignored"),
        ]);
        let mut flags = toml::Table::new();
        flags.insert("listen".into(), toml::Value::String("127.0.0.1:3".into()));
        let settings = Settings::load(Some(&file), environment, flags).unwrap();
        assert_eq!(settings.listen, "127.0.0.1:3".parse().unwrap());
        assert_eq!(settings.http.body_limit_bytes, 1);
        assert_eq!(settings.http.request_timeout_secs, 7);
        // Keys of a section not named by a layer keep their defaults.
        assert_eq!(settings.http.shutdown_timeout_secs, 20);
        assert_eq!(
            settings.auth.clients[0].orgs,
            vec!["o@AdobeOrg".to_string()]
        );
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let error = Settings::load(
            None,
            env(&[("SEGMENTD_HTTP__BODY_LIMT", "1")]),
            toml::Table::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("body_limt"), "{error}");
    }

    #[test]
    fn client_tokens_are_not_printed() {
        let debug = format!("{:?}", ClientConfig::demo());
        assert!(!debug.contains("token: \"demo\""), "{debug}");
    }
}
