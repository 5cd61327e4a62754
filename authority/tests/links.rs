//! Agent links: catch-up from a cursor, snapshots past compaction, resync on another log,
//! and hostile frames that must only hurt the link that sent them.

use crate::util::{wait_for, Agent, Authority};
use futures::{SinkExt, StreamExt};
use revmesh_agent::link::LinkSettings;
use revmesh_protocol::codec::{decode, encode};
use revmesh_protocol::frame::{Frame, Heartbeat, Hello};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_agent_catches_up_from_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::start(dir.path(), &[]);
    let first = a.revoke_jti("before");
    let agent = Agent::start(vec![a.ws_url()], "catcher");
    agent.wait_applied(first).await;
    let state = agent.stop().await;
    let (set, log_id, applied) = {
        let p = state.persisted();
        (revmesh_protocol::RevocationSet::restore(p.set), p.log_id, p.applied_seq)
    };
    let mut last = 0;
    for i in 0..1000 {
        last = a.revoke_jti(&format!("while-away-{i}"));
    }
    let snapshots_before = a.metric("revmesh_authority_snapshots_sent_total");
    let agent = Agent::start_from(vec![a.ws_url()], "catcher", set, log_id, applied);
    agent.wait_applied(last).await;
    for i in (0..1000).step_by(97) {
        assert!(agent.revoked(&format!("while-away-{i}")), "entry {i} missing");
    }
    assert!(agent.revoked("before"));
    assert_eq!(
        a.metric("revmesh_authority_snapshots_sent_total"),
        snapshots_before,
        "resume must be incremental"
    );
    // The welcome said 1,000 entries were coming: the table was sized for 1,001 digests once
    // (1,178 slots) instead of growing by halves to 1,369 slots as they arrived.
    let slot = std::mem::size_of::<revmesh_protocol::set::JtiSlot>();
    let bytes = agent.state.jti_table_bytes();
    assert_eq!(bytes, (1001 * 20 / 17 + 1) * slot, "{} slots", bytes / slot);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_behind_the_compacted_log_gets_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::start(dir.path(), &["--retain-entries", "0", "--compact-interval", "100ms"]);
    let s1 = a.revoke_jti("old");
    let agent = Agent::start(vec![a.ws_url()], "behind");
    agent.wait_applied(s1).await;
    let state = agent.stop().await;
    let p = state.persisted();
    let mut last = 0;
    for i in 0..50 {
        last = a.revoke_jti(&format!("new-{i}"));
    }
    // Compaction raises the floor to the head (retain 0).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while a.get("/v1/status").1["floor"].as_u64().unwrap() < last {
        assert!(std::time::Instant::now() < deadline, "compaction never ran");
        tokio::task::yield_now().await;
    }
    let agent = Agent::start_from(
        vec![a.ws_url()],
        "behind",
        revmesh_protocol::RevocationSet::restore(p.set),
        p.log_id,
        p.applied_seq,
    );
    agent.wait_applied(last).await;
    assert!(agent.revoked("old") && agent.revoked("new-49"));
    assert!(a.metric("revmesh_authority_snapshots_sent_total") >= 1.0);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_from_another_log_adopts_it_and_keeps_what_it_enforces() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let a1 = Authority::start(d1.path(), &[]);
    let a2 = Authority::start(d2.path(), &[]);
    let s = a1.revoke_jti("only-in-log-1");
    let agent = Agent::start(vec![a1.ws_url()], "mover");
    agent.wait_applied(s).await;
    let p = agent.stop().await.persisted();
    let s2 = a2.revoke_jti("only-in-log-2");
    let agent = Agent::start_from(
        vec![a2.ws_url()],
        "mover",
        revmesh_protocol::RevocationSet::restore(p.set),
        p.log_id,
        p.applied_seq,
    );
    let log2 = a2.get("/v1/status").1["log_id"].as_str().unwrap().to_owned();
    wait_for(|| agent.state.log_id().map(|l| l.to_string()) == Some(log2.clone()), "resync to log 2").await;
    agent.wait_applied(s2).await;
    assert!(agent.revoked("only-in-log-2"));
    // Nothing enforced is dropped by a resync: the old log's entry is carried forward, and the
    // authority counts the agent as holding what its log never had.
    assert!(agent.revoked("only-in-log-1"), "entries of the old log are carried forward");
    assert_eq!(a2.metric("revmesh_authority_agents_ahead_of_log"), 1.0);
    agent.stop().await;
}

