//! Command-line interface of the `wscluster` binary.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Options;

/// A clustered WebSocket publish/subscribe server (sgc and presence protocols).
#[derive(Debug, Parser)]
#[command(name = "wscluster", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Serve(ServeArgs),
    /// Validate a configuration file and print the effective settings
    /// (flags and environment applied, secrets masked).
    CheckConfig(CheckArgs),
}

/// Arguments of `wscluster serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML file with settings; flags and environment variables win over it.
    #[arg(long, env = "WSCLUSTER_CONFIG")]
    pub config: Option<PathBuf>,

    /// The settings.
    #[command(flatten)]
    pub options: Options,

    /// Serve a plain echo on every WebSocket instead of the protocols.
    /// Only for the WebSocket conformance suite.
    #[arg(long, hide = true)]
    pub echo: bool,
}

/// Arguments of `wscluster check-config`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The TOML file to check.
    pub file: PathBuf,

    /// The settings, as they would be given to `serve`.
    #[command(flatten)]
    pub options: Options,
}
