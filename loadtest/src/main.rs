//! `revmesh-loadtest`: the demo mesh, and the scenarios that judge revmesh with real
//! processes and sockets, printed as a table and optionally written as JSON.

// A benchmark measures real time from outside the system under test; the one-clock rule
// (clippy.toml) is the authority's and the agent's.
#![allow(clippy::disallowed_methods)]

mod anchors;
mod chaos;
mod demo;
mod goals;
mod grpc;
mod hostile;
mod http_checks;
mod jwks;
mod procs;
mod restart;
mod scenarios;
mod soak;
mod util;

use clap::{Parser, Subcommand};
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "revmesh-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// A local mesh (authority + 3 agents) with a token accepted, revoked and refused; runs until Ctrl-C.
    Demo,
    /// Run scenarios and print the report.
    Run(Box<RunArgs>),
    /// Internal: build a set of N jtis in a fresh process and print its RSS growth.
    #[command(hide = true)]
    MemoryProbe {
        /// Number of jtis.
        n: u64,
    },
    /// Internal: one durable JetStream consumer process of the `receipt` scenario.
    #[command(hide = true)]
    NatsConsumer {
        /// NATS server `host:port`.
        #[arg(long)]
        addr: String,
        /// Consumer number.
        #[arg(long)]
        id: usize,
    },
    /// Internal: one Redis subscriber process of the `receipt` scenario.
    #[command(hide = true)]
    RedisSubscriber {
        /// Redis server `host:port`.
        #[arg(long)]
        addr: String,
        /// Make every message durable in an agent journal in this directory before reporting it.
        #[arg(long)]
        journal: Option<std::path::PathBuf>,
    },
    /// Internal: the `checks` scenario's echo floor, a process of its own.
    #[command(hide = true)]
    EchoServer {
        /// Unix socket to listen on.
        socket: std::path::PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Comma-separated: propagation, receipt, ingest, checks, http-checks, grpc, jwks, compare, reconnect-storm, memory, chaos, flood,
    /// slow-clients (needs slowhttptest), restart, tls, ha
    /// (default: all but ha, which needs PostgreSQL).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "propagation,ingest,checks,compare,reconnect-storm,memory,chaos"
    )]
    scenario: Vec<String>,
    /// Fleet sizes for propagation.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    agents: Vec<usize>,
    /// Fleet sizes of real agent processes (each with a data dir), and of subscriber processes
    /// of the anchors, for `receipt`.
    #[arg(long, value_delimiter = ',', default_value = "50,200")]
    agent_procs: Vec<usize>,
    /// Revocations measured per fleet size.
    #[arg(long, default_value_t = 200)]
    revocations: usize,
    /// Revocations per second during propagation (above 0, at most 1,000,000).
    #[arg(long, default_value_t = 20.0, value_parser = positive_rate)]
    rate: f64,
    /// Requests per sequential latency run.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Seconds per throughput run.
    #[arg(long, default_value_t = 3)]
    throughput_secs: u64,
    /// Set sizes for the restart scenario.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    entries: Vec<u64>,
    /// Fresh agents joining at once in the restart scenario's storm.
    #[arg(long, default_value_t = 1000)]
    storm_agents: usize,
    /// Seconds of chaos.
    #[arg(long, default_value_t = 30)]
    chaos_secs: u64,
    /// Agents in the chaos run.
    #[arg(long, default_value_t = 20)]
    chaos_agents: usize,
    /// Seed of the chaos run and of the soak's fault schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of faults in the soak.
    #[arg(long, default_value_t = 60)]
    soak_secs: u64,
    /// Agent processes in the soak.
    #[arg(long, default_value_t = 20)]
    soak_agents: usize,
    /// Where the soak writes its report (soak-SEED.json) and picture (soak-SEED.svg)
    /// [default: the current directory].
    #[arg(long, default_value = ".")]
    soak_out: std::path::PathBuf,
    /// PostgreSQL server for the `ha` scenario (a fresh database is created and dropped).
    #[arg(long, env = "REVMESH_TEST_POSTGRES", default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres: String,
    /// A NATS server with JetStream (`host:port`) for the `receipt` anchor [default: a private
    /// `nats-server -js` on a free port, its store in a temp dir].
    #[arg(long)]
    nats: Option<String>,
    /// For `receipt`: every second agent process runs this `revmesh-agent` binary instead (another
    /// build), and each half's CPU per process is printed. For `http-checks`: a second agent
    /// running this build answers the same requests, in turn with this build's. Two builds under the same load at the
    /// same moment: a comparison that host drift between runs cannot blur.
    #[arg(long, value_parser = executable_file)]
    agent_b: Option<std::path::PathBuf>,
    /// For `receipt`: after each fleet size's row, the same fleet served by this
    /// `revmesh-authority` binary (another build) and by this build's in turn (B, A, B), and the
    /// authority's CPU per link of each: two builds compared in one run.
    #[arg(long, value_parser = executable_file)]
    authority_b: Option<std::path::PathBuf>,
    /// For `receipt`: revocations in the log before the agent processes start, so each one
    /// first catches up on them, as an agent joining a live mesh does [default: none].
    #[arg(long, default_value_t = 0)]
    backlog: usize,
    /// Also write the report here as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// The authority's CPU per link per durable revocation, this build's (A) and `b`'s, in one run.
