//! PROTOCOL.md section 4: reconnecting with `?since=N` loses nothing.

use serde_json::{Value, json};

use crate::harness::{post, spawn_app};

#[tokio::test]
async fn reconnecting_with_since_replays_exactly_what_was_missed_then_goes_live() {
    let app = spawn_app().await;
    let rooms = app.fixture(1, 2).await;
    let room = &rooms[0];
    let mut alice = app.connect(room, 0).await;
    let mut bob = app.connect(room, 1).await;
    let kept = post(&mut alice, "seen by bob").await;
    assert_eq!(bob.next_json().await, kept);
    drop(bob);

    // While bob is away: a new message, an edit of it, a deletion of the first.
    let second = post(&mut alice, "while away").await;
    alice
        .send_json(
            json!({"type": "update", "messageId": second["id"], "message": "edited while away"}),
        )
        .await;
    let update = alice.next_json().await;
    alice
        .send_json(json!({"type": "delete", "messageId": kept["id"]}))
        .await;
    let delete = alice.next_json().await;

    let mut bob = app.connect_with(room, 1, Some(1)).await;
    assert_eq!(bob.next_json().await, second);
    assert_eq!(bob.next_json().await, update);
    assert_eq!(bob.next_json().await, delete);
    assert_eq!(
        bob.next_json().await,
        json!({"type": "chat_event", "action": "synced", "seq": 4})
    );
    let live = post(&mut alice, "live again").await;
    assert_eq!(bob.next_json().await, live);
    assert_eq!(live["seq"], 5);
}

#[tokio::test]
async fn a_replay_never_serves_deleted_content() {
    let app = spawn_app().await;
    let rooms = app.fixture(1, 1).await;
    let mut ws = app.connect(&rooms[0], 0).await;
    let secret = post(&mut ws, "regrettable").await;
    ws.send_json(json!({"type": "delete", "messageId": secret["id"]}))
        .await;
    ws.next_json().await;
    let mut again = app.connect_with(&rooms[0], 0, Some(0)).await;
    let replayed_new = again.next_json().await;
    assert_eq!(replayed_new["id"], secret["id"]);
    assert_eq!(replayed_new["body"], "");
    assert_eq!(replayed_new["seq"], 1);
    assert_eq!(again.next_json().await["action"], "delete");
    assert_eq!(again.next_json().await["action"], "synced");
}

#[tokio::test]
async fn a_since_beyond_the_room_log_gets_reset() {
    let app = spawn_app().await;
    let rooms = app.fixture(1, 1).await;
    let mut ws = app.connect_with(&rooms[0], 0, Some(99)).await;
    assert_eq!(
        ws.next_json().await,
        json!({"type": "chat_event", "action": "reset", "seq": 0})
    );
    assert_eq!(post(&mut ws, "fresh start").await["seq"], 1);
}

#[tokio::test]
async fn concurrent_senders_are_seen_by_everyone_in_seq_order_without_gaps() {
    let app = crate::harness::spawn_unlimited_app().await;
    let rooms = app.fixture(1, 4).await;
    let room = &rooms[0];
    let mut watcher = app.connect(room, 3).await;
    let mut senders = Vec::new();
    for member in 0..3 {
        let mut ws = app.connect(room, member).await;
        senders.push(tokio::spawn(async move {
            for i in 0..30 {
                ws.send_json(json!({"message": format!("{member}-{i}")}))
                    .await;
            }
            ws
        }));
    }
    let mut seqs = Vec::new();
    for _ in 0..90 {
        let event: Value = watcher.next_json().await;
        seqs.push(event["seq"].as_u64().expect("seq"));
    }
    assert_eq!(seqs, (1..=90).collect::<Vec<u64>>());
    for s in senders {
        s.await.expect("sender");
    }
}