async fn raw_link(
    url: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    tokio_tungstenite::connect_async(format!("{url}/v1/agents")).await.unwrap().0
}

fn hello(id: &str) -> Vec<u8> {
    encode(&Frame::Hello(Hello {
        max_version: 1,
        agent_id: id.into(),
        agent_version: "test".into(),
        log_id: None,
        applied_seq: 0,
    }))
    .unwrap()
}

/// Reads until the authority closes; returns the close reason text.
async fn close_reason(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> String {
    let mut reason = String::new();
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Close(Some(c)) = m {
            reason = c.reason.to_string();
        }
    }
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_close_only_their_own_link_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::start(dir.path(), &[]);
    let good = Agent::start(vec![a.ws_url()], "good");
    let s = a.revoke_jti("first");
    good.wait_applied(s).await;

    let mut valid_hello = hello("x");
    valid_hello[0] = 9; // another protocol version
    let mut truncated = hello("y");
    truncated.truncate(truncated.len() - 3);
    let cases: Vec<(&str, Message, &str)> = vec![
        ("garbage", Message::Binary(vec![1, 200, 3, 4].into()), "malformed"),
        ("wrong version", Message::Binary(valid_hello.into()), "version"),
        ("truncated", Message::Binary(truncated.into()), "malformed"),
        ("text", Message::Text("hello".into()), "binary"),
        ("oversized", Message::Binary(vec![1u8; 200 << 10].into()), ""),
    ];
    for (name, msg, reason) in cases {
        let mut ws = raw_link(&a.ws_url()).await;
        let _ = ws.send(msg).await;
        let got = close_reason(&mut ws).await;
        assert!(got.to_lowercase().contains(reason), "{name}: close reason {got:?}");
    }
    // A hostile frame after a valid hello: the session closes with a reason too.
    let mut ws = raw_link(&a.ws_url()).await;
    ws.send(Message::Binary(hello("evil").into())).await.unwrap();
    ws.send(Message::Binary(hello("evil").into())).await.unwrap();
    let got = close_reason(&mut ws).await;
    assert!(got.contains("unexpected hello"), "{got:?}");

    assert!(a.metric("revmesh_authority_frames_rejected_total") >= 1.0);
    let metrics = a.metrics();
    for reason in ["malformed", "version", "not_binary", "too_large", "violation"] {
        assert!(metrics.contains(&format!("reason=\"{reason}\"")), "no {reason} count in\n{metrics}");
    }
    // The well-behaved agent carried on.
    let s = a.revoke_jti("after-the-attack");
    good.wait_applied(s).await;
    assert!(good.revoked("after-the-attack"));
    good.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_need_one_of_the_configured_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("agent.tokens");
    // Two tokens at once: the old one and the new one during a rotation.
    std::fs::write(&tokens, "# rotation in progress\ntoken-old-0123456789\ntoken-new-0123456789\n").unwrap();
    let a = Authority::start(dir.path(), &["--agent-token-file", tokens.to_str().unwrap()]);
    let s = a.revoke_jti("needs-auth");

    let mut settings = revmesh_agent::link::LinkSettings::new(vec![a.ws_url()], "with-token".into());
    settings.token = Some("token-new-0123456789".into());
    let agent = Agent::start_with(settings);
    let state = agent.state.clone();
    wait_for(|| state.applied() >= s, "the agent with a valid token to catch up").await;

    for bad in [None, Some("token-wrong-0123456789")] {
        let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            format!("{}/v1/agents", a.ws_url()),
        )
        .unwrap();
        if let Some(t) = bad {
            req.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let err = tokio_tungstenite::connect_async(req).await.expect_err("must be refused");
        assert!(err.to_string().contains("401"), "{err}");
    }
    assert!(
        a.metrics().contains("revmesh_authority_agents_rejected_total{reason=\"unauthorized\"} 2"),
        "{}",
        a.metrics()
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_agent_tokens_without_dropping_links() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("agent.tokens");
    std::fs::write(&tokens, "token-first-0123456789\n").unwrap();
    let a = Authority::start(dir.path(), &["--agent-token-file", tokens.to_str().unwrap()]);
    let url = a.ws_url();
    let connect = |t: &'static str| {
        let url = url.clone();
        async move {
            let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                format!("{url}/v1/agents"),
            )
            .unwrap();
            req.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
            tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
        }
    };
    // A link established with the first token.
    let mut settings = revmesh_agent::link::LinkSettings::new(vec![a.ws_url()], "long-lived".into());
    settings.token = Some("token-first-0123456789".into());
    let agent = Agent::start_with(settings);
    let state = agent.state.clone();
    let s1 = a.revoke_jti("before-reload");
    wait_for(|| state.applied() >= s1, "the first link").await;

    std::fs::write(&tokens, "token-second-0123456789\n").unwrap();
    let out = std::process::Command::new("kill").args(["-HUP", &a.child.id().to_string()]).output().unwrap();
    assert!(out.status.success());
    // New connections: the new token is accepted, the old one refused (once the reload ran).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while connect("token-first-0123456789").await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "the old token is still accepted");
        tokio::task::yield_now().await;
    }
    assert!(connect("token-second-0123456789").await.is_ok());
    // The link that was already up keeps receiving.
    let s2 = a.revoke_jti("after-reload");
    wait_for(|| state.applied() >= s2, "the existing link to keep working").await;
    assert_eq!(state.metrics.reconnects_total.get(), 0, "the existing link must not have been dropped");
    agent.stop().await;
}

