//! The `berth` command line: parses arguments, sets up logging, and runs a
//! command. Errors leave as `anyhow` errors for `main` to print.

mod endpoints;
mod import_registry2;
mod progress;

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use crate::config::{self, LogFormat};
use crate::server::{Listeners, Opened, Server, Snapshot};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Several OCI container registries in one process"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every instance of the config directory.
    Serve {
        #[arg(long, default_value = ".", env = "BERTH_CONFIG_DIR")]
        config_dir: PathBuf,
    },
    /// Validate the configuration without serving; exits non-zero on errors.
    Check {
        #[arg(long, default_value = ".", env = "BERTH_CONFIG_DIR")]
        config_dir: PathBuf,
    },
    /// Run retention and garbage collection once, online, and print what was
    /// deleted (or, with --dry-run, what would be) and the usage.
    Gc {
        #[arg(long, default_value = ".", env = "BERTH_CONFIG_DIR")]
        config_dir: PathBuf,
        /// Only this instance.
        #[arg(long)]
        instance: Option<String>,
        /// Report only; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print what each instance holds, as the running server measured it
    /// last (it keeps the figure current; this reads a small file and
    /// never walks the store).
    Usage {
        #[arg(long, default_value = ".", env = "BERTH_CONFIG_DIR")]
        config_dir: PathBuf,
    },
    /// Print the path of berth's local CA certificate (created if missing),
    /// which clients of `tls.mode = "self-signed"` instances trust, e.g. as
    /// /etc/docker/certs.d/HOST/ca.crt.
    CaPath {
        #[arg(long, default_value = ".", env = "BERTH_CONFIG_DIR")]
        config_dir: PathBuf,
    },
    /// Set a user's password in an instance's htpasswd file (bcrypt), or
    /// delete the user. The password is read from standard input (a prompt
    /// on a terminal); 12 characters at least (unless --allow-short), at
    /// most 72 bytes, all that bcrypt uses.
    Passwd {
        #[arg(long, default_value = ".", env = "BERTH_CONFIG_DIR")]
        config_dir: PathBuf,
        /// Instance name (the stem of instances/NAME.toml).
        instance: String,
        user: String,
        /// Remove the user instead.
        #[arg(long)]
        delete: bool,
        /// Accept a password shorter than 12 characters.
        #[arg(long)]
        allow_short: bool,
        /// bcrypt cost.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(4..=crate::auth::MAX_COST as i64))]
        cost: u32,
    },
    /// Write instances/NAME.toml from a registry:2 config.yml and its
    /// REGISTRY_* environment variables (the credentials files it names
    /// too); prints what does not carry over. Never replaces a file; what
    /// it writes passes `berth check`, or nothing stays written.
    ImportRegistry2 {
        #[arg(long, default_value = ".", env = "BERTH_CONFIG_DIR")]
        config_dir: PathBuf,
        /// registry:2's config.yml (default: the one the registry:2 image
        /// runs with, for a setup made of REGISTRY_* variables alone).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Name of the new instance.
        #[arg(long)]
        name: String,
        /// The users' htpasswd file, instead of auth.htpasswd.path (which
        /// may be a path inside registry:2's container).
        #[arg(long)]
        htpasswd: Option<PathBuf>,
    },
    /// Verify every instance's storage: blob digests, links, tags and
    /// manifest references. Exits 0 when clean, 1 when problems remain,
    /// 2 on configuration errors.
    Fsck {
        #[arg(long, default_value = ".", env = "BERTH_CONFIG_DIR")]
        config_dir: PathBuf,
        /// Only this instance.
        #[arg(long)]
        instance: Option<String>,
        /// Quarantine corrupt blobs (under <storage root>/quarantine/, never
        /// deleted), remove dangling links and leftover temp files. Meant for
        /// a stopped server.
        #[arg(long)]
        repair: bool,
    },
}

/// Exit code for configuration errors.
pub const EXIT_CONFIG: i32 = 2;

/// A failure that `main` reports with a specific exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ExitError {
    pub code: i32,
    pub message: String,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

fn config_error(message: String) -> anyhow::Error {
    ExitError {
        code: EXIT_CONFIG,
        message,
    }
    .into()
}

