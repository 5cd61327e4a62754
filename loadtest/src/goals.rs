//! The receipt and fan-out goals (docs/benchmarks.md, "Goals"), judged from the figures of this
//! run: each one a ratio to a floor measured in the same run, or a bound. Scenarios hand their
//! results over as they finish; the table is printed at the end and written to the JSON report.
//! A goal not met is reported, not a failure: these are benchmarks, and the hosts drift.

use crate::util::Summary;
use serde::Serialize;

/// One goal at one size, as measured.
#[derive(Debug, Clone, Serialize)]
pub struct Judged {
    /// `G1` … `G7`.
    pub goal: &'static str,
    /// What is compared, at which size.
    pub what: String,
    /// The measured ratio, or the measured value for a bound.
    pub measured: f64,
    /// The most it may be.
    pub bound: f64,
    /// `x` for a ratio, else the unit of both.
    pub unit: &'static str,
    /// `measured <= bound`.
    pub met: bool,
}

/// The goals judged so far.
#[derive(Debug, Default)]
pub struct Goals {
    judged: Vec<Judged>,
}

/// One receipt row's figures (`--scenario receipt`), all from the same run.
pub struct ReceiptRow<'a> {
    /// Agent processes.
    pub procs: usize,
    /// revmesh, `?wait=all`: receipt, authority CPU per link, agent CPU per process.
    pub durable: (&'a Summary, f64, f64),
    /// revmesh, `?wait=applied`: its receipt.
    pub applied: Option<&'a Summary>,
    /// The authority alone, no agents: the commit every receipt includes.
    pub commit: &'a Summary,
    /// JetStream's receipt.
    pub jetstream: &'a Summary,
    /// Redis pub/sub's receipt.
    pub redis: &'a Summary,
    /// Redis + journal: receipt, redis-server CPU per message, subscriber CPU per message.
    pub journal: (&'a Summary, f64, f64),
}

impl Goals {
    fn judge(&mut self, goal: &'static str, what: String, measured: f64, bound: f64, unit: &'static str) {
        // A figure that could not be measured (NaN, a zero floor) is not a goal met.
        let met = measured.is_finite() && measured <= bound;
        self.judged.push(Judged { goal, what, measured, bound, unit, met });
    }

    fn ratio(&mut self, goal: &'static str, what: String, ours: f64, floor: f64, bound: f64) {
        let r = if floor > 0.0 { ours / floor } else { f64::NAN };
        self.judge(goal, what, r, bound, "x");
    }

    /// G1–G4 from one receipt row.
    pub fn receipt(&mut self, r: &ReceiptRow<'_>) {
        let n = r.procs;
        let (durable, auth_per_link, agent_cpu) = r.durable;
        let (journal, journal_server, journal_sub) = r.journal;
        // The durable floor: each subscriber's own fsync'd write, after the authority's commit.
        let floor = journal.p99_us + r.commit.p99_us;
        self.ratio(
            "G1",
            format!("durable receipt p99 / durable floor, {n} procs"),
            durable.p99_us,
            floor,
            1.1,
        );
        self.ratio(
            "G1",
            format!("durable receipt p99 / JetStream's, {n} procs"),
            durable.p99_us,
            r.jetstream.p99_us,
            1.0,
        );
        if let Some(applied) = r.applied {
            self.ratio(
                "G2",
                format!("applied receipt p99 / Redis pub/sub's, {n} procs"),
                applied.p99_us,
                r.redis.p99_us,
                1.5,
            );
        }
        self.ratio(
            "G3",
            format!("authority CPU per link / redis-server's per subscriber (+ journal), {n} procs"),
            auth_per_link,
            journal_server / n.max(1) as f64,
            1.0,
        );
        self.ratio(
            "G4",
            format!("agent CPU per durable revocation / the floor subscriber's, {n} procs"),
            agent_cpu,
            journal_sub,
            1.2,
        );
    }

    /// G5 from a propagation row of 10,000 agents or more and Redis's one-way fan-out to as
    /// many subscribers, same run. (G3 is judged on receipt rows only: a link is a round trip,
    /// and redis-server's CPU per subscriber of a one-way fan-out is no floor for it.)
    pub fn propagation(&mut self, agents: usize, p99_us: f64, redis: Option<&Summary>) {
        let Some(redis) = redis else { return };
        if agents >= 10_000 {
            self.ratio(
                "G5",
                format!("propagation p99 / Redis one-way p99, {agents} agents"),
                p99_us,
                redis.p99_us,
                1.5,
            );
        }
    }

    /// G6 from a reconnect storm of 10,000 agents or more.
    pub fn storm(&mut self, agents: usize, authority_cpu_secs: f64, peak_rss_bytes: u64) {
        if agents < 10_000 {
            return;
        }
        self.judge("G6", format!("reconnect storm of {agents}: authority CPU"), authority_cpu_secs, 2.0, "s");
        let mib = peak_rss_bytes as f64 / 1_048_576.0;
        self.judge("G6", format!("reconnect storm of {agents}: authority peak RSS"), mib, 200.0, "MiB");
    }

    /// G7 from the checks scenario: the agent's CPU per `STATUS` against the bare echo server's.
    pub fn checks(&mut self, status_cpu_us: f64, echo_cpu_us: f64) {
        self.ratio(
            "G7",
            "agent CPU per STATUS / the epoll echo floor's".into(),
            status_cpu_us,
            echo_cpu_us,
            1.15,
        );
    }

    /// Prints the table (nothing when no scenario judged a goal) and returns the rows.
    pub fn print(&self) -> &[Judged] {
        if self.judged.is_empty() {
            return &self.judged;
        }
        println!("goals, judged on this run's figures (docs/benchmarks.md):");
        for j in &self.judged {
            let fmt = |v: f64| match j.unit {
                "x" => format!("{v:.2}x"),
                u => format!("{v:.2} {u}"),
            };
            println!(
                "  {:<3} {:<82} {:>10}  ≤ {:<9} {}",
                j.goal,
                j.what,
                fmt(j.measured),
                fmt(j.bound),
                if j.met { "met" } else { "NOT met" }
            );
        }
        println!();
        &self.judged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(p99_us: f64) -> Summary {
        Summary { n: 100, p50_us: p99_us / 2.0, p99_us, max_us: p99_us }
    }

    #[test]
    fn a_receipt_row_is_judged_against_its_floors_in_the_same_run() {
        let mut g = Goals::default();
        let (durable, applied, commit, js, redis, journal) =
            (s(10.0), s(6.0), s(2.0), s(12.0), s(4.0), s(8.0));
        g.receipt(&ReceiptRow {
            procs: 50,
            durable: (&durable, 30.0, 60.0),
            applied: Some(&applied),
            commit: &commit,
            jetstream: &js,
            redis: &redis,
            journal: (&journal, 50.0 * 25.0, 40.0),
        });
        let got: Vec<(&str, f64, bool)> = g.judged.iter().map(|j| (j.goal, j.measured, j.met)).collect();
        assert_eq!(
            got,
            [
                ("G1", 1.0, true), // 10 / (8 + 2)
                ("G1", 10.0 / 12.0, true),
                ("G2", 1.5, true),  // 6 / 4: the bound itself is met
                ("G3", 1.2, false), // 30 / (1250 / 50)
                ("G4", 1.5, false), // 60 / 40
            ]
        );
    }

    #[test]
    fn sizes_below_a_goal_and_unmeasured_floors_are_not_counted_as_met() {
        let mut g = Goals::default();
        g.propagation(5_000, 1.0, Some(&s(1.0)));
        g.storm(1_000, 0.1, 1);
        assert!(g.judged.is_empty(), "{:?}", g.judged);
        g.propagation(10_000, 300.0, Some(&s(200.0)));
        g.storm(10_000, 2.5, 150 << 20);
        g.checks(20.0, 0.0);
        let got: Vec<(&str, bool)> = g.judged.iter().map(|j| (j.goal, j.met)).collect();
        assert_eq!(got, [("G5", true), ("G6", false), ("G6", true), ("G7", false)]);
        assert!(g.judged[3].measured.is_nan(), "no echo floor figure: no ratio");
    }
}