/// Two live agents with one id (two sidecars on a host sharing a hostname-derived id) used to
/// replace each other thousands of times a second. Newest wins; the replaced one waits at least
/// 5 s before it comes back, and each replacement is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_with_one_id_alternate_slowly_instead_of_storming() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::start(dir.path(), &[]);
    let dup = || a.metric("revmesh_authority_agents_rejected_total{reason=\"duplicate_id\"}");
    let first = Agent::start(vec![a.ws_url()], "twin");
    wait_for(|| a.metric("revmesh_authority_agents_connected") == 1.0, "first twin connected").await;
    let second = Agent::start(vec![a.ws_url()], "twin");
    wait_for(|| dup() >= 1.0, "the second twin replaced the first").await;
    let replaced_at = std::time::Instant::now();
    let deadline = replaced_at + std::time::Duration::from_secs(30);
    while dup() < 2.0 {
        assert!(std::time::Instant::now() < deadline, "the replaced twin never came back");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let gap = replaced_at.elapsed();
    assert!(gap >= std::time::Duration::from_millis(4_500), "replaced twin came back after {gap:?}");
    assert_eq!(dup(), 2.0, "one replacement per return: {}", dup());
    first.stop().await;
    second.stop().await;
}

/// Reads frames until a go-away arrives; returns its reason.
async fn go_away_reason(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> String {
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Binary(b) = m {
            if let Ok(Frame::GoAway(g)) = decode(&b) {
                return g.reason;
            }
        }
    }
    panic!("the link closed without a go-away");
}

