//! A throwaway PostgreSQL cluster (`initdb` + `pg_ctl`, run as the `postgres` user, which they
//! require) in a directory of the caller's, on a free port: for tests and soaks that need an
//! outage (a full volume, a frozen server) without touching the machine's own PostgreSQL.
//! Stopped (`-m immediate`) on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    /// Its TCP port (on 127.0.0.1, or on every address of its network namespace).
    pub port: u16,
    /// The network namespace it runs in (`ip netns`), if not the caller's.
    netns: Option<String>,
}

/// PostgreSQL's programs: `REVMESH_TEST_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.
fn bin_dir() -> Result<PathBuf, String> {
    if let Some(b) = std::env::var_os("REVMESH_TEST_PG_BIN") {
        return Ok(PathBuf::from(b));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).filter(|b| b.join("initdb").exists()).collect())
        .unwrap_or_default();
    found.sort();
    found.pop().ok_or_else(|| {
        "initdb not found under /usr/lib/postgresql/*/bin: apt-get install postgresql (or set REVMESH_TEST_PG_BIN)"
            .to_owned()
    })
}

impl Cluster {
    /// Creates a cluster in `dir` (which it chowns to `postgres`) and starts it.
    pub fn start(dir: &Path) -> Result<Cluster, String> {
        Self::start_in(dir, None)
    }

    /// [`Cluster::start`] in the network namespace `netns` (made by the caller with `ip netns
    /// add`), listening on port 5432 of every address there and trusting every client that can
    /// reach it: only the caller's own links lead into that namespace.
    pub fn start_in(dir: &Path, netns: Option<&str>) -> Result<Cluster, String> {
        let bin = bin_dir()?;
        let chown = Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !chown.success() {
            return Err("chown postgres: a `postgres` user must exist, and this must run as root".into());
        }
        let port = match netns {
            Some(_) => 5432,
            None => std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port(),
        };
        let pg = Cluster { dir: dir.to_owned(), bin, port, netns: netns.map(str::to_owned) };
        let data = pg.data();
        let out = pg.as_postgres(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--wal-segsize=1", "--no-sync"],
        )?;
        if !out.status.success() {
            return Err(format!("initdb: {}", String::from_utf8_lossy(&out.stderr)));
        }
        if pg.netns.is_some() {
            let hba = dir.join("data").join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).map_err(|e| format!("pg_hba.conf: {e}"))?;
            text.push_str("\nhost all all 0.0.0.0/0 trust\n");
            std::fs::write(&hba, text).map_err(|e| format!("pg_hba.conf: {e}"))?;
        }
        pg.pg_ctl_start()?;
        Ok(pg)
    }

    /// Its directory (the data directory is `data/` inside, the socket and log beside it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Runs one of PostgreSQL's programs as the `postgres` user (in the cluster's namespace).
    fn as_postgres(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "runuser"]);
                c
            }
            None => Command::new("runuser"),
        };
        cmd.args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .output()
            .map_err(|e| format!("runuser {program}: {e}"))
    }

    /// Starts the server (again, after it stopped itself or was stopped).
    pub fn pg_ctl_start(&self) -> Result<(), String> {
        let (data, sock) = (self.data(), self.dir.display().to_string());
        let log = format!("{sock}/postgres.log");
        let listen = if self.netns.is_some() { "'*'" } else { "127.0.0.1" };
        // Keepalives reap the backends of a client that vanished behind a partition (its FIN
        // never arrived); without them each holds a connection slot for the OS's two hours.
        let keepalive = "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3";
        let opts = format!(
            "-p {} -k {sock} -c listen_addresses={listen} -c max_wal_size=32MB {keepalive}",
            self.port
        );
        let out =
            self.as_postgres("pg_ctl", &["-D", &data, "-l", &log, "-w", "-t", "60", "-o", &opts, "start"])?;
        if !out.status.success() {
            return Err(format!("pg_ctl start: {}", String::from_utf8_lossy(&out.stdout)));
        }
        Ok(())
    }

    /// Whether the postmaster runs (PostgreSQL stops itself when it cannot write its WAL).
    pub fn running(&self) -> bool {
        self.as_postgres("pg_ctl", &["-D", &self.data(), "status"]).is_ok_and(|o| o.status.success())
    }

    /// The postmaster's pid and its children's (every process of the cluster), from
    /// `postmaster.pid` and `/proc`: what a freeze (SIGSTOP) must stop together.
    pub fn pids(&self) -> Vec<u32> {
        let pidfile = self.dir.join("data").join("postmaster.pid");
        let Some(master) =
            std::fs::read_to_string(pidfile).ok().and_then(|t| t.lines().next()?.trim().parse::<u32>().ok())
        else {
            return Vec::new();
        };
        let mut pids = vec![master];
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                // pid (comm) state ppid …: comm may hold spaces, so read after the last ')'.
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
                if ppid == Some(master) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// A connection URL to its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A frozen cluster (SIGSTOP) cannot act on pg_ctl's signal: thaw it first.
        for pid in self.pids() {
            let _ = Command::new("kill").args(["-CONT", &pid.to_string()]).status();
        }
        let _ = self.as_postgres("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }
}