/// The config in `dir` and its instances, built to serve (`check`:
/// to check, writing nothing).
fn load_checked(dir: &Path, check: bool) -> anyhow::Result<(config::Config, Snapshot)> {
    let cfg = config::load(dir).map_err(|e| config_error(e.to_string()))?;
    let snapshot = match check {
        true => Snapshot::build_for_check(&cfg),
        false => Snapshot::build(&cfg, None),
    };
    let snapshot = snapshot.map_err(|e| config_error(e.join("\n")))?;
    Ok((cfg, snapshot))
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check { config_dir } => {
            let (cfg, snapshot) = load_checked(&config_dir, true)?;
            for w in &snapshot.warnings {
                eprintln!("warning: {w}");
            }
            let problems = storage_problems(&snapshot)?;
            if !problems.is_empty() {
                return Err(config_error(problems.join("\n")));
            }
            println!("{}: configuration is valid", cfg.dir.display());
            if let Some(c) = &cfg.coordination {
                // Not connected to: a check works offline.
                println!(
                    "  coordination: postgres {} (pool of {} connections)",
                    c.postgres.server(),
                    c.pool_size
                );
            }
            let planned = crate::server::Opened::planned(&cfg);
            for line in endpoints::describe(&cfg, &planned, true) {
                println!("{line}");
            }
            for n in &snapshot.notes {
                println!("  note: {n}");
            }
            for w in gc_refusals(&cfg)? {
                eprintln!("warning: {w}");
            }
            Ok(())
        }
        Command::Serve { config_dir } => {
            let (cfg, snapshot) = load_checked(&config_dir, false)?;
            init_logging(cfg.log_format);
            raise_open_file_limit();
            // File I/O runs on blocking threads; 500 clients would start 400
            // of them, each with its stack and allocator caches.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads(MAX_BLOCKING_THREADS)
                .build()
                .context("cannot start the runtime")?;
            runtime.block_on(serve(&config_dir, cfg, snapshot))
        }
        Command::Gc {
            config_dir,
            instance,
            dry_run,
        } => gc(&config_dir, instance.as_deref(), dry_run),
        Command::Usage { config_dir } => usage(&config_dir),
        Command::CaPath { config_dir } => {
            let cfg = config::load(&config_dir).map_err(|e| config_error(e.to_string()))?;
            crate::server::tls::local_ca(&cfg.state_dir).map_err(anyhow::Error::msg)?;
            println!("{}", crate::server::tls::ca_path(&cfg.state_dir).display());
            Ok(())
        }
        Command::Passwd {
            config_dir,
            instance,
            user,
            delete,
            allow_short,
            cost,
        } => passwd(&config_dir, &instance, &user, delete, allow_short, cost),
        Command::Fsck {
            config_dir,
            instance,
            repair,
        } => fsck(&config_dir, instance.as_deref(), repair),
        Command::ImportRegistry2 {
            config_dir,
            config,
            name,
            htpasswd,
        } => {
            let req = import_registry2::Request {
                config_dir: &config_dir,
                config: config.as_deref(),
                name: &name,
                htpasswd: htpasswd.as_deref(),
            };
            import_registry2::run(&req, std::env::vars())
        }
    }
}

/// Most threads doing file I/O at once; more requests wait for one.
const MAX_BLOCKING_THREADS: usize = 64;

/// Lifts the soft limit on open files to the hard one: every connection and
/// every blob being read or written holds a descriptor, and the usual soft
/// default of 1024 is too few for a few hundred clients.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open file limit"),
        Err(e) => tracing::warn!("cannot raise the open file limit: {e}"),
    }
}

/// The `[coordination]` of `cfg`, connected; `None` without one.
async fn coordinator(cfg: &config::Config) -> anyhow::Result<Option<crate::coord::Coordinator>> {
    let Some(c) = &cfg.coordination else {
        return Ok(None);
    };
    let coord = crate::coord::Coordinator::connect(&c.postgres, "", c.pool_size)
        .await
        .context("coordination")?;
    tracing::info!(coordination = %coord.describe(), "locks shared with other berth processes");
    Ok(Some(coord))
}

/// For `berth check`: the instances whose collections would be refused
/// now, because a live process on their store takes its locks elsewhere
/// ([`crate::registry::presence`]), with the reason. Reads the stores,
/// connects to nothing.
fn gc_refusals(cfg: &config::Config) -> anyhow::Result<Vec<String>> {
    use crate::registry::presence;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    let postgres = cfg.coordination.as_ref().map(|c| &c.postgres);
    let mut out = Vec::new();
    for i in &cfg.instances {
        let driver = i.storage.open()?;
        let ours = crate::coord::planned_domain(postgres, &i.storage.identity());
        let refused = runtime.block_on(presence::refusal_in(
            &*driver,
            &ours,
            std::time::SystemTime::now(),
        ));
        match refused {
            Ok(None) => {}
            Ok(Some(why)) => out.push(format!("instance {}: {why}", i.name)),
            Err(e) => out.push(format!(
                "instance {}: cannot read the heartbeats: {e}",
                i.name
            )),
        }
    }
    Ok(out)
}