/// Both ways a link is told to go reach it through its signal: a newer link with its id, and the
/// authority shutting down (SIGTERM), which reaches every link, the one replaced a moment before
/// as well as one connected after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_and_shut_down_links_are_told_to_go() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::start(dir.path(), &[]);
    let mut old = raw_link(&a.ws_url()).await;
    old.send(Message::Binary(hello("twin").into())).await.unwrap();
    wait_for(|| a.metric("revmesh_authority_agents_connected") == 1.0, "first twin connected").await;
    let mut new = raw_link(&a.ws_url()).await;
    new.send(Message::Binary(hello("twin").into())).await.unwrap();
    let reason = go_away_reason(&mut old).await;
    assert!(reason.contains(revmesh_protocol::frame::GOAWAY_DUPLICATE_ID), "{reason}");
    let mut other = raw_link(&a.ws_url()).await;
    other.send(Message::Binary(hello("other").into())).await.unwrap();
    wait_for(|| a.metric("revmesh_authority_agents_connected") == 2.0, "newer twin and other connected")
        .await;
    let out = std::process::Command::new("kill").args(["-TERM", &a.child.id().to_string()]).output().unwrap();
    assert!(out.status.success());
    for ws in [&mut new, &mut other] {
        assert_eq!(go_away_reason(ws).await, "authority shutting down");
    }
}

/// An agent that must catch up while every catch-up slot is taken is welcomed at once and waits
/// in line on its link, its data held. It knows at once how far behind it is, so it answers as a
/// stale agent instead of as a fresh one lacking what was revoked; heartbeats keep the link up
/// past both sides' idle timeouts, so it is never sent away: each go-away cost a reconnect and a
/// handshake, and in a storm of 10,000 agents those were most of the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_waiting_for_a_catch_up_slot_is_welcomed_and_knows_it_is_behind() {
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::start(dir.path(), &["--max-catchups", "1", "--heartbeat", "100ms"]);
    let s = a.revoke_jti("first");
    // A link that says hello, answers heartbeats and never acknowledges holds the only slot.
    let mut ws = raw_link(&a.ws_url()).await;
    ws.send(Message::Binary(hello("holder").into())).await.unwrap();
    let holder = tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(b) = m {
                if let Ok(Frame::Heartbeat(h)) = decode(&b) {
                    let beat =
                        encode(&Frame::Heartbeat(Heartbeat { head_seq: 0, unix_ms: h.unix_ms })).unwrap();
                    let _ = ws.send(Message::Binary(beat.into())).await;
                }
            }
        }
    });
    wait_for(|| a.metric("revmesh_authority_agents_connected") == 1.0, "the holder to be admitted").await;
    let mut settings = LinkSettings::new(vec![a.ws_url()], "queued".into());
    settings.idle_timeout = Duration::from_millis(500);
    let agent = Agent::start_with(settings);
    wait_for(|| a.metric("revmesh_authority_catchups_waiting") == 1.0, "the agent to wait in line").await;
    wait_for(|| agent.state.is_behind(), "the waiting agent to learn it is behind").await;
    assert_eq!(a.metric("revmesh_authority_agents_connected"), 2.0, "the waiting agent is connected");
    assert!(!agent.revoked("first"), "data sent past a full line");
    // Three of the agent's idle timeouts on hold: heartbeats keep the link, nothing reconnects.
    let reconnects = || agent.state.metrics.reconnects_total.get();
    let before = reconnects();
    let held_since = std::time::Instant::now();
    wait_for(|| held_since.elapsed() > Duration::from_millis(1_500), "time on hold").await;
    assert_eq!(reconnects(), before, "the waiting agent's link broke");
    assert_eq!(a.metric("revmesh_authority_catchups_waiting"), 1.0);
    assert!(agent.state.is_behind());
    holder.abort();
    agent.wait_applied(s).await;
    assert!(agent.revoked("first"));
    assert!(!agent.state.is_behind());
    assert_eq!(a.metric("revmesh_authority_catchups_waiting"), 0.0);
    agent.stop().await;
}

type RawLink = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Says hello at link version `max_version` as an empty agent; returns the welcome.
async fn hello_at(ws: &mut RawLink, id: &str, max_version: u8) -> revmesh_protocol::frame::Welcome {
    let h = Hello {
        max_version,
        agent_id: id.into(),
        agent_version: "test".into(),
        log_id: None,
        applied_seq: 0,
    };
    ws.send(Message::Binary(encode(&Frame::Hello(h)).unwrap().into())).await.unwrap();
    match next_frame(ws).await {
        Frame::Welcome(w) => w,
        other => panic!("expected a welcome, got {other:?}"),
    }
}

