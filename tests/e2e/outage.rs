//! PostgreSQL going away under a sending client, and coming back: the
//! sender gets `unavailable` promptly on an open socket, nobody sees what
//! was not stored, and the server heals by itself.
//!
//! The database is a private PostgreSQL instance (initdb in a temp dir, on
//! a free port), never the machine's shared one, so the test may stop it.
//! Without `initdb` on the PATH the test says so and passes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use roomcast_domain::{RoomSlug, Seq, Username};
use roomcast_storage::postgres::PrivatePostgres;
use serde_json::{Value, json};

use crate::harness::{Options, Ws, spawn_app_in};

/// The longest an `unavailable` answer may take: the storage's fail-fast
/// bounds (3 s to connect or acquire) plus scheduling slack.
const PROMPT: Duration = Duration::from_secs(5);
/// How long the server may take to heal once the database is back.
const HEAL: Duration = Duration::from_secs(20);

/// Sends a text frame with a clientId; returns the answer and how long it
/// took.
async fn send(ws: &mut Ws, body: &str, client_id: &str) -> (Value, Duration) {
    let sent = Instant::now();
    ws.send_json(json!({"type": "text", "message": body, "clientId": client_id}))
        .await;
    let answer = ws.next_json().await;
    (answer, sent.elapsed())
}

