//! Node configuration: command-line flags, environment variables and a
//! TOML file, merged in that order of precedence, then checked.
//!
//! [`Options`] is one struct read three ways: clap fills it from flags and
//! `WSCLUSTER_*` variables (a flag beats its variable), serde fills it from
//! the file. The file is the base, the set command-line/env values are laid
//! over it, and [`Settings`] deserialises the result, supplying defaults
//! for what nobody set, and validates it. A bad value fails start-up with a
//! message naming its key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

/// Backplane engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineName {
    /// Nodes link directly over TCP.
    Mesh,
    /// Redis Pub/Sub.
    Redis,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting, each optional: what one source (flags and environment,
/// or the file) says. Keys in the file are these field names.
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// WebSocket and HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "WSCLUSTER_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,

    /// Largest WebSocket message accepted, in bytes; larger ones close the
    /// connection with 1009 [default: 1048576].
    #[arg(long, env = "WSCLUSTER_MAX_MESSAGE_SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<usize>,

    /// Most open WebSocket connections on this node; more are refused with
    /// HTTP 503 [default: 100000].
    #[arg(long, env = "WSCLUSTER_MAX_CONNECTIONS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,

    /// Most subscriptions one connection may hold [default: 1024].
    #[arg(long, env = "WSCLUSTER_MAX_SUBSCRIPTIONS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_subscriptions: Option<usize>,

    /// Longest channel name accepted, in bytes [default: 255].
    #[arg(long, env = "WSCLUSTER_MAX_CHANNEL_LENGTH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_channel_length: Option<usize>,

    /// Outbound queue bound per connection, in messages; a client this far
    /// behind is closed with 1008 "slow consumer" [default: 8192].
    #[arg(long, env = "WSCLUSTER_OUTBOUND_QUEUE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound_queue: Option<usize>,

    /// Outbound queue bound per connection, in bytes [default: 4194304].
    #[arg(long, env = "WSCLUSTER_OUTBOUND_QUEUE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound_queue_bytes: Option<usize>,

    /// Kept events per channel at queueLevel2 [default: 100].
    #[arg(long, env = "WSCLUSTER_KEPT_PER_CHANNEL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_per_channel: Option<usize>,

    /// Server-to-client QoS: qosLevel0, qosLevel1 or qosLevel2 [default: qosLevel0].
    #[arg(long, env = "WSCLUSTER_QOS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,

    /// Milliseconds before an unacknowledged message is re-sent [default: 5000].
    #[arg(long, env = "WSCLUSTER_RESEND_INTERVAL_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resend_interval_ms: Option<u64>,

    /// Milliseconds shutdown waits for clients to close [default: 5000].
    #[arg(long, env = "WSCLUSTER_DRAIN_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_timeout_ms: Option<u64>,

    /// Threads serving connections; 0 means one per CPU [default: 0]. Set
    /// it lower when several nodes (or other busy processes) share the
    /// machine's cores, so their threads do not preempt each other.
    #[arg(long, env = "WSCLUSTER_WORKER_THREADS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,

    /// API key for the HTTP API (`Authorization: apikey KEY`); without one
    /// the API is off.
    #[arg(long, env = "WSCLUSTER_API_KEY", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,

    /// This node's id; unique per live node [default: generated].
    #[arg(long, env = "WSCLUSTER_NODE_ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,

    /// Backplane engine [default: mesh].
    #[arg(long, env = "WSCLUSTER_ENGINE", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineName>,

    /// Mesh: where this node accepts links [default: 127.0.0.1:5410].
    #[arg(long, env = "WSCLUSTER_CLUSTER_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_listen: Option<SocketAddr>,

    /// Mesh: another node's link address (repeatable; one reachable seed is
    /// enough to join the whole mesh).
    #[arg(long = "peer", env = "WSCLUSTER_PEERS", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<String>>,

    /// Shared secret every node proves (never sent, never logged).
    #[arg(long, env = "WSCLUSTER_CLUSTER_SECRET", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_secret: Option<String>,

    /// Mesh TLS: this node's certificate chain (PEM). With the key and the
    /// CA it turns on TLS, verified both ways, on every link.
    #[arg(long, env = "WSCLUSTER_CLUSTER_TLS_CERT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_tls_cert: Option<PathBuf>,

    /// Mesh TLS: this node's private key (PEM).
    #[arg(long, env = "WSCLUSTER_CLUSTER_TLS_KEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_tls_key: Option<PathBuf>,

    /// Mesh TLS: the CA (PEM) that signs every node's certificate.
    #[arg(long, env = "WSCLUSTER_CLUSTER_TLS_CA")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_tls_ca: Option<PathBuf>,

    /// Milliseconds of silence after which a peer is gone [default: 3000].
    #[arg(long, env = "WSCLUSTER_FAILURE_TIMEOUT_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_timeout_ms: Option<u64>,

    /// Redis: server host, when no URL is given [default: 127.0.0.1].
    #[arg(long, env = "WSCLUSTER_REDIS_HOST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_host: Option<String>,

    /// Redis: server port, when no URL is given [default: 6379].
    #[arg(long, env = "WSCLUSTER_REDIS_PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_port: Option<u16>,

    /// Redis: full URL with user, password, database and TLS, e.g.
    /// `rediss://user:password@host:6380/0`.
    #[arg(long, env = "WSCLUSTER_REDIS_URL", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,

    /// Redis: the Pub/Sub channel every node shares [default: wscluster].
    #[arg(long, env = "WSCLUSTER_REDIS_CHANNEL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_channel: Option<String>,

    /// Log format [default: text].
    #[arg(long, env = "WSCLUSTER_LOG_FORMAT", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,

    /// Log level or filter; RUST_LOG wins when set [default: info].
    #[arg(long, env = "WSCLUSTER_LOG_LEVEL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

/// The effective settings of a node, every value decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// See [`Options::listen`].
    pub listen: SocketAddr,
    /// See [`Options::max_message_size`].
    pub max_message_size: usize,
    /// See [`Options::max_connections`].
    pub max_connections: usize,
    /// See [`Options::max_subscriptions`].
    pub max_subscriptions: usize,
    /// See [`Options::max_channel_length`].
    pub max_channel_length: usize,
    /// See [`Options::outbound_queue`].
    pub outbound_queue: usize,
    /// See [`Options::outbound_queue_bytes`].
    pub outbound_queue_bytes: usize,
    /// See [`Options::kept_per_channel`].
    pub kept_per_channel: usize,
    /// See [`Options::qos`].
    pub qos: String,
    /// See [`Options::resend_interval_ms`].
    pub resend_interval_ms: u64,
    /// See [`Options::drain_timeout_ms`].
    pub drain_timeout_ms: u64,
    /// See [`Options::worker_threads`].
    pub worker_threads: usize,
    /// See [`Options::api_key`].
    pub api_key: Option<String>,
    /// See [`Options::node_id`].
    pub node_id: String,
    /// See [`Options::engine`].
    pub engine: EngineName,
    /// See [`Options::cluster_listen`].
    pub cluster_listen: SocketAddr,
    /// See [`Options::peers`].
    pub peers: Vec<String>,
    /// See [`Options::cluster_secret`].
    pub cluster_secret: Option<String>,
    /// See [`Options::cluster_tls_cert`].
    pub cluster_tls_cert: Option<PathBuf>,
    /// See [`Options::cluster_tls_key`].
    pub cluster_tls_key: Option<PathBuf>,
    /// See [`Options::cluster_tls_ca`].
    pub cluster_tls_ca: Option<PathBuf>,
    /// See [`Options::failure_timeout_ms`].
    pub failure_timeout_ms: u64,
    /// See [`Options::redis_host`].
    pub redis_host: String,
    /// See [`Options::redis_port`].
    pub redis_port: u16,
    /// See [`Options::redis_url`].
    pub redis_url: Option<String>,
    /// See [`Options::redis_channel`].
    pub redis_channel: String,
    /// See [`Options::log_format`].
    pub log_format: LogFormat,
    /// See [`Options::log_level`].
    pub log_level: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_message_size: 1 << 20,
            max_connections: 100_000,
            max_subscriptions: 1024,
            max_channel_length: 255,
            outbound_queue: 8192,
            outbound_queue_bytes: 4 << 20,
            kept_per_channel: 100,
            qos: "qosLevel0".into(),
            resend_interval_ms: 5000,
            drain_timeout_ms: 5000,
            worker_threads: 0,
            api_key: None,
            node_id: String::new(),
            engine: EngineName::Mesh,
            cluster_listen: SocketAddr::from(([127, 0, 0, 1], 5410)),
            peers: Vec::new(),
            cluster_secret: None,
            cluster_tls_cert: None,
            cluster_tls_key: None,
            cluster_tls_ca: None,
            failure_timeout_ms: 3000,
            redis_host: "127.0.0.1".into(),
            redis_port: 6379,
            redis_url: None,
            redis_channel: "wscluster".into(),
            log_format: LogFormat::Text,
            log_level: "info".into(),
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a wrong key or value.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What the parser said (it names the key).
        message: String,
    },
    /// A value is out of range.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