/// The next frame from the authority other than a heartbeat.
async fn next_frame(ws: &mut RawLink) -> Frame {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => match revmesh_protocol::codec::decode(&b).unwrap() {
                Frame::Heartbeat(_) => continue,
                f => return f,
            },
            Some(Ok(_)) => continue,
            other => panic!("link ended: {other:?}"),
        }
    }
}

/// Posts one jti revocation with `?wait=applied` on a blocking thread.
fn post_applied(a: &Authority, jti: &str) -> tokio::task::JoinHandle<(u16, serde_json::Value)> {
    let (admin, token) = (a.admin.clone(), a.token.clone());
    let body = serde_json::json!({"kind": "jti", "jti": jti, "expires_at": 4000000000u64}).to_string();
    tokio::task::spawn_blocking(move || {
        crate::util::http(
            &admin,
            "POST",
            "/v1/revocations?wait=applied&timeout_ms=20000",
            Some(&token),
            body.as_bytes(),
        )
    })
}

/// Link version 2: a revocation awaited at the applied level goes out as a `WaitedBatch`, and
/// the agent's `Applied` report completes the receipt while its durable cursor stays put.
/// Version 1 (an agent of an earlier release): the same revocation goes out as a plain `Batch`,
/// and its durable ack completes the applied receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_receipts_use_reports_on_version_2_links_and_acks_on_version_1_links() {
    use revmesh_protocol::frame::Ack;
    let dir = tempfile::tempdir().unwrap();
    let a = Authority::start(dir.path(), &[]);

    let mut v2 = raw_link(&a.ws_url()).await;
    let w = hello_at(&mut v2, "v2", 2).await;
    assert_eq!(w.version, 2);
    let receipt = post_applied(&a, "for-v2");
    let Frame::WaitedBatch(b) = next_frame(&mut v2).await else { panic!("expected a waited batch") };
    let report = Frame::Applied(Ack { log_id: w.log_id, applied_seq: b.to_seq });
    v2.send(Message::Binary(encode(&report).unwrap().into())).await.unwrap();
    assert_applied_by(receipt, "v2").await;
    assert_eq!(a.get("/v1/agents").1[0]["applied_seq"], 0, "an applied report is not a durable ack");
    drop(v2);
    wait_for(|| a.metric("revmesh_authority_agents_connected") == 0.0, "the v2 link to end").await;

    let mut v1 = raw_link(&a.ws_url()).await;
    let w = hello_at(&mut v1, "v1", 1).await;
    assert_eq!(w.version, 1);
    let receipt = post_applied(&a, "for-v1");
    // The catch-up from 0 and the new entry, all as plain batches.
    loop {
        match next_frame(&mut v1).await {
            Frame::Batch(b) => {
                let ack = Frame::Ack(Ack { log_id: w.log_id, applied_seq: b.to_seq });
                v1.send(Message::Binary(encode(&ack).unwrap().into())).await.unwrap();
                if b.entries.iter().any(|e| matches!(&e.revocation, revmesh_protocol::Revocation::Jti { jti, .. } if jti == "for-v1")) {
                    break;
                }
            }
            other => panic!("a version-1 agent got {other:?}"),
        }
    }
    assert_applied_by(receipt, "v1").await;
}

/// The receipt is at the applied level and names `id`, and only it, as having applied.
async fn assert_applied_by(receipt: tokio::task::JoinHandle<(u16, serde_json::Value)>, id: &str) {
    let (status, r) = receipt.await.unwrap();
    assert_eq!(status, 201, "{r}");
    assert_eq!((&r["level"], &r["acked"]), (&serde_json::json!("applied"), &serde_json::json!([id])), "{r}");
}

