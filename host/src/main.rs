//! The `distributary` command line (SPEC §4): `run`, `check`, `route` and `status`.

use clap::{Parser, Subcommand};
use distributary::config::Config;
use distributary::run::{
    Outcome, RunOptions, discovers_outputs, load_plugins, precheck_discovering_plugins, run,
};
use distributary::shutdown::Shutdown;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "distributary",
    version,
    about = "Fan out Kinesis streams to N streams, routed by WASM plugins"
)]
struct Cli {
    /// Log lines as text, or as one JSON object per line (fields such as
    /// pipeline, source, shard and output as keys).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run until SIGINT/SIGTERM; then stop reading, drain in-flight writes, write checkpoints, exit 0.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Apply the configuration file again whenever it changes (it is
        /// always read again on SIGHUP); a file that is not valid is logged
        /// and the running configuration stays.
        #[arg(long)]
        watch_config: bool,
    },
    /// Validate the configuration and its plugins; print the resolved pipelines.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Per source shard and pipeline: owner, checkpoint, finished, and lag
    /// (MillisBehindLatest at the stored position). Exit 1 when the store
    /// or a source cannot be read.
    Status {
        #[arg(long, short)]
        config: PathBuf,
        /// One JSON array of rows instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Dry run, offline: route sample records (JSON lines) through a plugin
    /// and print, per record, where it goes and what it becomes, or the error.
    Route {
        /// The plugin component (.wasm).
        #[arg(long)]
        plugin: PathBuf,
        /// The plugin's configuration, as JSON (what `plugin_config` becomes).
        #[arg(long, default_value = "{}")]
        plugin_config: String,
        /// The pipeline's output names, comma-separated, in order.
        #[arg(long, value_delimiter = ',', default_value = "out")]
        outputs: Vec<String>,
        /// Records, one JSON object per line: `data` (text or JSON) or
        /// `data_base64`, `partition_key`, optional `explicit_hash_key`.
        /// Default: standard input.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Linear memory cap of the plugin, MiB.
        #[arg(long, default_value_t = 64)]
        memory_mb: u64,
        /// Wall-clock cap of one plugin call, milliseconds.
        #[arg(long, default_value_t = 5000)]
        batch_timeout_ms: u64,
        /// Run again whenever the plugin file or the input file changes
        /// (needs --input); stop with Ctrl-C.
        #[arg(long, requires = "input")]
        watch: bool,
    },
    /// Plugin authoring: `plugin new NAME` scaffolds a project.
    Plugin {
        #[command(subcommand)]
        action: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Creates a plugin project (template, sample records, a test) and
    /// prints the commands to build and dry-run it.
    New {
        /// The plugin's name (lowercase letters, digits, '-', '_').
        name: String,
        #[arg(long, value_enum, default_value_t = distributary::scaffold::Lang::Rust)]
        lang: distributary::scaffold::Lang,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust: the path of the distributary-plugin-sdk crate (default: the
        /// repository, by git).
        #[arg(long)]
        sdk: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,aws_config=warn,aws_smithy_runtime=warn")
            }),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run {
            config,
            watch_config,
        } => run_command(&config, RunOptions { watch_config }),
        Command::Status { config, json } => status_command(&config, json),
        Command::Route {
            plugin,
            plugin_config,
            outputs,
            input,
            memory_mb,
            batch_timeout_ms,
            watch,
        } => {
            let spec = distributary::plugin::PluginSpec {
                pipeline: "dry-run".into(),
                path: plugin,
                config_json: plugin_config,
                outputs,
                limits: distributary::config::Limits {
                    memory_mb,
                    batch_timeout_ms,
                },
            };
            match (watch, input.as_deref()) {
                (true, Some(input)) => route_watch(&spec, input),
                _ => route_command(spec, input.as_deref()),
            }
        }
        Command::Plugin {
            action:
                PluginCommand::New {
                    name,
                    lang,
                    dir,
                    sdk,
                },
        } => plugin_new(&name, lang, dir, sdk.as_deref()),
    }
}

