//! A real, throwaway PostgreSQL for tests and for `walden quickstart`.
//!
//! [`LocalPostgres::start`] runs `initdb` in a new directory (as the `postgres` OS user when
//! running as root: initdb refuses root), starts the server with `wal_level = logical` on a
//! free loopback port, and spawns a reaper: a tiny shell process that stops the server and
//! removes its directory as soon as the owning process is gone, so clusters never outlive a
//! test run — not on panic, not on SIGKILL, not when a `static` is never dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use tokio_postgres;

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error(
        "no PostgreSQL server binaries found (looked for initdb and pg_ctl on PATH and in \
         /usr/lib/postgresql/*/bin). Install them, e.g. `apt-get install postgresql`"
    )]
    NoBinaries,
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}")]
    Io(String),
    #[error(
        "running as root needs the `postgres` OS user to own the cluster (initdb refuses root); create it (`useradd postgres`) or run as another user"
    )]
    NoPostgresUser,
}

pub type Result<T, E = KitError> = std::result::Result<T, E>;

/// Where the server binaries are: `$WALDEN_PG_BIN`, then PATH, then the newest
/// `/usr/lib/postgresql/<version>/bin`.
pub fn find_bin_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("WALDEN_PG_BIN") {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versioned.sort();
    if let Some((_, bin)) = versioned.pop() {
        return Ok(bin);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
                return Ok(dir);
            }
        }
    }
    Err(KitError::NoBinaries)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A Postgres error with the server's message (tokio-postgres' Display says only "db error").
pub fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; a tiny race is possible, so `start`
/// retries on a port clash).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| KitError::Io(format!("binding a port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| KitError::Io(e.to_string()))
}

/// Options for a local cluster.
#[derive(Debug, Clone, Default)]
pub struct LocalPgOptions {
    /// Keep the cluster in this directory (created) instead of a temporary one, and do not
    /// remove it when stopped.
    pub data_dir: Option<PathBuf>,
    /// Extra `postgresql.conf` settings.
    pub settings: Vec<(String, String)>,
}

/// A running local cluster. Stopped (and its temporary directory removed) on drop.
pub struct LocalPostgres {
    bin: PathBuf,
    root: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres_user: bool,
    temporary: bool,
    reaper: Option<std::process::Child>,
}