/// An agent that stops reading mid catch-up: the authority writes until that socket is full,
/// holds no copy of what it could not write (the frames are shared), keeps serving everyone
/// else, and drops the link once the socket has taken nothing for the write timeout (10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_stops_reading_is_cut_off_without_delaying_the_others() {
    let dir = tempfile::tempdir().unwrap();
    // A heartbeat of 30 s puts the idle timeout at 2 minutes, so within the test only the
    // write timeout can end the stuck link; a window of 16,384 entries lets the authority try
    // to send all ~12 MB at once, more than loopback's socket buffers take without a reader.
    let a = Authority::start(dir.path(), &["--heartbeat", "30s", "--max-pending-per-agent", "16384"]);
    let (jti_pad, reason) = ("x".repeat(480), "r".repeat(512));
    let mut head = 0;
    for chunk in 0..24 {
        let items: Vec<String> = (0..500)
            .map(|i| {
                format!(
                    r#"{{"kind":"jti","jti":"big-{chunk}-{i}-{jti_pad}","expires_at":4000000000,"reason":"{reason}"}}"#
                )
            })
            .collect();
        let (status, v) = a.post("/v1/revocations", &format!("[{}]", items.join(",")));
        assert_eq!(status, 201, "{v}");
        head = v["last_seq"].as_u64().unwrap();
    }
    let good = Agent::start(vec![a.ws_url()], "good");
    good.wait_applied(head).await;

    let mut stuck = raw_link(&a.ws_url()).await;
    stuck.send(Message::Binary(hello("stuck").into())).await.unwrap();
    let connected = |id: &str| {
        let (_, list) = a.get("/v1/agents");
        list.as_array().unwrap().iter().any(|ag| ag["id"] == id && ag["connected"] == true)
    };
    wait_for(|| connected("stuck"), "the stuck agent to be connected").await;

    // The stuck link's task waits on its own socket only.
    let s = a.revoke_jti("while-one-is-stuck");
    good.wait_applied(s).await;
    assert!(good.revoked("while-one-is-stuck"));

    wait_for(|| !connected("stuck"), "the stuck link to be dropped after the write timeout").await;
    assert!(connected("good"));
    let s = a.revoke_jti("after-the-stuck-one");
    good.wait_applied(s).await;
    good.stop().await;
    drop(stuck);
}

/// Withdraws `seq` and waits until both connected agents acknowledged the withdrawal's seq
/// (an older agent that is not sent the withdrawal acknowledges past it all the same).
fn withdraw_acked_by_two(a: &Authority, seq: u64) {
    let (status, w) = crate::util::http(
        &a.admin,
        "DELETE",
        &format!("/v1/revocations/{seq}?wait=all&timeout_ms=20000"),
        Some(&a.token),
        b"",
    );
    assert_eq!(status, 201, "{w}");
    assert_eq!(w["acked"].as_array().map(Vec::len), Some(2), "both acknowledge the withdrawal's seq: {w}");
}

/// Agents not yet upgraded (link version 2) beside upgraded ones while withdrawals come in: the
/// old agent is sent no withdrawal and no frame it cannot read, keeps refusing what a withdrawal
/// lifts (wider, never narrower), and acknowledges past it; the upgraded one lifts it. A fresh
/// old agent's snapshot leaves the withdrawn entry out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_of_link_version_2_keep_refusing_what_a_withdrawal_lifts() {
    let d = tempfile::tempdir().unwrap();
    let a = Authority::start(d.path(), &[]);
    let old_settings = |id: &str| {
        let mut s = LinkSettings::new(vec![a.ws_url()], id.to_owned());
        s.max_version = 2;
        s.reconnect_min = Duration::from_millis(50);
        s
    };
    let old = Agent::start_with(old_settings("old"));
    let new = Agent::start(vec![a.ws_url()], "new");
    let seq = a.revoke_jti("mistake");
    old.wait_applied(seq).await;
    new.wait_applied(seq).await;
    withdraw_acked_by_two(&a, seq);
    assert!(!new.revoked("mistake"), "an upgraded agent lifts it");
    assert!(old.revoked("mistake"), "an old agent keeps refusing: wider, never narrower");
    let next = a.revoke_jti("next");
    old.wait_applied(next).await;
    assert!(old.state.is_connected());
    assert_eq!(
        old.state.metrics.reconnects_total.get(),
        0,
        "one link, never dropped for a frame it could not read"
    );
    let fresh = Agent::start_with(old_settings("old-fresh"));
    fresh.wait_applied(next).await;
    assert!(!fresh.revoked("mistake") && fresh.revoked("next"));
    for agent in [old, new, fresh] {
        agent.stop().await;
    }
}

