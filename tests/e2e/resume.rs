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
    let app = spawn_app().await;
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
