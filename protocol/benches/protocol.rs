//! Criterion benchmarks: codec speed for a 100-entry batch, set checks at 10^6 entries, an
//! agent's 5,000-entry catch-up, and the memory the set spends per revoked `jti` (printed, since
//! criterion measures time only).
//!
//! Run: `cargo bench -p revmesh-protocol`.
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use revmesh_protocol::agent::ReceivedEntries;
use revmesh_protocol::codec::{decode, decode_view, encode, Decoded};
use revmesh_protocol::frame::{Batch, Frame};
use revmesh_protocol::{Entry, LogId, Revocation, RevocationSet, TokenRef};
use std::collections::HashSet;

fn batch(n: u64) -> Frame {
    Frame::Batch(Batch {
        log_id: LogId([7; 16]),
        from_seq: 1,
        to_seq: n,
        entries: (1..=n)
            .map(|seq| Entry {
                seq,
                created_at_ms: 1_700_000_000_000 + seq,
                expires_at: 1_800_000_000,
                reason: None,
                revocation: Revocation::Jti {
                    jti: format!("3f9a1c2e-7d4b-4e8a-9c1f-{seq:012}"),
                    iss: Some("https://issuer.example".into()),
                },
            })
            .collect(),
    })
}

fn codec(c: &mut Criterion) {
    let f = batch(100);
    let bytes = encode(&f).unwrap();
    let mut g = c.benchmark_group("codec_batch_100");
    g.throughput(Throughput::Elements(100));
    g.bench_function("encode", |b| b.iter(|| encode(black_box(&f)).unwrap()));
    g.bench_function("decode", |b| b.iter(|| decode(black_box(&bytes)).unwrap()));
    // The baseline of the same run: copying the bytes, the least any decoder must do.
    g.bench_function("memcpy_baseline", |b| b.iter(|| black_box(&bytes).to_vec()));
    g.finish();
    eprintln!("batch of 100 entries: {} bytes encoded", bytes.len());
}

const N: u64 = 1_000_000;

fn jti(i: u64) -> String {
    format!("3f9a1c2e-7d4b-4e8a-9c1f-{i:012}")
}

fn set(c: &mut Criterion) {
    let mut set = RevocationSet::new();
    for seq in 1..=N {
        let e = Entry {
            seq,
            created_at_ms: 0,
            expires_at: 1_800_000_000,
            reason: None,
            revocation: Revocation::Jti { jti: jti(seq), iss: None },
        };
        set.insert(&e, 0);
    }
    let per_entry = set.jti_memory_bytes() as f64 / N as f64;
    eprintln!(
        "RevocationSet: {N} jti entries, {} bytes of table, {per_entry:.1} bytes/entry",
        set.jti_memory_bytes()
    );
    // Baseline of the same run: a std HashSet of the jti strings themselves.
    let strings: HashSet<String> = (1..=N).map(jti).collect();
    let string_bytes: usize = strings.capacity() * (std::mem::size_of::<String>() + 1)
        + strings.iter().map(|s| s.capacity()).sum::<usize>();
    eprintln!(
        "baseline HashSet<String>: {:.1} bytes/entry (revmesh uses {:.2}x of it)",
        string_bytes as f64 / N as f64,
        per_entry / (string_bytes as f64 / N as f64)
    );

    let hit = jti(N / 2);
    let miss = "not-revoked-0000-0000-000000000000".to_string();
    let mut g = c.benchmark_group("set_check_1e6");
    g.bench_function("jti_hit", |b| {
        b.iter(|| set.check(black_box(&TokenRef { jti: Some(&hit), iss: Some("iss"), ..Default::default() })))
    });
    g.bench_function("jti_miss_all_claims", |b| {
        let t = TokenRef {
            jti: Some(&miss),
            iss: Some("https://issuer.example"),
            sub: Some("user-1"),
            iat: Some(1),
            kid: Some("k1"),
            sid: Some("s1"),
        };
        b.iter(|| set.check(black_box(&t)))
    });
    g.bench_function("hashset_string_baseline", |b| b.iter(|| strings.contains(black_box(&hit))));
    g.finish();
}

