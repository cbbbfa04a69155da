//! A PostgreSQL server of a test's own: Debian's PostgreSQL (package
//! `postgresql`, which `./ctl test` installs) with its data in a temp dir,
//! listening on a free 127.0.0.1 port, run as the `postgres` user when the
//! test runs as root (PostgreSQL refuses root), and stopped by `pg_ctl
//! stop` when dropped. The cluster Debian creates at install plays no part.
//! `initdb` runs once: each server starts from a copy of a cluster kept in
//! cargo's `CARGO_TARGET_TMPDIR`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    running: bool,
}

impl Postgres {
    /// Initializes a cluster with the superuser `berth` (trust
    /// authentication, on 127.0.0.1 only) and starts it.
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("berth-pg")
            .tempdir()
            .expect("tempdir");
        if as_root() {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path()));
        }
        let mut pg = Postgres {
            dir,
            bin,
            port: 0,
            running: false,
        };
        run(Command::new("cp")
            .arg("-a")
            .arg(pg.template())
            .arg(pg.data()));
        // The port is free when chosen, but another program may take it
        // before the server binds it: then another one is tried.
        for _ in 0..5 {
            pg.port = free_port();
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                pg.port,
                pg.dir.path().display()
            );
            let log = pg.dir.path().join("log").display().to_string();
            let out = pg.pg(
                "pg_ctl",
                &["-D", &pg.data(), "-o", &options, "-l", &log, "-w", "start"],
            );
            if out.status.success() {
                pg.running = true;
                return pg;
            }
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            if !log.contains("could not bind") {
                panic!(
                    "pg_ctl start failed: {}\n{log}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        panic!("PostgreSQL found no free port");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the database `postgres` as the superuser `berth`.
    pub fn url(&self) -> String {
        format!("postgres://berth@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server now (fast shutdown: sessions are ended).
    pub fn stop(&mut self) {
        if std::mem::replace(&mut self.running, false) {
            let out = self.pg("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
            assert!(
                out.status.success(),
                "pg_ctl stop: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// A cluster made by `initdb` with the superuser `berth`, trust
    /// authentication, owned by the user that runs the servers; made once
    /// and kept for later runs.
    fn template(&self) -> PathBuf {
        let version = self.bin.parent().unwrap().file_name().unwrap();
        let kept = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("postgres-{}-cluster", version.to_string_lossy()));
        if kept.join("PG_VERSION").is_file() {
            return kept;
        }
        let made = self.dir.path().join("template");
        let made = made.to_str().unwrap();
        let args = ["-D", made, "-A", "trust", "-U", "berth", "-N", "-E", "UTF8"];
        self.run_pg("initdb", &args);
        // Copied beside its place, then renamed into it: tests starting at
        // once never see half of it (the first rename wins).
        let staging = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let copy = staging.path().join("cluster");
        run(Command::new("cp").arg("-a").arg(made).arg(&copy));
        let _ = std::fs::rename(&copy, &kept);
        assert!(kept.join("PG_VERSION").is_file());
        kept
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs a PostgreSQL program as the user that owns the cluster.
    fn pg(&self, program: &str, args: &[&str]) -> Output {
        let path = self.bin.join(program);
        let mut cmd = if as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    }

    fn run_pg(&self, program: &str, args: &[&str]) {
        let out = self.pg(program, args);
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postgres {
    /// Immediate shutdown: the data is thrown away with the temp dir.
    fn drop(&mut self) {
        if std::mem::replace(&mut self.running, false) {
            let _ = self.pg(
                "pg_ctl",
                &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
            );
        }
    }
}

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The newest `/usr/lib/postgresql/VERSION/bin`.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl): \
             `./ctl test` installs it, or `apt-get install postgresql`"
        ),
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().unwrap().port()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