#[derive(Debug, serde::Serialize)]
struct AuthorityAb {
    /// The other binary.
    b_bin: String,
    /// A's runs, in order (the row's own first), microseconds.
    a_per_link_us: Vec<f64>,
    /// B's runs, in order.
    b_per_link_us: Vec<f64>,
    /// Durable receipt p99 of each run, A's then B's, microseconds.
    a_p99_us: Vec<f64>,
    b_p99_us: Vec<f64>,
}

/// After a receipt row (A, this build): the same fleet under `b`, under A and under `b` again.
async fn authority_ab(
    tmp: &std::path::Path,
    n: usize,
    a: &RunArgs,
    b: &std::path::Path,
    first: &[scenarios::ProcPropagation],
) -> anyhow::Result<AuthorityAb> {
    let durable = |levels: &[scenarios::ProcPropagation]| {
        levels
            .iter()
            .find(|r| r.wait != "applied")
            .map_or((f64::NAN, f64::NAN), |r| (r.authority_cpu_per_link_us, r.receipt.p99_us))
    };
    let (cpu, p99) = durable(first);
    let mut ab = AuthorityAb {
        b_bin: b.display().to_string(),
        a_per_link_us: vec![cpu],
        b_per_link_us: Vec::new(),
        a_p99_us: vec![p99],
        b_p99_us: Vec::new(),
    };
    for bin in [Some(b), None, Some(b)] {
        let levels =
            scenarios::propagation_procs(tmp, n, a.revocations, a.rate, a.agent_b.as_deref(), a.backlog, bin)
                .await?;
        let (cpu, p99) = durable(&levels);
        let (c, p) = if bin.is_some() {
            (&mut ab.b_per_link_us, &mut ab.b_p99_us)
        } else {
            (&mut ab.a_per_link_us, &mut ab.a_p99_us)
        };
        c.push(cpu);
        p.push(p99);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let list = |v: &[f64]| v.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(", ");
    println!(
        "       authority per link, durable, runs A B A B: A {} µs, B ({}) {} µs: B/A {:.2}x (p99 A {}, B {})",
        list(&ab.a_per_link_us),
        ab.b_bin,
        list(&ab.b_per_link_us),
        mean(&ab.b_per_link_us) / mean(&ab.a_per_link_us).max(0.001),
        ab.a_p99_us.iter().map(|v| us(*v)).collect::<Vec<_>>().join(", "),
        ab.b_p99_us.iter().map(|v| us(*v)).collect::<Vec<_>>().join(", ")
    );
    Ok(ab)
}

/// One line: propagation quiet versus under an attack, and the authority's RSS.
fn print_attacked(
    label: &str,
    quiet: &util::Summary,
    attacked: &util::Summary,
    rss_before: u64,
    rss_peak: u64,
) {
    println!(
        "  propagation p50/p99 quiet {} / {}, {label} {} / {} ({:.2}x p99); authority RSS {:.1} -> peak {:.1} MiB\n",
        us(quiet.p50_us),
        us(quiet.p99_us),
        us(attacked.p50_us),
        us(attacked.p99_us),
        attacked.p99_us / quiet.p99_us.max(1.0),
        rss_before as f64 / 1048576.0,
        rss_peak as f64 / 1048576.0
    );
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 64 } else { 0 });
        }
    };
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("revmesh-loadtest: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Cmd::Demo => demo::run().await.map(|()| true),
            Cmd::Run(a) => run(*a).await,
            Cmd::MemoryProbe { n } => {
                scenarios::memory_probe(n);
                Ok(true)
            }
            Cmd::NatsConsumer { addr, id } => {
                tokio::task::spawn_blocking(move || anchors::nats_consumer(&addr, id)).await?.map(|()| true)
            }
            Cmd::RedisSubscriber { addr, journal } => {
                tokio::task::spawn_blocking(move || anchors::redis_subscriber(&addr, journal.as_deref()))
                    .await?
                    .map(|()| true)
            }
            Cmd::EchoServer { socket } => {
                tokio::task::spawn_blocking(move || scenarios::echo_server(&socket)).await?.map(|()| true)
            }
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("revmesh-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--rate`: a number of revocations per second the scenarios can space requests by.
fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1e6 => Ok(r),
        _ => Err(format!("{s:?} is not a rate: give revocations per second, above 0 and at most 1000000")),
    }
}