fn plugin_new(
    name: &str,
    lang: distributary::scaffold::Lang,
    dir: Option<PathBuf>,
    sdk: Option<&str>,
) -> ExitCode {
    use distributary::scaffold;
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    match scaffold::plan(name, lang, sdk).and_then(|s| scaffold::write(&dir, &s).map(|()| s)) {
        Ok(s) => {
            println!("created {} ({} files). Next:", dir.display(), s.files.len());
            for command in &s.next {
                println!("  {command}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `route --watch`: the dry run, then again after every change of the
/// plugin or the input file (150 ms quiet), until interrupted.
fn route_watch(spec: &distributary::plugin::PluginSpec, input: &std::path::Path) -> ExitCode {
    use notify::Watcher;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher =
        match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && !matches!(event.kind, notify::EventKind::Access(_))
            {
                let _ = tx.send(event.paths);
            }
        }) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("error: cannot watch files: {e}");
                return ExitCode::from(2);
            }
        };
    let files = [spec.path.clone(), input.to_path_buf()];
    let names: Vec<_> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_os_string()))
        .collect();
    for file in &files {
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
            eprintln!("error: {}: cannot watch: {e}", dir.display());
            return ExitCode::from(2);
        }
    }
    loop {
        let code = route_command(spec.clone(), Some(input));
        eprintln!(
            "--- {} ({}); watching {} and {} for changes",
            if code == ExitCode::SUCCESS {
                "ok"
            } else {
                "failed"
            },
            spec.path.display(),
            spec.path.display(),
            input.display()
        );
        // Wait for an event on one of the two files, then for quiet.
        loop {
            match rx.recv() {
                Ok(paths)
                    if paths
                        .iter()
                        .any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n))) =>
                {
                    break;
                }
                Ok(_) => continue,
                Err(_) => return ExitCode::FAILURE,
            }
        }
        while rx
            .recv_timeout(std::time::Duration::from_millis(150))
            .is_ok()
        {}
        eprintln!("--- changed: routing again");
    }
}

