//! The set's memory at 10^5 and 10^6 entries, measured in a process of its own.

use revmesh_protocol::{RevocationSet, TokenRef};

/// Agent memory per revoked jti: a fresh child process builds a set of `n` jtis and reports
/// its RSS growth (a fresh process, so earlier scenarios' freed heap cannot hide the growth).
pub fn set_memory(counts: &[u64]) -> anyhow::Result<Vec<(u64, u64, u64)>> {
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for &n in counts {
        let out = std::process::Command::new(&exe).args(["memory-probe", &n.to_string()]).output()?;
        anyhow::ensure!(
            out.status.success(),
            "memory probe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut nums = text.split_whitespace().filter_map(|w| w.parse::<u64>().ok());
        let (rss, table) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
        rows.push((n, rss, table));
    }
    Ok(rows)
}

/// The child side of [`set_memory`]: prints `rss_growth_bytes table_bytes`.
pub fn memory_probe(n: u64) {
    let me = std::process::id();
    let before = crate::procs::rss_of(me).unwrap_or(0);
    let mut set = RevocationSet::new();
    for seq in 1..=n {
        let e = revmesh_protocol::Entry {
            seq,
            created_at_ms: 0,
            expires_at: u64::from(u32::MAX),
            reason: None,
            revocation: revmesh_protocol::Revocation::Jti {
                jti: format!("3f9a1c2e-7d4b-4e8a-{seq:016}"),
                iss: None,
            },
        };
        set.insert(&e, 0);
    }
    let after = crate::procs::rss_of(me).unwrap_or(0);
    let probe = TokenRef { jti: Some("3f9a1c2e-7d4b-4e8a-0000000000000001"), ..Default::default() };
    let found = set.check(&probe).is_some();
    println!("{} {} {found}", after.saturating_sub(before), set.jti_memory_bytes());
}