impl Settings {
    /// Merges `cli` (flags and environment) over the file at `path`, if
    /// any, over the defaults, and validates the result.
    ///
    /// # Errors
    /// When the file cannot be read or parsed, or a value is invalid.
    pub fn resolve(cli: &Options, path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut merged = match path {
            Some(p) => read_file(p)?,
            None => toml::Table::new(),
        };
        let overrides = toml::Table::try_from(cli).map_err(|e| ConfigError::File {
            path: "command line".into(),
            message: e.to_string(),
        })?;
        merged.extend(overrides);

        let settings: Settings =
            merged.try_into().map_err(|e: toml::de::Error| ConfigError::File {
                path: path.map_or("command line".into(), |p| p.display().to_string()),
                message: e.message().to_owned(),
            })?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| Err(ConfigError::Invalid { key, reason: reason.into() });
        if self.max_message_size < 1024 {
            return invalid("max_message_size", "must be at least 1024 bytes");
        }
        if self.worker_threads > 1024 {
            return invalid("worker_threads", "must be at most 1024 (0: one per CPU)");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.max_channel_length == 0 {
            return invalid("max_channel_length", "must be at least 1");
        }
        if self.outbound_queue == 0 || self.outbound_queue_bytes == 0 {
            return invalid("outbound_queue", "bounds must be at least 1");
        }
        if crate::sgc::Qos::parse(&self.qos).is_none() {
            return invalid("qos", "expected qosLevel0, qosLevel1 or qosLevel2");
        }
        if self.resend_interval_ms == 0 {
            return invalid("resend_interval_ms", "must be at least 1");
        }
        if self.failure_timeout_ms < 100 {
            return invalid("failure_timeout_ms", "must be at least 100 ms");
        }
        let tls = [&self.cluster_tls_cert, &self.cluster_tls_key, &self.cluster_tls_ca];
        if tls.iter().any(|f| f.is_some()) && !tls.iter().all(|f| f.is_some()) {
            return invalid(
                "cluster_tls_cert",
                "mesh TLS needs all three of cluster_tls_cert, cluster_tls_key and cluster_tls_ca",
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return invalid(
                "log_level",
                "not a level or filter (e.g. \"info\", \"info,wscluster=debug\")",
            );
        }
        if self.node_id.len() > 128
            || self.node_id.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return invalid(
                "node_id",
                "at most 128 characters, without spaces or control characters",
            );
        }
        if let Some(bad) = self.peers.iter().find(|p| !is_host_port(p)) {
            return Err(ConfigError::Invalid {
                key: "peers",
                reason: format!("{bad:?} is not host:port"),
            });
        }
        if self.redis_channel.is_empty() {
            return invalid("redis_channel", "must not be empty");
        }
        if self.api_key.as_deref() == Some("") {
            return invalid("api_key", "must not be empty (leave it unset to turn the API off)");
        }
        if let Some(url) = &self.redis_url
            && redis::Client::open(url.as_str()).is_err()
        {
            return invalid("redis_url", "not a redis:// or rediss:// URL");
        }
        Ok(())
    }

    /// The settings as TOML, with every secret replaced by `***`.
    pub fn masked_toml(&self) -> String {
        let mut shown = self.clone();
        let mask = |v: &mut Option<String>| {
            if v.is_some() {
                *v = Some("***".into());
            }
        };
        mask(&mut shown.api_key);
        mask(&mut shown.cluster_secret);
        if let Some(url) = &shown.redis_url {
            shown.redis_url = Some(mask_url_password(url));
        }
        toml::to_string(&shown).unwrap_or_default()
    }

    /// The failure timeout as a duration.
    pub fn failure_timeout(&self) -> Duration {
        Duration::from_millis(self.failure_timeout_ms)
    }

    /// The mesh TLS files, when TLS is on.
    pub fn cluster_tls(&self) -> Option<crate::cluster::mesh::tls::TlsFiles> {
        Some(crate::cluster::mesh::tls::TlsFiles {
            cert: self.cluster_tls_cert.clone()?,
            key: self.cluster_tls_key.clone()?,
            ca: self.cluster_tls_ca.clone()?,
        })
    }

    /// The Redis URL, built from host and port when none was given.
    pub fn effective_redis_url(&self) -> String {
        self.redis_url.clone().unwrap_or_else(|| {
            let host = &self.redis_host;
            // Bracket IPv6 hosts so the URL stays parseable.
            let host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
            format!("redis://{host}:{}/", self.redis_port)
        })
    }
}

/// `host:port` with a non-empty host and a port from 1 to 65535.
fn is_host_port(text: &str) -> bool {
    text.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0))
}

fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
    let file_error =
        |message: String| ConfigError::File { path: path.display().to_string(), message };

    // Parse as Options first so unknown keys and wrong types are reported
    // against the file, by key.
    let described = |e: toml::de::Error| file_error(describe(&text, &e));
    let _: Options = toml::from_str(&text).map_err(described)?;
    toml::from_str(&text).map_err(described)
}

/// The parser's message, prefixed with the key and line it is about.
/// toml reports a value error by position only; the key is read back from
/// the line that position falls on.
fn describe(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return e.message().to_owned();
    };
    let line_start = text[..span.start.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line_no = text[..line_start].matches('\n').count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("");
    match line.split_once('=') {
        Some((key, _)) if !key.trim().is_empty() => {
            format!("`{}` (line {line_no}): {}", key.trim(), e.message())
        }
        _ => format!("line {line_no}: {}", e.message()),
    }
}

fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile_path::TempPath {
        tempfile_path::write(text)
    }

    /// A tiny temp-file helper, so tests need no extra crate.
    mod tempfile_path {
        use std::path::PathBuf;

        pub struct TempPath(pub PathBuf);

        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }

        pub fn write(text: &str) -> TempPath {
            let path =
                std::env::temp_dir().join(format!("wscluster-test-{}.toml", uuid::Uuid::new_v4()));
            let mut f = std::fs::File::create(&path).expect("create temp file");
            super::Write::write_all(&mut f, text.as_bytes()).expect("write temp file");
            TempPath(path)
        }
    }

    #[test]
    fn flags_beat_the_file_which_beats_the_defaults() {
        let f = file("max_message_size = 2048\nredis_channel = \"from-file\"\n");
        let cli = Options { max_message_size: Some(4096), ..Options::default() };
        let s = Settings::resolve(&cli, Some(&f.0)).expect("valid");
        assert_eq!(s.max_message_size, 4096);
        assert_eq!(s.redis_channel, "from-file");
        assert_eq!(s.max_subscriptions, 1024);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let f = file("max_mesage_size = 10\n");
        let e = Settings::resolve(&Options::default(), Some(&f.0)).unwrap_err().to_string();
        assert!(e.contains("max_mesage_size"), "{e}");

        let f = file("max_message_size = \"big\"\n");
        let e = Settings::resolve(&Options::default(), Some(&f.0)).unwrap_err().to_string();
        assert!(e.contains("max_message_size") || e.contains("invalid type"), "{e}");

        let cli = Options { qos: Some("qosLevel9".into()), ..Options::default() };
        let e = Settings::resolve(&cli, None).unwrap_err().to_string();
        assert!(e.contains("`qos`"), "{e}");

        for (cli, key) in [
            (Options { log_level: Some("garbage[[[".into()), ..Options::default() }, "`log_level`"),
            (Options { peers: Some(vec!["nonsense".into()]), ..Options::default() }, "`peers`"),
            (Options { peers: Some(vec!["h:99999".into()]), ..Options::default() }, "`peers`"),
            (Options { node_id: Some("a b\nc".into()), ..Options::default() }, "`node_id`"),
            (Options { worker_threads: Some(100_000), ..Options::default() }, "`worker_threads`"),
        ] {
            let e = Settings::resolve(&cli, None).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn value_errors_name_the_key_and_line() {
        for (text, key) in [
            ("max_message_size = \"big\"\n", "`max_message_size`"),
            ("max_connections = 5\nlisten = \"nowhere\"\n", "`listen` (line 2)"),
            ("engine = \"kafka\"\n", "`engine`"),
        ] {
            let f = file(text);
            let e = Settings::resolve(&Options::default(), Some(&f.0)).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }

    #[test]
    fn secrets_are_masked() {
        let cli = Options {
            cluster_secret: Some("hunter2".into()),
            api_key: Some("k3y".into()),
            redis_url: Some("redis://u:pw@h:1/".into()),
            ..Options::default()
        };
        let shown = Settings::resolve(&cli, None).expect("valid").masked_toml();
        assert!(
            !shown.contains("hunter2") && !shown.contains("k3y") && !shown.contains(":pw@"),
            "{shown}"
        );
        assert!(shown.contains("redis://u:***@h:1/"), "{shown}");
    }
}