#[tokio::test]
async fn reconnecting_during_continuous_sending_leaves_no_gap_and_no_duplicate() {
    let app = crate::harness::spawn_unlimited_app().await;
    let rooms = app.fixture(1, 2).await;
    let mut sender = app.connect(&rooms[0], 0).await;
    const TOTAL: u64 = 300;
    let sending = tokio::spawn(async move {
        for i in 0..TOTAL {
            sender.send_json(json!({"message": format!("m{i}")})).await;
            if i % 10 == 0 {
                tokio::task::yield_now().await;
            }
        }
        sender
    });
    let mut seen = Vec::new();
    let mut since = 0;
    // Drop and resume three times while the sender keeps going.
    for round in 0..4 {
        let mut watcher = app.connect_with(&rooms[0], 1, Some(since)).await;
        loop {
            let frame = watcher.next_json().await;
            if frame["action"] == "synced" {
                continue;
            }
            let seq = frame["seq"].as_u64().expect("stored events carry seq");
            seen.push(seq);
            since = seq;
            if seq == TOTAL || (round < 3 && seen.len() as u64 >= (round + 1) * TOTAL / 4) {
                break;
            }
        }
        if since == TOTAL {
            break;
        }
    }
    assert_eq!(seen, (1..=TOTAL).collect::<Vec<u64>>());
    sending.await.expect("sender");
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_closed_and_resumes_without_loss_while_others_flow() {
    let temp = tempfile::tempdir().expect("temp dir");
    let options = crate::harness::Options {
        write_timeout_ms: Some(300),
        tcp_send_buffer: Some(8 * 1024),
        unlimited: true,
        ..Default::default()
    };
    let app = crate::harness::spawn_app_in(temp.path(), options).await;
    let rooms = app.fixture(1, 3).await;
    let room = &rooms[0];
    let cookie = format!("JWT={}", room.members[2].token);
    let mut slow = crate::harness::Ws::connect_with_small_buffer(
        &app.ws_url(&room.host, &room.slug),
        &[("Cookie", &cookie), ("Origin", &app.origin())],
    )
    .await;
    let mut sender = app.connect(room, 0).await;
    let mut normal = app.connect(room, 1).await;
    // The slow one reads nothing while 600 large messages flow.
    const TOTAL: u64 = 600;
    let body = "x".repeat(480);
    for i in 0..TOTAL {
        sender
            .send_json(json!({"message": format!("{i} {body}")}))
            .await;
        let got = normal.next_json().await;
        assert_eq!(got["seq"], i + 1, "the normal member keeps up");
        sender.next_json().await;
    }
    // Now the slow one reads: some frames, then the server's close.
    let mut last = 0;
    let code = loop {
        match slow.next_frame_or_close().await {
            Ok(frame) => last = frame["seq"].as_u64().expect("seq"),
            Err(code) => break code,
        }
    };
    assert!(
        last < TOTAL,
        "the slow reader could not have had everything"
    );
    assert!(
        matches!(code, Some(1013) | None),
        "closed as a slow consumer, got {code:?}"
    );
    let mut resumed = app.connect_with(room, 2, Some(last)).await;
    for seq in last + 1..=TOTAL {
        assert_eq!(resumed.next_json().await["seq"], seq);
    }
    assert_eq!(resumed.next_json().await["action"], "synced");
}

#[tokio::test]
async fn a_since_older_than_the_kept_log_gets_reset() {
    let app = spawn_app().await;
    let rooms = app.fixture(1, 1).await;
    let mut ws = app.connect(&rooms[0], 0).await;
    post(&mut ws, "one").await;
    post(&mut ws, "two").await;
    let storage = app
        .server
        .as_ref()
        .expect("running")
        .state()
        .storage()
        .clone();
    let now = roomcast_domain::Timestamp::from_unix_micros(
        roomcast_domain::Timestamp::now().unix_micros() + 1,
    )
    .expect("timestamp");
    assert_eq!(storage.prune_events(now).await.expect("prune"), 2);
    let mut behind = app.connect_with(&rooms[0], 0, Some(1)).await;
    assert_eq!(
        behind.next_json().await,
        json!({"type": "chat_event", "action": "reset", "seq": 2})
    );
    // Up to date is fine: nothing to replay.
    let mut current = app.connect_with(&rooms[0], 0, Some(2)).await;
    assert_eq!(
        current.next_json().await,
        json!({"type": "chat_event", "action": "synced", "seq": 2})
    );
}