/// For `berth check`: what keeps each bucket of the instances from being
/// written and read (its probe, run for all of them at once). Directories
/// are left alone: a check writes nothing on this host.
fn storage_problems(snapshot: &Snapshot) -> anyhow::Result<Vec<String>> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    let probes = snapshot
        .instances
        .values()
        .filter(|i| i.config.storage.is_shared())
        .map(|i| async move {
            let probed = i.registry.driver().probe().await;
            probed
                .err()
                .map(|why| format!("instance {}: {why}", i.config.name))
        });
    let found = runtime.block_on(futures_util::future::join_all(probes));
    Ok(found.into_iter().flatten().collect())
}

/// `berth gc`: retention and garbage collection of the chosen instances.
fn gc(dir: &Path, only: Option<&str>, dry_run: bool) -> anyhow::Result<()> {
    let cfg = config::load(dir).map_err(|e| config_error(e.to_string()))?;
    // The audit lines of what it deletes go to stderr, as the server's do.
    init_logging(cfg.log_format);
    let instances: Vec<_> = cfg
        .instances
        .iter()
        .filter(|i| only.is_none_or(|n| i.name == n))
        .collect();
    if let (Some(name), true) = (only, instances.is_empty()) {
        return Err(config_error(format!("no instance '{name}'")));
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    let coord = runtime.block_on(coordinator(&cfg))?;
    for inst in instances {
        let registry = crate::registry::Registry::open(
            &inst.storage,
            coord
                .as_ref()
                .map(|c| c.for_store(&inst.storage.identity())),
        )?;
        let run = registry.collect_garbage(&inst.retention, std::time::SystemTime::now(), dry_run);
        let report = runtime
            .block_on(run)
            .map_err(|e| anyhow::anyhow!("{}: {e}", inst.name))?;
        crate::audit::collection(&inst.name, &report, "berth gc");
        print!("{}", report.render(&inst.name));
    }
    Ok(())
}

/// `berth usage`: what the running server wrote of each instance's usage.
fn usage(dir: &Path) -> anyhow::Result<()> {
    let cfg = config::load(dir).map_err(|e| config_error(e.to_string()))?;
    let now = std::time::SystemTime::now();
    for inst in &cfg.instances {
        match crate::server::usage::read(&cfg.state_dir, &inst.name).map_err(anyhow::Error::msg)? {
            Some(recorded) => println!("{}", recorded.render(&inst.name, now)),
            None => println!(
                "{}: usage not measured yet (the running server measures it)",
                inst.name
            ),
        }
    }
    Ok(())
}

/// `berth fsck`: the checks live in [`crate::registry::fsck`]; this picks
/// the instances, prints the reports and sets the exit code.
fn fsck(dir: &Path, only: Option<&str>, repair: bool) -> anyhow::Result<()> {
    use crate::registry::fsck;
    let cfg = config::load(dir).map_err(|e| config_error(e.to_string()))?;
    let instances: Vec<_> = cfg
        .instances
        .iter()
        .filter(|i| only.is_none_or(|name| i.name == name))
        .collect();
    if let (Some(name), true) = (only, instances.is_empty()) {
        let names: Vec<_> = cfg.instances.iter().map(|i| i.name.as_str()).collect();
        return Err(config_error(format!(
            "no instance '{name}' (instances: {})",
            names.join(", ")
        )));
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    let mut unresolved = 0;
    for inst in instances {
        let mut progress = progress::TerminalProgress::new(&inst.name);
        let driver = inst.storage.open()?;
        let root = inst.storage.to_string();
        let opts = fsck::Options { repair };
        let report = runtime.block_on(fsck::check(&*driver, &root, &opts, &mut |p| {
            progress.update(p)
        }));
        progress.finish();
        print!("{}", report.render(&inst.name));
        std::io::stdout().flush()?;
        unresolved += report.unresolved();
    }
    if unresolved > 0 {
        let message = if repair {
            format!("{unresolved} problem(s) could not be repaired")
        } else {
            format!("{unresolved} problem(s) found; `./ctl fsck --repair` repairs what it can")
        };
        return Err(ExitError { code: 1, message }.into());
    }
    Ok(())
}

/// Tells on stdout where the listeners are (scripts and tests read it).
fn announce(opened: &[Opened]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for o in opened {
        let scheme = if o.tls { "https" } else { "http" };
        writeln!(
            out,
            "berth: {} listening on {scheme}://{}",
            o.listen.label(),
            o.local
        )?;
    }
    out.flush()
}

/// Tells on stdout where each instance answers ([`endpoints::describe`]),
/// at start and after each reload: `berth: instances:`, then the lines,
/// each after `berth: `, written at once (`./ctl status` shows the last).
fn announce_instances(server: &Server) -> std::io::Result<()> {
    let mut block = String::from("berth: instances:\n");
    for line in endpoints::describe(server.config(), &server.listeners(), false) {
        block.push_str(&format!("berth: {line}\n"));
    }
    let mut out = std::io::stdout().lock();
    out.write_all(block.as_bytes())?;
    out.flush()
}

async fn serve(dir: &Path, cfg: config::Config, snapshot: Snapshot) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    for w in &snapshot.warnings {
        tracing::warn!("{w}");
    }
    // With `[coordination]`, the instances take their locks in PostgreSQL:
    // built again now that it is connected.
    let snapshot = match coordinator(&cfg).await? {
        Some(coord) => Snapshot::build_coordinated(&cfg, None, Some(coord))
            .map_err(|e| config_error(e.join("\n")))?,
        None => snapshot,
    };
    let listeners = Listeners::bind(&cfg).await?;
    let mut server = Server::start(cfg, snapshot, listeners).await?;
    announce(&server.listeners())?;
    announce_instances(&server)?;
    println!("berth: ready");
    std::io::stdout().flush()?;
    tracing::info!(instances = server.config().instances.len(), "serving");
    loop {
        tokio::select! {
            _ = hangup.recv() => reload(dir, &mut server).await,
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let drain = server.config().drain_timeout;
    tracing::info!(
        drain_secs = drain.as_secs(),
        "shutting down: finishing requests in flight"
    );
    server.shutdown(drain).await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP: re-reads the config dir; a config with any error is refused whole.
async fn reload(dir: &Path, server: &mut Server) {
    tracing::info!("reloading the configuration");
    let result = match config::load(dir) {
        Ok(cfg) => server.reload(cfg).await,
        Err(e) => Err(e.0.iter().map(|e| e.to_string()).collect()),
    };
    match result {
        Ok(opened) => {
            if let Err(e) = announce(&opened).and_then(|()| announce_instances(server)) {
                tracing::warn!("cannot write to stdout: {e}");
            }
            let names: Vec<_> = server
                .config()
                .instances
                .iter()
                .map(|i| i.name.as_str())
                .collect();
            tracing::info!(instances = %names.join(","), "configuration reloaded");
        }
        Err(errors) => {
            for e in &errors {
                tracing::error!("reload refused, the running configuration stays: {e}");
            }
        }
    }
}

/// Shortest password `berth passwd` sets without `--allow-short`, in
/// characters: anyone who reaches a registry's port may try passwords (the
/// throttle slows guessing, it does not stop it), and a leaked htpasswd
/// file lets its bcrypt hashes be guessed offline; a short password falls
/// to either.
const MIN_PASSWORD_CHARS: usize = 12;

fn passwd(
    dir: &std::path::Path,
    instance: &str,
    user: &str,
    delete: bool,
    allow_short: bool,
    cost: u32,
) -> anyhow::Result<()> {
    let cfg = config::load_for_passwd(dir).map_err(|e| ExitError {
        code: EXIT_CONFIG,
        message: e.to_string(),
    })?;
    let Some(inst) = cfg.instances.iter().find(|i| i.name == instance) else {
        let names: Vec<_> = cfg.instances.iter().map(|i| i.name.as_str()).collect();
        bail!("no instance '{instance}' (instances: {})", names.join(", "));
    };
    let password = if delete {
        None
    } else {
        let pw = if std::io::stdin().is_terminal() {
            let pw =
                rpassword::prompt_password(format!("New password for {user} on {instance}: "))?;
            let again = rpassword::prompt_password("Again: ")?;
            if pw != again {
                bail!("the passwords differ; nothing was changed");
            }
            pw
        } else {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the password")?;
            line.trim_end_matches(['\n', '\r']).to_string()
        };
        if pw.is_empty() {
            bail!("empty password; nothing was changed");
        }
        let chars = pw.chars().count();
        if chars < MIN_PASSWORD_CHARS && !allow_short {
            bail!(
                "the password is {chars} characters long; at least {MIN_PASSWORD_CHARS} are \
                 required: anyone who reaches the registry may try passwords, and the \
                 htpasswd file's hashes can be guessed offline if it leaks, and a short \
                 password falls to either. --allow-short sets it anyway \
                 (./ctl passwd {instance} {user} --allow-short); nothing was changed"
            );
        }
        if pw.len() > crate::auth::MAX_PASSWORD_BYTES {
            let too_long = crate::auth::HtpasswdError::PasswordTooLong { bytes: pw.len() };
            bail!("{too_long}; nothing was changed");
        }
        Some(pw)
    };
    let existed = crate::auth::set_password(&inst.htpasswd, user, password.as_deref(), cost)?;
    let what = match (delete, existed) {
        (true, true) => "removed",
        (true, false) => bail!("user '{user}' is not in {}", inst.htpasswd.display()),
        (false, true) => "password changed",
        (false, false) => "added",
    };
    println!("{user}: {what} in {}", inst.htpasswd.display());
    Ok(())
}