fn executable_file(s: &str) -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(s) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(s.into()),
        Ok(_) => Err(format!("{s} is not an executable file")),
        Err(e) => Err(format!("{s}: {e}")),
    }
}

fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else {
        format!("{v:.1} µs")
    }
}

async fn run(a: RunArgs) -> anyhow::Result<bool> {
    let tmp = std::env::temp_dir().join(format!("revmesh-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = scenarios(&a, &tmp).await;
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

async fn scenarios(a: &RunArgs, tmp: &std::path::Path) -> anyhow::Result<bool> {
    let want = |s: &str| a.scenario.iter().any(|x| x == s);
    let mut report = serde_json::Map::new();
    let mut goals = goals::Goals::default();
    let mut ok = true;
    println!("revmesh-loadtest on {} cores\n", std::thread::available_parallelism().map_or(0, |n| n.get()));
    let mut redis = None;
    if want("compare") {
        // Redis pub/sub to as many subscribers as the propagation rows have agents: the floor of
        // each row (the private server takes 20,000 clients).
        let fanouts: Vec<usize> = a.agents.iter().copied().filter(|n| *n <= 10_000).collect();
        redis = scenarios::redis(tmp, &fanouts, a.requests, Duration::from_secs(a.throughput_secs)).await?;
        if redis.is_none() {
            println!("compare: redis-server not on PATH; skipped\n");
        }
    }
    if want("propagation") {
        println!(
            "propagation: admin call → every agent acked ({} revocations at {}/s)",
            a.revocations, a.rate
        );
        println!(
            "{:>8} {:>12} {:>12} {:>12} {:>11} {:>16} {:>16} {:>12} {:>14} {:>12}",
            "agents",
            "p50",
            "p99",
            "max",
            "incomplete",
            "authority/agent",
            "redis pub p99",
            "CPU/link",
            "redis CPU/sub",
            "fleet/agent"
        );
        let mut rows = Vec::new();
        for &n in &a.agents {
            let p = scenarios::propagation(tmp, n, a.revocations, a.rate).await?;
            let fanout = redis.as_ref().and_then(|r| r.pubsub_fanout.iter().find(|f| f.subscribers == n));
            println!(
                "{:>8} {:>12} {:>12} {:>12} {:>11} {:>13} KiB {:>16} {:>10.1}µs {:>14} {:>10.1}µs",
                n,
                us(p.revoke_to_all_acked.p50_us),
                us(p.revoke_to_all_acked.p99_us),
                us(p.revoke_to_all_acked.max_us),
                p.incomplete,
                p.authority_rss_per_agent_bytes / 1024,
                fanout.map_or("-".to_owned(), |f| us(f.receipt.p99_us)),
                p.authority_cpu_per_link_us,
                fanout.map_or("-".to_owned(), |f| format!("{:.1}µs", f.server_cpu_per_subscriber_us)),
                p.fleet_cpu_per_agent_us
            );
            goals.propagation(n, p.revoke_to_all_acked.p99_us, fanout.map(|f| &f.receipt));
            rows.push(p);
        }
        println!();
        report.insert("propagation".into(), json!(rows));
    }
    if want("receipt") {
        println!(
            "receipt: publish → every subscriber process has it ({} messages at {}/s); CPU per message",
            a.revocations, a.rate
        );
        println!("  revmesh durable: ?wait=all, each agent's journal fsynced before its ack");
        println!("  revmesh applied: ?wait=applied, each agent reports from memory before its fsync (held up to --applied-fsync-delay, shared)");
        println!("  jetstream: file stream, one durable consumer per process, ack confirmed by the server");
        println!("  redis pub/sub: received by every subscriber process (no acks, no durability)");
        println!("  redis + journal: the same, each subscriber first appending the message to an agent journal (the agent's own durable write)");
        let gap = Duration::from_secs_f64(1.0 / a.rate);
        // 40 samples, or fewer when the gap is long: at most ~5 s of sleeping.
        let samples = (5.0 / gap.as_secs_f64()).clamp(5.0, 40.0) as usize;
        let (hot, cold) = util::cold_cost(tmp, gap, samples).await?;
        println!(
            "  this host: a 64-byte pwrite takes {hot:.1}µs back to back, {cold:.1}µs once every {:.0} ms ({:.0}x: caches gone cold between messages)",
            gap.as_secs_f64() * 1e3,
            cold / hot.max(0.001)
        );
        report.insert(
            "cold_cost".into(),
            json!({"gap_ms": gap.as_secs_f64() * 1e3, "hot_us": hot, "cold_us": cold}),
        );
        // Every receipt waits for the authority's own commit before the first frame leaves.
        let commit = scenarios::commit_alone(tmp, a.revocations, a.rate).await?;
        println!(
            "  the authority alone (no agents): p50 {}, p99 {}, the commit each receipt includes",
            us(commit.p50_us),
            us(commit.p99_us)
        );
        report.insert("commit_alone".into(), json!(commit));
        println!(
            "{:>6} {:<16} {:>10} {:>10} {:>12} {:>14} {:>14} {:>12}",
            "procs", "system", "p50", "p99", "p99 ratio", "server", "per link", "per process"
        );
        let mut rows = Vec::new();
        for &n in &a.agent_procs {
            let levels = scenarios::propagation_procs(
                tmp,
                n,
                a.revocations,
                a.rate,
                a.agent_b.as_deref(),
                a.backlog,
                None,
            )
            .await?;
            let js = anchors::jetstream(tmp, a.nats.as_deref(), n, a.revocations, a.rate).await?;
            let rd = anchors::redis_pubsub(None, n, a.revocations, a.rate).await?;
            let journals = tmp.join(format!("redis-journals-{n}"));
            let rj = anchors::redis_pubsub(Some(&journals), n, a.revocations, a.rate).await?;
            let row = |system: &str, s: &util::Summary, server: f64, link: Option<f64>, per: f64| {
                let ratios: Vec<String> = levels
                    .iter()
                    .map(|r| format!("{:.2}x", r.receipt.p99_us / s.p99_us.max(0.001)))
                    .collect();
                println!(
                    "{:>6} {:<16} {:>10} {:>10} {:>12} {:>12.1}µs {:>14} {:>10.1}µs",
                    n,
                    system,
                    us(s.p50_us),
                    us(s.p99_us),
                    ratios.join("/"),
                    server,
                    link.map_or("-".into(), |l| format!("{l:.1}µs")),
                    per
                )
            };
            for r in &levels {
                let system = if r.wait == "applied" { "revmesh applied" } else { "revmesh durable" };
                row(
                    system,
                    &r.receipt,
                    r.authority_cpu_us,
                    Some(r.authority_cpu_per_link_us),
                    r.agent_cpu_us,
                );
                if r.incomplete > 0 {
                    println!("       ({} receipts incomplete)", r.incomplete);
                }
                if let Some(s) = &r.split {
                    println!(
                        "       per process: A (this build) {:.1}µs, B ({}) {:.1}µs: B/A {:.2}x",
                        s.a_cpu_us,
                        s.b_bin,
                        s.b_cpu_us,
                        s.b_cpu_us / s.a_cpu_us.max(0.001)
                    );
                }
            }
            row("jetstream", &js.receipt, js.server_cpu_us, None, js.subscriber_cpu_us);
            row("redis pub/sub", &rd.receipt, rd.server_cpu_us, None, rd.subscriber_cpu_us);
            row("redis + journal", &rj.receipt, rj.server_cpu_us, None, rj.subscriber_cpu_us);
            if let Some(d) = levels.iter().find(|r| r.wait != "applied") {
                goals.receipt(&goals::ReceiptRow {
                    procs: n,
                    durable: (&d.receipt, d.authority_cpu_per_link_us, d.agent_cpu_us),
                    applied: levels.iter().find(|r| r.wait == "applied").map(|r| &r.receipt),
                    commit: &commit,
                    jetstream: &js.receipt,
                    redis: &rd.receipt,
                    journal: (&rj.receipt, rj.server_cpu_us, rj.subscriber_cpu_us),
                });
                // The durable floor: the subscribers' durable write (redis + journal) after the
                // authority's commit.
                let (floor_p50, floor_p99) =
                    (rj.receipt.p50_us + commit.p50_us, rj.receipt.p99_us + commit.p99_us);
                println!(
                    "       durable floor, redis + journal + the commit alone: p50 {}, p99 {}; revmesh durable {:.2}x / {:.2}x",
                    us(floor_p50),
                    us(floor_p99),
                    d.receipt.p50_us / floor_p50.max(0.001),
                    d.receipt.p99_us / floor_p99.max(0.001)
                );
                println!(
                    "       durable, per process: agent {:.1}µs, redis + journal subscriber {:.1}µs: {:.2}x",
                    d.agent_cpu_us,
                    rj.subscriber_cpu_us,
                    d.agent_cpu_us / rj.subscriber_cpu_us.max(0.001)
                );
                // Per subscriber, redis-server reads the report and writes the message and the
                // report on: a link's write and ack read, plus one write.
                let redis_per_sub = rj.server_cpu_us / n.max(1) as f64;
                println!(
                    "       durable, server per link: authority {:.1}µs, redis-server per subscriber {:.1}µs: {:.2}x",
                    d.authority_cpu_per_link_us,
                    redis_per_sub,
                    d.authority_cpu_per_link_us / redis_per_sub.max(0.001)
                );
            }
            let ab = match &a.authority_b {
                Some(b) => Some(authority_ab(tmp, n, a, b, &levels).await?),
                None => None,
            };
            rows.push(json!({"revmesh": levels, "jetstream": js, "redis": rd, "redis_journal": rj, "authority_ab": ab}));
        }
        println!("  p99 ratio: revmesh durable's / applied's p99 divided by the row's (goals at the end)\n");
        report.insert("receipt".into(), json!(rows));
    }
    if want("ingest") {
        println!("ingest: durable revocations/s (HTTP clients, 100 agents acking everything; batch > 1: JSON arrays)");
        println!(
            "{:>8} {:>6} {:>8} {:>10} {:>10} {:>10} {:>14} {:>10} {:>12}",
            "clients", "batch", "agents", "rev/s", "p50", "p99", "fsyncs/rev", "lag end", "caught up"
        );
        let mut rows = Vec::new();
        for (clients, batch) in [(1, 1), (64, 1), (4, 1000)] {
            let dur = Duration::from_secs(a.throughput_secs.max(3));
            let r = scenarios::ingest(tmp, clients, batch, 100, dur).await?;
            println!(
                "{:>8} {:>6} {:>8} {:>10.0} {:>10} {:>10} {:>14.3} {:>10} {:>11.1}s",
                r.clients,
                r.batch,
                r.agents,
                r.per_sec,
                us(r.latency.p50_us),
                us(r.latency.p99_us),
                r.fsyncs_per_revocation,
                r.lag_at_end,
                r.caught_up_secs
            );
            rows.push(r);
        }
        println!();
        report.insert("ingest".into(), json!(rows));
    }
    if want("http-checks") {
        let rows = http_checks::http_checks(
            tmp,
            a.requests,
            Duration::from_secs(a.throughput_secs),
            a.agent_b.as_deref(),
        )
        .await?;
        println!("http-checks: GET /v1/check on a keep-alive connection, and 32 connections");
        println!("{:<8} {:>10} {:>10} {:>14} {:>12}", "build", "p50", "p99", "32-conn req/s", "agent CPU");
        for r in &rows {
            println!(
                "{:<8} {:>10} {:>10} {:>14.0} {:>10.1}µs",
                r.build,
                us(r.sequential.p50_us),
                us(r.sequential.p99_us),
                r.throughput_32,
                r.agent_cpu_us
            );
        }
        println!();
        report.insert("http_checks".into(), json!(rows));
    }
    if want("checks") {
        let rows = scenarios::checks(tmp, a.requests, Duration::from_secs(a.throughput_secs)).await?;
        println!("checks: one connection sequential, and 32 connections");
        println!(
            "{:<16} {:>10} {:>10} {:>14} {:>10} {:>12}",
            "request", "p50", "p99", "32-conn req/s", "vs floor", "server CPU"
        );
        let floor = rows.first().map_or(1.0, |r| r.throughput_32);
        let mut all: Vec<&scenarios::Checks> = rows.iter().collect();
        if let Some(r) = &redis {
            all.push(&r.get);
        }
        for r in &all {
            println!(
                "{:<16} {:>10} {:>10} {:>14.0} {:>9.2}x {:>12}",
                r.request,
                us(r.sequential.p50_us),
                us(r.sequential.p99_us),
                r.throughput_32,
                r.throughput_32 / floor,
                r.server_cpu_us.map_or("-".into(), |c| format!("{c:.1}µs"))
            );
        }
        let cpu = |name: &str| rows.iter().find(|r| r.request == name).and_then(|r| r.server_cpu_us);
        if let (Some(r), Some(status)) = (&redis, rows.iter().find(|r| r.request == "STATUS")) {
            let redis_cpu = r.get.server_cpu_us.unwrap_or(0.0).max(0.001);
            println!(
                "STATUS vs redis GET: p50 {:.2}x of redis, throughput {:.2}x of redis, server CPU per request {:.2}x of redis",
                status.sequential.p50_us / r.get.sequential.p50_us.max(0.001),
                status.throughput_32 / r.get.throughput_32.max(0.001),
                status.server_cpu_us.unwrap_or(0.0) / redis_cpu
            );
            if let Some(echo) = cpu("echo (floor)") {
                println!(
                    "server CPU per request, the echo floor: {:.2}x of redis's; STATUS {:.2}x of the floor's",
                    echo / redis_cpu,
                    status.server_cpu_us.unwrap_or(0.0) / echo.max(0.001)
                );
            }
        }
        if let (Some(status), Some(echo)) = (cpu("STATUS"), cpu("echo (floor)")) {
            goals.checks(status, echo);
        }
        println!();
        report.insert("checks".into(), json!(rows));
    }
    if want("grpc") {
        println!("grpc: the same CHECK through the line socket and through ext_authz gRPC (Unix socket), sequential");
        println!("{:<22} {:>10} {:>10} {:>16}", "door", "p50", "p99", "agent CPU/req");
        let rows = grpc::compare(tmp, a.requests).await?;
        for r in &rows {
            println!(
                "{:<22} {:>10} {:>10} {:>14.1}µs",
                r.door,
                us(r.latency.p50_us),
                us(r.latency.p99_us),
                r.agent_cpu_us
            );
        }
        if let [line, g] = rows.as_slice() {
            println!(
                "gRPC vs line: p50 {:.2}x, p99 {:.2}x, agent CPU {:.2}x",
                g.latency.p50_us / line.latency.p50_us.max(0.001),
                g.latency.p99_us / line.latency.p99_us.max(0.001),
                g.agent_cpu_us / line.agent_cpu_us.max(0.001)
            );
        }
        println!();
        report.insert("grpc".into(), json!(rows));
    }
    if want("jwks") {
        println!("jwks: CHECK with the JWKS provider idle, and while its fetches hang; a random-kid flood");
        let r = jwks::measure(tmp, a.requests, Duration::from_secs(a.throughput_secs.max(3))).await?;
        println!("{:<26} {:>10} {:>10}", "", "p50", "p99");
        println!("{:<26} {:>10} {:>10}", "CHECK, provider idle", us(r.idle.p50_us), us(r.idle.p99_us));
        println!(
            "{:<26} {:>10} {:>10}",
            "CHECK, fetches hanging",
            us(r.during_fetch.p50_us),
            us(r.during_fetch.p99_us)
        );
        println!(
            "ratio: p50 {:.2}x, p99 {:.2}x; flood: {} random-kid checks in {:.1}s caused {} fetches ({:.1}/min)",
            r.during_fetch.p50_us / r.idle.p50_us.max(0.001),
            r.during_fetch.p99_us / r.idle.p99_us.max(0.001),
            r.flood_checks,
            r.flood_secs,
            r.flood_fetches,
            r.flood_fetches as f64 * 60.0 / r.flood_secs.max(0.001)
        );
        println!();
        report.insert("jwks".into(), json!(r));
    }
    if let Some(r) = &redis {
        report.insert("redis".into(), json!(r));
    }
    if want("reconnect-storm") {
        println!("reconnect-storm: authority kill -9 and restart under N agents, each 5,000 entries behind");
        println!(
            "{:>8} {:>14} {:>16} {:>14} {:>16} {:>16}",
            "agents", "all caught up", "peak auth RSS", "all knew behind", "authority CPU", "fleet CPU"
        );
        let mut rows = Vec::new();
        for &n in &a.agents {
            let r = scenarios::reconnect_storm(tmp, n, 5_000).await?;
            println!(
                "{:>8} {:>12.2} s {:>12.1} MiB {:>14.2} s {:>14.2} s {:>14.2} s",
                r.agents,
                r.caught_up_secs,
                r.peak_rss_bytes as f64 / 1048576.0,
                r.all_knew_secs,
                r.authority_cpu_secs,
                r.fleet_cpu_secs
            );
            goals.storm(r.agents, r.authority_cpu_secs, r.peak_rss_bytes);
            rows.push(r);
        }
        println!();
        report.insert("reconnect_storm".into(), json!(rows));
    }
    if want("ha") {
        let (rows, failover) =
            scenarios::ha(tmp, &a.postgres, Duration::from_secs(a.throughput_secs.max(3))).await?;
        println!("ha: replicas on one PostgreSQL log, 64 HTTP clients spread over them");
        println!("{:>9} {:>10} {:>12}", "replicas", "rev/s", "fsyncs/rev");
        for r in &rows {
            println!("{:>9} {:>10.0} {:>12.3}", r.replicas, r.per_sec, r.fsyncs_per_revocation);
        }
        println!("failover: replica killed -> its 30 agents applied a new revocation via another replica in {failover:.2} s\n");
        report.insert("ha".into(), json!({"throughput": rows, "failover_secs": failover}));
    }
    if want("ssf") {
        let n = a.agents.first().copied().unwrap_or(50);
        let count = a.revocations.max(200);
        let r = scenarios::ssf(tmp, n, count, a.rate).await?;
        println!(
            "ssf: {} agents; a pushed SET (ES256, RFC 8935) vs the same subject revocation by the admin API, {} each, interleaved",
            r.agents, count
        );
        println!("{:>28} {:>12} {:>12} {:>12}", "→ every agent REVOKED", "p50", "p99", "max");
        for (name, s) in [("pushed SET", &r.set_to_all_revoked), ("admin API", &r.admin_to_all_revoked)] {
            println!("{:>28} {:>12} {:>12} {:>12}", name, us(s.p50_us), us(s.p99_us), us(s.max_us));
        }
        println!(
            "  ratio SET/admin: p50 {:.2}x, p99 {:.2}x (signing a SET here: {:.0}µs, not counted)\n",
            r.set_to_all_revoked.p50_us / r.admin_to_all_revoked.p50_us.max(1.0),
            r.set_to_all_revoked.p99_us / r.admin_to_all_revoked.p99_us.max(1.0),
            r.sign_us
        );
        report.insert("ssf".into(), json!(r));
    }
    if want("flood") {
        let f = hostile::flood(tmp, 100, a.revocations.min(100)).await?;
        println!(
            "flood: {} connection attempts and {:.0} MB of garbage while {} agents receive",
            f.connections,
            f.garbage_bytes as f64 / 1e6,
            f.agents
        );
        print_attacked("flooded", &f.quiet, &f.flooded, f.rss_before, f.rss_peak);
        report.insert("flood".into(), json!(f));
    }
    if want("restart") {
        println!("restart: N jti revocations; each figure next to its floor (same run)");
        println!(
            "{:>9} {:>10} {:>12} {:>16} {:>10} {:>16} {:>10} {:>11} {:>14} {:>18}",
            "entries",
            "state MB",
            "snapshot MB",
            "warm restart",
            "floor",
            "authority ready",
            "floor",
            "snapshot",
            "storm",
            "authority RSS"
        );
        let mut rows = Vec::new();
        for &n in &a.entries {
            let r = restart::restart(tmp, n, a.storm_agents).await?;
            println!(
                "{:>9} {:>10.1} {:>12.1} {:>14.3} s {:>8.3} s {:>14.3} s {:>8.3} s {:>9.3} s {:>5} in {:>5.2} s {:>7.0} -> {:>5.0} MiB",
                r.entries,
                r.state_bytes as f64 / 1e6,
                r.snapshot_bytes as f64 / 1e6,
                r.warm_restart_s,
                r.warm_floor_s,
                r.authority_restart_s,
                r.authority_floor_s,
                r.snapshot_install_s,
                r.storm_agents,
                r.storm_s,
                r.storm_rss_before as f64 / 1048576.0,
                r.storm_rss_peak as f64 / 1048576.0
            );
            rows.push(r);
        }
        println!();
        report.insert("restart".into(), json!(rows));
    }
    if want("slow-clients") {
        let f = hostile::slow_clients(tmp, 100, a.revocations.min(100)).await?;
        println!(
            "slow clients: slowhttptest slowloris + slow body + slow read, 1,100 connections each, on the admin API; {} connections shed",
            f.shed
        );
        print_attacked("attacked", &f.quiet, &f.attacked, f.rss_before, f.rss_peak);
        report.insert("slow-clients".into(), json!(f));
    }
    if want("tls") {
        let t = hostile::tls(tmp, 100, a.revocations.min(100)).await?;
        println!(
            "tls: propagation to {} agents p50/p99 plaintext {} / {}, TLS {} / {} ({:.2}x p99)\n",
            t.agents,
            us(t.plaintext.p50_us),
            us(t.plaintext.p99_us),
            us(t.tls.p50_us),
            us(t.tls.p99_us),
            t.tls.p99_us / t.plaintext.p99_us.max(1.0)
        );
        report.insert("tls".into(), json!(t));
    }
    if want("memory") {
        println!("agent memory per revoked jti (RevocationSet)");
        let mut rows = Vec::new();
        for (n, rss, table) in scenarios::set_memory(&[100_000, 1_000_000])? {
            println!(
                "{:>9} jtis: RSS growth {:>6.1} MiB ({:.1} B/jti), table {:.1} B/jti",
                n,
                rss as f64 / 1048576.0,
                rss as f64 / n as f64,
                table as f64 / n as f64
            );
            rows.push(json!({"jtis": n, "rss_growth_bytes": rss, "table_bytes": table}));
        }
        println!();
        report.insert("memory".into(), json!(rows));
    }
    if want("chaos") {
        let c = chaos::run(tmp, a.chaos_agents, a.chaos_secs, a.seed).await?;
        println!(
            "chaos ({}s, {} agents, seed {}): accepted {} refused {} authority restarts {} link cuts {} probes {}",
            c.seconds, c.agents, a.seed, c.accepted, c.refused, c.authority_restarts, c.link_cuts, c.probes
        );
        println!(
            "  lost {}  duplicates {}  false OK {}  converged in {:.1}s  => {}",
            c.lost,
            c.duplicates,
            c.false_ok,
            c.converge_secs,
            if c.passed() { "PASS" } else { "FAIL" }
        );
        ok &= c.passed();
        report.insert("chaos".into(), json!(c));
    }
    if want("soak") {
        let (dir, out, secs, agents, seed) =
            (tmp.to_owned(), a.soak_out.clone(), a.soak_secs, a.soak_agents, a.seed);
        let r = tokio::task::spawn_blocking(move || soak::run(&dir, &out, secs, agents, seed)).await??;
        println!(
            "soak (seed {}, {} s, {} agents, {} replicas): accepted {} (and {} logouts) refused {} probes {} faults {}; converged {:.1} s after the heal",
            r.seed, r.seconds, r.agents, r.replicas, r.accepted, r.logouts, r.refused, r.probes, r.faults.len(), r.converge_secs
        );
        println!(
            "  receipt p50 {} p99 {} max {}",
            us(r.receipt.p50_us),
            us(r.receipt.p99_us),
            us(r.receipt.max_us)
        );
        println!(
            "  {:<10} {:>10} {:>16} {:>8} {:>14}",
            "process", "RSS max", "RSS slope", "fds max", "fds slope"
        );
        for p in &r.resources {
            println!(
                "  {:<10} {:>6.1} MiB {:>9.0} KiB/min {:>8} {:>10.1}/min",
                p.name, p.rss_max_mib, p.rss_slope_kib_per_min, p.fds_max, p.fds_slope_per_min
            );
        }
        if let Some(l) = &r.long_freeze {
            println!(
                "  long freeze ({}, {:.0}-{:.0} s, {} revocations meanwhile): replica RSS max before {:?} MiB, during {:?} MiB",
                l.agent, l.from_s, l.to_s, l.accepted_meanwhile, l.replica_rss_before_mib, l.replica_rss_during_mib
            );
        }
        for v in &r.violations {
            println!("  VIOLATION at {:.1} s: {} (faults then: {})", v.at_s, v.what, v.faults.join(", "));
        }
        println!("  picture: {}  => {}\n", r.svg, if r.passed() { "PASS" } else { "FAIL" });
        ok &= r.passed();
        report.insert("soak".into(), json!(r));
    }
    let judged = goals.print();
    if !judged.is_empty() {
        report.insert("goals".into(), json!(judged));
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&serde_json::Value::Object(report))?)?;
        println!("report written to {}", path.display());
    }
    Ok(ok)
}