impl LocalPostgres {
    pub fn start(options: LocalPgOptions) -> Result<Self> {
        let bin = find_bin_dir()?;
        let as_postgres_user = is_root();
        if as_postgres_user
            && !Command::new("id")
                .arg("postgres")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        {
            return Err(KitError::NoPostgresUser);
        }
        let (root, temporary) = match &options.data_dir {
            Some(d) => (d.clone(), false),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("walden-pg-")
                    .tempdir()
                    .map_err(|e| KitError::Io(format!("creating a temp dir: {e}")))?;
                (dir.keep(), true)
            }
        };
        std::fs::create_dir_all(&root)
            .map_err(|e| KitError::Io(format!("creating {}: {e}", root.display())))?;
        let data = root.join("data");
        let mut pg = Self {
            bin,
            root,
            data,
            port: 0,
            as_postgres_user,
            temporary,
            reaper: None,
        };
        if as_postgres_user {
            pg.run(
                "chown",
                Command::new("chown")
                    .arg("-R")
                    .arg("postgres:")
                    .arg(&pg.root),
            )?;
            // Let the postgres user reach a directory under a root-owned temp path.
            let _ = Command::new("chmod").arg("755").arg(&pg.root).status();
        }
        if !pg.data.join("PG_VERSION").exists() {
            let mut initdb = pg.pg_command("initdb");
            initdb.arg("-D").arg(&pg.data).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]);
            pg.run("initdb", &mut initdb)?;
        }
        let mut conf = String::from(
            "\n# walden local cluster\nwal_level = logical\nmax_replication_slots = 20\n\
             max_wal_senders = 20\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             listen_addresses = '127.0.0.1'\nmax_connections = 200\nshared_buffers = 128MB\n\
             log_min_messages = warning\nlogging_collector = off\n",
        );
        conf.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            pg.root.display()
        ));
        for (k, v) in &options.settings {
            conf.push_str(&format!("{k} = '{v}'\n"));
        }
        std::fs::write(pg.data.join("postgresql.auto.conf"), conf)
            .map_err(|e| KitError::Io(format!("writing postgresql.auto.conf: {e}")))?;
        pg.start_server()?;
        pg.spawn_reaper();
        Ok(pg)
    }

    fn pg_command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, what: &str, cmd: &mut Command) -> Result<String> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| KitError::Command {
                what: what.into(),
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(KitError::Command {
                what: what.into(),
                detail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn start_server(&mut self) -> Result<()> {
        let mut last = String::new();
        for _ in 0..5 {
            let port = if self.port != 0 {
                self.port
            } else {
                free_port()?
            };
            let log = self.root.join("server.log");
            let mut ctl = self.pg_command("pg_ctl");
            ctl.arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&log)
                .arg("-o")
                .arg(format!("-p {port}"))
                .args(["-w", "-t", "60", "start"]);
            match self.run("pg_ctl start", &mut ctl) {
                Ok(_) => {
                    self.port = port;
                    return Ok(());
                }
                Err(e) => {
                    last = format!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
                }
            }
        }
        Err(KitError::Command {
            what: "starting PostgreSQL".into(),
            detail: last,
        })
    }

    /// Stops the server and removes the directory once `pid` (this process) is gone.
    fn spawn_reaper(&mut self) {
        let pid = std::process::id();
        let stop = format!(
            "{} {} -D '{}' -m immediate stop",
            if self.as_postgres_user {
                "runuser -u postgres --"
            } else {
                ""
            },
            self.bin.join("pg_ctl").display(),
            self.data.display()
        );
        let remove = if self.temporary {
            format!("rm -rf '{}'", self.root.display())
        } else {
            String::new()
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; {remove}"
        );
        self.reaper = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Connects as the superuser.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(&self.url(db), tokio_postgres::NoTls)
            .await
            .map_err(|e| KitError::Io(format!("connecting to {}: {e}", self.url(db))))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Creates a database (dropping one of the same name first).
    pub async fn create_database(&self, name: &str) -> Result<String> {
        let c = self.connect("postgres").await?;
        // Separate statements: CREATE DATABASE cannot run in a multi-statement batch.
        for sql in [
            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            format!("CREATE DATABASE \"{name}\""),
        ] {
            c.batch_execute(&sql)
                .await
                .map_err(|e| KitError::Io(format!("creating database {name}: {}", pg_error(&e))))?;
        }
        Ok(self.url(name))
    }

    /// A new database with a unique name.
    pub async fn fresh_database(&self, prefix: &str) -> Result<(String, String)> {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("{prefix}_{}_{n}", std::process::id());
        let url = self.create_database(&name).await?;
        Ok((name, url))
    }

    /// Restarts the server (`fast` or `immediate`).
    pub fn restart(&mut self, mode: &str) -> Result<()> {
        self.stop(mode)?;
        self.start_server()
    }

    pub fn stop(&self, mode: &str) -> Result<()> {
        let mut ctl = self.pg_command("pg_ctl");
        ctl.arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "-w", "stop"]);
        self.run("pg_ctl stop", &mut ctl).map(|_| ())
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        let _ = self.stop("immediate");
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.root);
        }
        if let Some(mut r) = self.reaper.take() {
            let _ = r.kill();
            let _ = r.wait();
        }
    }
}

/// One cluster shared by all tests of a test binary (the reaper removes it at exit).
pub fn shared() -> &'static LocalPostgres {
    static PG: OnceLock<LocalPostgres> = OnceLock::new();
    PG.get_or_init(|| {
        // Tests run in parallel, each with its own slot (and verify with a temporary one
        // more): room for all of them.
        let room = [("max_replication_slots", "64"), ("max_wal_senders", "64")];
        LocalPostgres::start(LocalPgOptions {
            settings: room
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
        .expect("starting the test PostgreSQL")
    })
}

/// The repository root (where `scripts/` is).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The Python of the test venv (`$WALDEN_TEST_PYTHON`, or made by `scripts/python-env.sh`).
pub fn python() -> Result<PathBuf> {
    static PY: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    PY.get_or_init(|| {
        if let Ok(p) = std::env::var("WALDEN_TEST_PYTHON") {
            return Ok(PathBuf::from(p));
        }
        let script = repo_root().join("scripts/python-env.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .last()
            .map(|l| PathBuf::from(l.trim()))
            .ok_or_else(|| "python-env.sh printed no path".to_string())
    })
    .clone()
    .map_err(KitError::Io)
}

/// Waits until `f` returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