fn is_unavailable(answer: &Value, client_id: &str) -> bool {
    answer["code"] == "unavailable" && answer["clientId"] == client_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_answers_unavailable_promptly_and_heals_by_itself() {
    let Some(pg) = PrivatePostgres::start_new() else {
        eprintln!("skipped: initdb is not on the PATH, so no private PostgreSQL to stop");
        return;
    };
    let pg = Arc::new(pg);
    let dir = tempfile::tempdir().expect("temp dir");
    let app = spawn_app_in(
        dir.path(),
        Options {
            database_url: Some(pg.url()),
            unlimited: true,
            ..Options::default()
        },
    )
    .await;
    let rooms = app.fixture(1, 2).await;
    let room = &rooms[0];
    let mut alice = app.connect(room, 0).await;
    let bob = app.connect(room, 1).await;

    // Bob reads everything broadcast while alice talks, until told to stop.
    let (stop_bob, bob_stop) = tokio::sync::oneshot::channel::<()>();
    let bob_reader = tokio::spawn(async move {
        let mut bob = bob;
        let mut seen = Vec::new();
        let mut bob_stop = bob_stop;
        loop {
            if bob_stop.try_recv().is_ok() {
                // Whatever was in flight has arrived by now.
                while let Some(frame) = bob.try_next_json(Duration::from_millis(500)).await {
                    seen.push(frame);
                }
                return (bob, seen);
            }
            if let Some(frame) = bob.try_next_json(Duration::from_millis(100)).await {
                seen.push(frame);
            }
        }
    });

    let mut sent_bodies = Vec::new();
    let mut stored = Vec::new(); // `new` events alice got back
    let mut failed = Vec::new(); // (clientId, body) answered `unavailable`
    let mut n = 0;
    let next = |n: &mut usize| {
        *n += 1;
        (format!("message {n}"), format!("c{n}"))
    };

    // Talking normally.
    for _ in 0..3 {
        let (body, cid) = next(&mut n);
        let (answer, _) = send(&mut alice, &body, &cid).await;
        assert_eq!(answer["action"], "new", "{answer}");
        sent_bodies.push(body);
        stored.push(answer);
    }

    // The database stops while alice keeps sending.
    let stopper = {
        let pg = Arc::clone(&pg);
        tokio::task::spawn_blocking(move || pg.stop("fast"))
    };
    let mut slowest_refusal = Duration::ZERO;
    let mut refusals_after_stop = 0;
    while refusals_after_stop < 3 {
        assert!(n < 100_000, "the outage never showed");
        let (body, cid) = next(&mut n);
        let (answer, took) = send(&mut alice, &body, &cid).await;
        sent_bodies.push(body.clone());
        if answer["action"] == "new" {
            // Committed before the server went down.
            stored.push(answer);
        } else {
            assert!(is_unavailable(&answer, &cid), "{answer}");
            assert!(
                took <= PROMPT,
                "unavailable took {took:?}, more than {PROMPT:?}"
            );
            slowest_refusal = slowest_refusal.max(took);
            failed.push((cid, body));
            if stopper.is_finished() {
                refusals_after_stop += 1;
            }
        }
    }
    let stopped = stopper.await.expect("stopper");
    assert!(stopped.status.success(), "pg_ctl stop: {stopped:?}");
    eprintln!(
        "outage: {} sent, {} refused, slowest refusal {slowest_refusal:?}",
        sent_bodies.len(),
        failed.len()
    );

    // While it is down, the node says it is not ready, and why.
    let readyz = reqwest::get(format!("http://{}/readyz", app.addr))
        .await
        .expect("readyz");
    assert_eq!(readyz.status().as_u16(), 503);
    let reason: Value = readyz.json().await.expect("JSON body");
    assert!(
        reason["error"]
            .as_str()
            .is_some_and(|e| e.contains("storage")),
        "{reason}"
    );

    // Back up: the same socket works again, without any restart of ours.
    {
        let pg = Arc::clone(&pg);
        tokio::task::spawn_blocking(move || pg.start())
            .await
            .expect("starter");
    }
    let back = Instant::now();
    loop {
        let (body, cid) = next(&mut n);
        let (answer, _) = send(&mut alice, &body, &cid).await;
        sent_bodies.push(body.clone());
        if answer["action"] == "new" {
            stored.push(answer);
            break;
        }
        assert!(is_unavailable(&answer, &cid), "{answer}");
        failed.push((cid, body));
        assert!(
            back.elapsed() < HEAL,
            "still unavailable {HEAL:?} after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("healed {:?} after the database came back", back.elapsed());

    // Alice retries what was refused, with the same clientIds, as a client
    // does: each is stored once (or was, if its commit raced the stop).
    for (cid, body) in &failed {
        let (answer, _) = send(&mut alice, body, cid).await;
        assert_eq!(answer["action"], "new", "{answer}");
        assert_eq!(answer["clientId"], cid.as_str());
        assert_eq!(answer["body"], body.as_str());
        if !stored.iter().any(|s| s["id"] == answer["id"]) {
            stored.push(answer);
        }
    }
    let _ = stop_bob.send(());
    let (_bob, seen) = bob_reader.await.expect("bob's reader");

    // Bob saw every stored message once, in seq order, and nothing else.
    let total = sent_bodies.len();
    let seqs: Vec<u64> = seen.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert_eq!(
        seqs,
        (1..=total as u64).collect::<Vec<_>>(),
        "bob saw {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|f| f["action"] == "new" && f.get("code").is_none()),
        "only events reach bob: {seen:?}"
    );

    // A replay from seq 0 is the same: every message once, none half-written.
    let mut replay = app.connect_with(room, 1, Some(0)).await;
    let mut bodies = Vec::new();
    for seq in 1..=total as u64 {
        let event = replay.next_json().await;
        assert_eq!(event["seq"], seq, "{event}");
        assert_eq!(event["action"], "new", "{event}");
        bodies.push(event["body"].as_str().expect("body").to_owned());
    }
    assert_eq!(
        replay.next_json().await,
        json!({"type": "chat_event", "action": "synced", "seq": total})
    );
    let mut want = sent_bodies.clone();
    want.sort();
    bodies.sort();
    assert_eq!(bodies, want, "every message stored exactly once");

    // And in the tables: one live message per event, last_seq on the last.
    check_tables(&pg.url(), &room.host, &room.slug, total).await;
    let readyz = reqwest::get(format!("http://{}/readyz", app.addr))
        .await
        .expect("readyz");
    assert_eq!(
        readyz.status().as_u16(),
        200,
        "ready again once the database is back"
    );
    drop(app);
}

async fn check_tables(url: &str, host: &str, slug: &str, total: usize) {
    let store = roomcast_storage::connect(url).await.expect("storage");
    let room = store
        .room_by_address(
            &Username::parse(host).expect("host"),
            &RoomSlug::parse(slug).expect("slug"),
        )
        .await
        .expect("lookup")
        .expect("room");
    assert_eq!(store.last_seq(room.id).await.expect("seq"), total as u64);
    let events = store
        .events_since(room.id, Seq::ZERO, 10_000)
        .await
        .expect("events");
    let messages = store.history(room.id, None, 10_000).await.expect("history");
    assert_eq!(events.len(), total);
    let mut from_events: Vec<_> = events.iter().map(|e| e.message_id()).collect();
    let mut from_messages: Vec<_> = messages.iter().map(|m| m.id).collect();
    from_events.sort();
    from_messages.sort();
    assert_eq!(
        from_events, from_messages,
        "each event has its message and back"
    );
}