/// Issuer scope across versions: a session logged out at provider A refuses A's `sess-A` and
/// not B's at an upgraded agent; an agent of link version 3 refuses both (the entry unscoped:
/// wider, never dropped), is sent no withdrawal of it and keeps refusing after one, and never
/// drops its link for a frame it cannot read. A subject revoked without `issued_before`
/// covers a token a provider whose clock runs 3 s ahead minted just before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_scoped_revocations_are_exact_when_upgraded_and_wider_on_older_agents() {
    use revmesh_protocol::TokenRef;
    let d = tempfile::tempdir().unwrap();
    let a = Authority::start(d.path(), &[]);
    let mut v3 = LinkSettings::new(vec![a.ws_url()], "v3".to_owned());
    v3.max_version = 3;
    v3.reconnect_min = Duration::from_millis(50);
    let old = Agent::start_with(v3);
    let new = Agent::start(vec![a.ws_url()], "v4");
    let (status, v) = a.post(
        "/v1/revocations",
        r#"{"kind":"session","sid":"sess-A","iss":"https://idp-a.example","reason":"logout at A"}"#,
    );
    assert_eq!(status, 201, "{v}");
    let seq = v["seq"].as_u64().unwrap();
    old.wait_applied(seq).await;
    new.wait_applied(seq).await;
    let revoked = |agent: &Agent, iss: &'static str| {
        matches!(
            agent.state.decide(&TokenRef { sid: Some("sess-A"), iss: Some(iss), ..Default::default() }),
            revmesh_agent::state::Decision::Revoked { .. }
        )
    };
    assert!(revoked(&new, "https://idp-a.example"), "A's session is refused");
    assert!(!revoked(&new, "https://idp-b.example"), "B's session with the same sid is not");
    assert!(revoked(&old, "https://idp-a.example") && revoked(&old, "https://idp-b.example"), "v3: wider");
    let (_, e) = a.get(&format!("/v1/revocations/{seq}"));
    assert_eq!(
        (e["kind"].as_str(), e["iss"].as_str()),
        (Some("session"), Some("https://idp-a.example")),
        "{e}"
    );

    withdraw_acked_by_two(&a, seq);
    assert!(!revoked(&new, "https://idp-a.example"), "the upgraded agent lifts it");
    assert!(revoked(&old, "https://idp-a.example"), "the v3 agent keeps refusing: never narrower");
    assert_eq!(old.state.metrics.reconnects_total.get(), 0, "one link, never dropped");

    // The clock-skew default of an admin-API subject revocation: the provider's clock runs 3 s
    // ahead, so the token it minted just before the revocation carries iat = our now + 3.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (status, v) = a.post("/v1/revocations", r#"{"kind":"subject","sub":"alice"}"#);
    assert_eq!(status, 201, "{v}");
    new.wait_applied(v["seq"].as_u64().unwrap()).await;
    let alice = |iat: u64| {
        matches!(
            new.state.decide(&TokenRef { sub: Some("alice"), iat: Some(iat), ..Default::default() }),
            revmesh_agent::state::Decision::Revoked { .. }
        )
    };
    assert!(alice(now + 3), "a token minted by a clock 3 s ahead just before the revocation");
    assert!(!alice(now + 60), "a token minted a minute later is not refused");
    for agent in [old, new] {
        agent.stop().await;
    }
}