/// Building a table of 10^6 digests in four orders (random is the baseline of the same run),
/// and the two halves of an agent's warm restart: decoding its state and restoring the set.
fn build(c: &mut Criterion) {
    use revmesh_protocol::codec::{decode_state, encode_state, PersistedState};
    use revmesh_protocol::set::{JtiDigest, JtiTable};
    let random: Vec<JtiDigest> = (1..=N).map(|i| JtiDigest::new(None, &jti(i))).collect();
    let mut sorted = random.clone();
    sorted.sort_by_key(|d| d.hi);
    let reversed: Vec<JtiDigest> = sorted.iter().rev().copied().collect();
    let mut full = RevocationSet::new();
    for i in 0..random.len() {
        full.insert(
            &Entry {
                seq: i as u64 + 1,
                created_at_ms: 0,
                expires_at: 1_800_000_000,
                reason: None,
                revocation: Revocation::Jti { jti: jti(i as u64 + 1), iss: None },
            },
            0,
        );
    }
    let snapshot = full.snapshot();
    let state = PersistedState { log_id: Some(LogId([1; 16])), applied_seq: N, set: snapshot.clone() };
    let state_bytes = encode_state(&state).unwrap();
    // The order a snapshot lists its slots in.
    let table_order: Vec<JtiDigest> = {
        let mut t = JtiTable::default();
        for (i, d) in random.iter().enumerate() {
            t.insert(*d, i as u64 + 1, 1_800_000_000);
        }
        t.iter().map(|s| JtiDigest { hi: s.hi, lo: s.lo }).collect()
    };
    let mut g = c.benchmark_group("set_build_1e6");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N));
    for (name, order) in
        [("random", &random), ("table_order", &table_order), ("sorted", &sorted), ("reversed", &reversed)]
    {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut t = JtiTable::default();
                for (i, d) in order.iter().enumerate() {
                    t.insert(*d, i as u64 + 1, 1_800_000_000);
                }
                t
            })
        });
    }
    g.bench_function("restore_table_order", |b| {
        b.iter(|| RevocationSet::restore(black_box(snapshot.clone())))
    });
    g.bench_function("decode_state", |b| b.iter(|| decode_state(black_box(&state_bytes)).unwrap()));
    // The state file as the agent writes it now: the table as laid out, adopted after a check.
    let (rest, table) = full.image();
    let image_state = PersistedState { log_id: Some(LogId([1; 16])), applied_seq: N, set: rest };
    let image_bytes = revmesh_protocol::codec::encode_state_image(&image_state, &table).unwrap();
    g.bench_function("decode_and_adopt_table_image", |b| {
        b.iter(|| {
            let (mut st, t) = revmesh_protocol::codec::decode_state_image(black_box(&image_bytes)).unwrap();
            RevocationSet::from_image(std::mem::take(&mut st.set), t).unwrap()
        })
    });
    g.bench_function("checksum_state_floor", |b| {
        b.iter(|| xxhash_rust::xxh3::xxh3_64(black_box(&state_bytes)))
    });
    g.finish();
    eprintln!("agent state at 10^6 jtis: {} bytes", state_bytes.len());
}

/// An agent catching up 5,000 entries (the reconnect storm's backlog) in 256-entry batches:
/// decoding each frame and inserting its entries, into a set that grows as they arrive and into
/// one sized beforehand from the welcome's head, in the same run.
fn catch_up(c: &mut Criterion) {
    let frames: Vec<Vec<u8>> = (0..5_000u64)
        .collect::<Vec<_>>()
        .chunks(256)
        .map(|c| {
            encode(&Frame::Batch(Batch {
                log_id: LogId([7; 16]),
                from_seq: c[0] + 1,
                to_seq: c[c.len() - 1] + 1,
                entries: c
                    .iter()
                    .map(|i| Entry {
                        seq: i + 1,
                        created_at_ms: 1_700_000_000_000,
                        expires_at: 1_800_000_000,
                        reason: None,
                        revocation: Revocation::Jti { jti: format!("storm-{i}"), iss: None },
                    })
                    .collect(),
            }))
            .unwrap()
        })
        .collect();
    let run = |set: &mut RevocationSet| {
        for f in &frames {
            if let Frame::Batch(b) = decode(black_box(f)).unwrap() {
                for e in &b.entries {
                    set.insert(e, 1_700_000_000);
                }
            }
        }
    };
    let mut g = c.benchmark_group("catch_up_5000");
    g.throughput(Throughput::Elements(5_000));
    g.bench_function("decode_only_baseline", |b| {
        b.iter(|| {
            let entries = |f: Frame| if let Frame::Batch(b) = f { b.entries.len() } else { 0 };
            frames.iter().map(|f| entries(decode(black_box(f)).unwrap())).sum::<usize>()
        })
    });
    g.bench_function("growing_set", |b| {
        b.iter(|| {
            let mut set = RevocationSet::new();
            run(&mut set);
            set
        })
    });
    g.bench_function("reserved_set", |b| {
        b.iter(|| {
            let mut set = RevocationSet::new();
            set.reserve_jti(5_000);
            run(&mut set);
            set
        })
    });
    // The agent's path: each frame decoded borrowed and checked on receipt, its new entries'
    // texts kept in one string per batch, lent out again when applied, inserted from there.
    g.bench_function("borrowed_decode_only", |b| {
        b.iter(|| {
            let entries =
                |d: Decoded<'_>| if let Decoded::Batch { batch, .. } = d { batch.entries.len() } else { 0 };
            frames.iter().map(|f| entries(decode_view(black_box(f)).unwrap())).sum::<usize>()
        })
    });
    g.bench_function("borrowed_reserved_set", |b| {
        b.iter(|| {
            let mut set = RevocationSet::new();
            set.reserve_jti(5_000);
            for f in &frames {
                if let Decoded::Batch { batch, .. } = decode_view(black_box(f)).unwrap() {
                    let received = ReceivedEntries::new(&batch, 0).unwrap();
                    for e in received.view().unwrap() {
                        set.insert_view(e, 1_700_000_000);
                    }
                }
            }
            set
        })
    });
    g.finish();
}

criterion_group!(benches, codec, set, build, catch_up);
criterion_main!(benches);