/// Exit status: 0 when every record routed cleanly, 1 when some record
/// failed or had a delivery an output would refuse, 2 when the plugin or
/// the input cannot be loaded.
fn route_command(
    spec: distributary::plugin::PluginSpec,
    input: Option<&std::path::Path>,
) -> ExitCode {
    use distributary::dry_run;
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&spec.config_json) {
        eprintln!("error: --plugin-config: not JSON: {e}");
        return ExitCode::from(2);
    }
    let read = match input {
        Some(path) => std::fs::File::open(path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|f| {
                dry_run::read_input(&path.display().to_string(), std::io::BufReader::new(f))
            }),
        None => dry_run::read_input("stdin", std::io::stdin().lock()),
    };
    let read = match read {
        Ok(read) => read,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let plugin = match distributary::plugin::Plugin::load(&spec, None) {
        Ok(plugin) => plugin,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (routed, failures) = dry_run::route(&plugin, &spec.outputs, &read.records, &read.lines);
    // One line per input line, in input order: routed records and bad lines.
    let mut lines: Vec<(usize, serde_json::Value)> =
        read.lines.iter().copied().zip(routed).collect();
    for (line, error) in &read.errors {
        eprintln!("error: {error}");
        lines.push((*line, serde_json::json!({"line": line, "error": error})));
    }
    lines.sort_by_key(|(line, _)| *line);
    for (_, value) in lines {
        println!("{value}");
    }
    let bad = failures + read.errors.len();
    if bad > 0 {
        eprintln!(
            "{bad} of {} lines failed, would be refused, or are not records",
            read.records.len() + read.errors.len()
        );
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn check(path: &std::path::Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Offline: the plugins of pipelines that discover outputs are `init`ed
    // with a pattern output's own name; if that fails it is only a warning.
    let loaded = load_plugins(&config, None, |p| {
        (!discovers_outputs(&config, p)).then(|| p.outputs.clone())
    })
    .and_then(|_| precheck_discovering_plugins(&config, None));
    let warnings = match loaded {
        Ok(warnings) => warnings,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mut warnings = warnings;
    match probe_endpoints(&config) {
        Ok(more) => warnings.extend(more),
        Err(errors) => {
            for e in errors {
                eprintln!("error: {}: {e}", path.display());
            }
            return ExitCode::from(2);
        }
    }
    println!("{}: OK", path.display());
    for warning in warnings {
        println!("warning: {warning}");
    }
    for (name, s) in &config.sources {
        println!(
            "source {name}: stream {} ({:?} from {:?})",
            s.stream, s.reader, s.start_position
        );
    }
    for (name, o) in &config.outputs {
        match (&o.stream, &o.stream_pattern) {
            (Some(stream), _) => println!("output {name}: stream {stream}"),
            (None, Some(pattern)) => println!(
                "output {name}: every stream matching {pattern:?}, listed every {} s",
                o.discover_interval_s
            ),
            (None, None) => println!("output {name}: ?"),
        }
    }
    for p in &config.pipelines {
        let router = match &p.plugin {
            Some(plugin) => format!(
                "plugin {} with config {}",
                plugin.display(),
                p.plugin_config_json()
            ),
            None => "replicate (native)".to_string(),
        };
        println!(
            "pipeline {}: {} -> [{}] via {router}; on_error {:?}{}",
            p.name,
            p.source,
            p.outputs.join(", "),
            p.on_error,
            p.dead_letter
                .as_ref()
                .map(|d| format!(" to {d}"))
                .unwrap_or_default()
        );
    }
    ExitCode::SUCCESS
}

/// One TLS handshake with each HTTPS endpoint the file names (3 s each at
/// most): a refused certificate is an error naming the key, the endpoint and
/// the cause; an endpoint that does not answer is only a warning (`run`
/// waits out outages).
fn probe_endpoints(config: &Config) -> Result<Vec<String>, Vec<String>> {
    use distributary::tls::{Probe, named_endpoints, probe};
    let endpoints = named_endpoints(config);
    if endpoints.is_empty() {
        return Ok(Vec::new());
    }
    let Ok(rt) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return Err(vec!["cannot start the async runtime".into()]);
    };
    let (mut warnings, mut errors) = (Vec::new(), Vec::new());
    for (key, url, bundle) in endpoints {
        match rt.block_on(probe(
            &url,
            bundle.as_deref(),
            std::time::Duration::from_secs(3),
        )) {
            Probe::Trusted => {}
            Probe::Refused(why) => errors.push(format!("{key}.endpoint_url: {url}: {why}")),
            Probe::Unreachable(why) => {
                warnings.push(format!("{key}.endpoint_url: {url} did not answer: {why}"))
            }
        }
    }
    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(errors)
    }
}

/// Builds the async runtime (I/O and timers on), or says why it cannot.
fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

fn status_command(path: &std::path::Path, json: bool) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(distributary::status::collect(&config)) {
        Ok(rows) => {
            if json {
                match serde_json::to_string_pretty(&rows) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", distributary::status::render(&rows));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_command(path: &std::path::Path, options: RunOptions) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let shutdown = Shutdown::new();
        tokio::spawn(signals(shutdown.clone()));
        match run(config, shutdown, options).await {
            Ok(Outcome::Stopped) => ExitCode::SUCCESS,
            Ok(Outcome::Halted(names)) => {
                eprintln!("error: pipelines halted: {}", names.join(", "));
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        }
    })
}

/// First SIGINT/SIGTERM: graceful shutdown. Second: exit at once (checkpoints
/// already written stay valid; unacknowledged records are read again).
async fn signals(shutdown: Shutdown) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    for n in 0.. {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if n == 0 {
            tracing::info!(
                "shutting down: finishing in-flight batches (signal again to exit at once)"
            );
            shutdown.request();
        } else {
            tracing::warn!("second signal: exiting without draining");
            std::process::exit(130);
        }
    }
}
