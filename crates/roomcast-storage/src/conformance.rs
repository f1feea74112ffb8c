//! The repository conformance suite: every backend must pass every check.
//!
//! A backend's test module calls [`conformance_tests!`](crate::conformance_tests)
//! with an async factory returning `(Storage, guard)`, a fresh empty store
//! and whatever must live as long as it (a temp dir, a throwaway database).
//! The macro turns each check below into one `#[tokio::test]`, so a new
//! backend is a new `impl` and one macro call, not new tests.
//! [`several_handles_share_one_sequence`] needs several handles on one
//! database (as several server processes have), so each backend's test file
//! calls it itself.

use std::collections::HashSet;

use roomcast_domain::{
    ClientId, EventKind, MessageBody, MessageId, RefreshFamily, RoomId, RoomSlug, Seq, User,
    UserId, Username,
};

use crate::{
    NewMessage, NewRefreshToken, NewRoom, NewServiceKey, NewUser, RefreshOwner, RefreshRefusal,
    RoomSeed, RotatedRefreshToken, Storage, StorageError, WriteOp, WriteOutcome,
};
use roomcast_domain::{Scope, Scopes, Timestamp, Visibility};

/// Generates one test per conformance check for a backend factory.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@each $factory;
            users_are_created_and_found,
            usernames_and_emails_are_unique,
            rooms_are_created_with_their_host_as_participant,
            room_slugs_are_unique_per_host,
            participants_are_added_and_removed,
            missing_references_are_not_found,
            admission_reads_user_room_and_membership_at_once,
            posts_get_consecutive_seqs_per_room,
            edits_and_deletes_are_for_the_author_in_the_same_room,
            deleted_bodies_are_never_served_again,
            client_ids_make_posts_idempotent,
            concurrent_posts_get_every_seq_exactly_once,
            refused_writes_in_a_busy_room_fail_alone,
            queued_writes_commit_in_the_order_queued,
            history_pages_backwards_oldest_first,
            seeding_adds_and_never_breaks,
            logins_find_users_by_username_or_email,
            refresh_tokens_rotate_once_and_replays_revoke_the_family,
            retention_prunes_old_events_but_keeps_messages,
            retention_prunes_every_rooms_log,
            read_positions_only_move_forward_up_to_the_last_seq,
            unread_counts_live_messages_of_others_through_edits_and_deletes,
            unread_counts_stay_exact_under_batched_writes,
            room_lists_carry_each_rooms_read_state,
            rooms_keep_the_visibility_they_were_made_with,
            removed_participants_are_banned_until_the_host_adds_them,
            revoked_sessions_are_shared_until_they_expire,
            service_keys_are_found_by_hash_until_revoked,
            service_key_names_are_usernames_nobody_else_has,
            service_key_bots_post_without_taking_part,
        );
    };
    (@each $factory:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let (store, _guard) = $factory.await;
                $crate::conformance::$check(store).await;
            }
        )*
    };
}

fn name(s: &str) -> Username {
    Username::parse(s).expect("test usernames are valid")
}

fn slug(s: &str) -> RoomSlug {
    RoomSlug::parse(s).expect("test slugs are valid")
}

fn body(s: &str) -> MessageBody {
    MessageBody::parse(s).expect("test bodies are valid")
}

/// Seeding for tests beyond the suite too: a user `username` with an
/// email and no password.
pub async fn user(store: &Storage, username: &str) -> User {
    store
        .create_user(NewUser {
            username: name(username),
            name: username.to_uppercase(),
            email: Some(format!("{username}@example.com")),
            password_hash: None,
        })
        .await
        .expect("create user")
}

/// Seeding: a private room `s` hosted by `host`.
pub async fn room(store: &Storage, host: &User, s: &str) -> RoomId {
    store
        .create_room(NewRoom {
            host: host.id,
            slug: slug(s),
            name: s.to_owned(),
            description: String::new(),
            visibility: Visibility::Private,
        })
        .await
        .expect("create room")
        .id
}

/// Seeding: `author` posts `text`; the message's id and its event's seq.
pub async fn post(store: &Storage, room_id: RoomId, author: &User, text: &str) -> (MessageId, Seq) {
    let posted = store
        .post_message(NewMessage {
            room_id,
            author: author.clone(),
            body: body(text),
            client_id: None,
        })
        .await
        .expect("post");
    (posted.event.message_id(), posted.event.seq)
}

pub async fn users_are_created_and_found(store: Storage) {
    let alice = user(&store, "alice").await;
    assert_eq!(alice.name, "ALICE");
    assert_eq!(
        store.user_by_id(alice.id).await.expect("by id"),
        Some(alice.clone())
    );
    assert_eq!(
        store
            .user_by_username(&name("alice"))
            .await
            .expect("by name"),
        Some(alice)
    );
    assert_eq!(store.user_by_id(UserId::new()).await.expect("by id"), None);
    assert_eq!(
        store
            .user_by_username(&name("nobody"))
            .await
            .expect("by name"),
        None
    );
}

pub async fn usernames_and_emails_are_unique(store: Storage) {
    user(&store, "alice").await;
    let same_name = store
        .create_user(NewUser {
            username: name("alice"),
            name: String::new(),
            email: None,
            password_hash: None,
        })
        .await;
    assert!(
        matches!(same_name, Err(StorageError::Conflict("username"))),
        "{same_name:?}"
    );
    let same_email = store
        .create_user(NewUser {
            username: name("alice2"),
            name: String::new(),
            email: Some("ALICE@Example.com".into()),
            password_hash: None,
        })
        .await;
    assert!(
        matches!(same_email, Err(StorageError::Conflict("email"))),
        "{same_email:?}"
    );
}

pub async fn rooms_are_created_with_their_host_as_participant(store: Storage) {
    let alice = user(&store, "alice").await;
    let room_id = room(&store, &alice, "general").await;
    let found = store
        .room_by_address(&name("alice"), &slug("general"))
        .await
        .expect("lookup")
        .expect("room exists");
    assert_eq!(found.id, room_id);
    assert_eq!(found.host, name("alice"));
    assert_eq!(found.participants_count, 1);
    assert!(
        store
            .is_participant(room_id, alice.id)
            .await
            .expect("participant")
    );
    assert_eq!(store.last_seq(room_id).await.expect("seq"), 0);
    assert_eq!(
        store
            .room_by_address(&name("alice"), &slug("other"))
            .await
            .expect("lookup"),
        None
    );
    let mine = store.rooms_of(alice.id).await.expect("rooms of");
    assert_eq!(mine.iter().map(|r| r.id).collect::<Vec<_>>(), vec![room_id]);
}

pub async fn room_slugs_are_unique_per_host(store: Storage) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    room(&store, &alice, "general").await;
    let again = store
        .create_room(NewRoom {
            host: alice.id,
            slug: slug("general"),
            name: "again".into(),
            description: String::new(),
            visibility: Visibility::Private,
        })
        .await;
    assert!(
        matches!(again, Err(StorageError::Conflict("room"))),
        "{again:?}"
    );
    // Another host may use the same slug.
    room(&store, &bob, "general").await;
}

/// A write naming a user or room that does not exist breaks a foreign
/// key; every backend reports it as `NotFound`, never as an outage.
pub async fn missing_references_are_not_found(store: Storage) {
    let alice = user(&store, "alice").await;
    let room_id = room(&store, &alice, "general").await;
    let orphan = store
        .create_room(NewRoom {
            host: UserId::new(),
            slug: slug("orphan"),
            name: "orphan".into(),
            description: String::new(),
            visibility: Visibility::Private,
        })
        .await;
    assert!(matches!(orphan, Err(StorageError::NotFound)), "{orphan:?}");
    let nobody = store.add_participant(room_id, UserId::new()).await;
    assert!(matches!(nobody, Err(StorageError::NotFound)), "{nobody:?}");
    let nowhere = store.add_participant(RoomId::new(), alice.id).await;
    assert!(
        matches!(nowhere, Err(StorageError::NotFound)),
        "{nowhere:?}"
    );
    store.health().await.expect("still healthy");
}

pub async fn participants_are_added_and_removed(store: Storage) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let room_id = room(&store, &alice, "general").await;
    assert!(!store.is_participant(room_id, bob.id).await.expect("check"));
    assert!(store.add_participant(room_id, bob.id).await.expect("add"));
    assert!(
        !store
            .add_participant(room_id, bob.id)
            .await
            .expect("add again")
    );
    assert!(store.is_participant(room_id, bob.id).await.expect("check"));
    let names: Vec<_> = store
        .participants(room_id)
        .await
        .expect("list")
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, vec![name("alice"), name("bob")]);
    assert!(
        store
            .remove_participant(room_id, bob.id)
            .await
            .expect("remove")
    );
    assert!(
        !store
            .remove_participant(room_id, bob.id)
            .await
            .expect("remove again")
    );
    assert!(!store.is_participant(room_id, bob.id).await.expect("check"));
}

pub async fn admission_reads_user_room_and_membership_at_once(store: Storage) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let room_id = room(&store, &alice, "lobby").await;
    let member = store
        .admission(alice.id, &name("alice"), &slug("lobby"))
        .await
        .expect("admission");
    assert_eq!(member.user.as_ref().map(|u| u.id), Some(alice.id));
    assert_eq!(member.user.as_ref().map(|u| &u.name), Some(&alice.name));
    let found = member.room.expect("the room is found");
    assert_eq!(found.id, room_id);
    assert_eq!(found.host, name("alice"));
    assert_eq!(found.name, "lobby");
    assert_eq!(found.participants_count, 1);
    assert!(member.participant);

    let outsider = store
        .admission(bob.id, &name("alice"), &slug("lobby"))
        .await
        .expect("admission");
    assert_eq!(outsider.user.map(|u| u.id), Some(bob.id));
    assert_eq!(outsider.room.map(|r| r.id), Some(room_id));
    assert!(!outsider.participant);

    let nowhere = store
        .admission(alice.id, &name("bob"), &slug("lobby"))
        .await
        .expect("admission");
    assert!(nowhere.user.is_some());
    assert!(nowhere.room.is_none());
    assert!(!nowhere.participant);

    let nobody = store
        .admission(UserId::new(), &name("alice"), &slug("lobby"))
        .await
        .expect("admission");
    assert!(nobody.user.is_none() && nobody.room.is_none() && !nobody.participant);
}

pub async fn posts_get_consecutive_seqs_per_room(store: Storage) {
    let alice = user(&store, "alice").await;
    let one = room(&store, &alice, "one").await;
    let two = room(&store, &alice, "two").await;
    let mut seqs = Vec::new();
    for i in 0..3 {
        seqs.push(post(&store, one, &alice, &format!("one {i}")).await.1);
        seqs.push(post(&store, two, &alice, &format!("two {i}")).await.1);
    }
    assert_eq!(seqs, vec![1, 1, 2, 2, 3, 3]);
    assert_eq!(store.last_seq(one).await.expect("seq"), 3);
    assert_eq!(
        store.log_bounds(one).await.expect("bounds"),
        (Seq::new(3), Seq::new(1))
    );
    let empty = room(&store, &alice, "empty").await;
    assert_eq!(
        store.log_bounds(empty).await.expect("bounds"),
        (Seq::new(0), Seq::new(1))
    );
    assert!(matches!(
        store.log_bounds(RoomId::new()).await,
        Err(StorageError::NotFound)
    ));
    let events = store
        .events_since(one, Seq::new(1), 100)
        .await
        .expect("since");
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
    match &events[0].kind {
        EventKind::New(m) => {
            assert_eq!(m.body, "one 1");
            assert_eq!(m.username, name("alice"));
            assert_eq!(m.user_id, alice.id);
            assert!(!m.edited);
        }
        other => panic!("expected a new event, got {other:?}"),
    }
    let unknown = store
        .post_message(NewMessage {
            room_id: RoomId::new(),
            author: alice.clone(),
            body: body("x"),
            client_id: None,
        })
        .await;
    assert!(
        matches!(unknown, Err(StorageError::NotFound)),
        "{unknown:?}"
    );
}

pub async fn edits_and_deletes_are_for_the_author_in_the_same_room(store: Storage) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let room_id = room(&store, &alice, "general").await;
    let other_room = room(&store, &alice, "other").await;
    let (id, _) = post(&store, room_id, &alice, "hello").await;

    let by_bob = store
        .edit_message(room_id, bob.id, id, body("hacked"))
        .await;
    assert!(matches!(by_bob, Err(StorageError::Forbidden)), "{by_bob:?}");
    let elsewhere = store
        .edit_message(other_room, alice.id, id, body("x"))
        .await;
    assert!(
        matches!(elsewhere, Err(StorageError::NotFound)),
        "{elsewhere:?}"
    );
    let unknown = store
        .edit_message(room_id, alice.id, MessageId::new(), body("x"))
        .await;
    assert!(
        matches!(unknown, Err(StorageError::NotFound)),
        "{unknown:?}"
    );

    let edited = store
        .edit_message(room_id, alice.id, id, body("hello again"))
        .await
        .expect("edit");
    assert_eq!(edited.seq, 2);
    assert!(
        matches!(&edited.kind, EventKind::Update { body, edited: true, .. } if body.as_ref().map(MessageBody::as_str) == Some("hello again"))
    );
    let page = store.history(room_id, None, 10).await.expect("history");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].body, "hello again");
    assert!(page[0].edited);

    let del_bob = store.delete_message(room_id, bob.id, id).await;
    assert!(
        matches!(del_bob, Err(StorageError::Forbidden)),
        "{del_bob:?}"
    );
    let del_elsewhere = store.delete_message(other_room, alice.id, id).await;
    assert!(
        matches!(del_elsewhere, Err(StorageError::NotFound)),
        "{del_elsewhere:?}"
    );
    let deleted = store
        .delete_message(room_id, alice.id, id)
        .await
        .expect("delete");
    assert_eq!(deleted.seq, 3);
    assert_eq!(deleted.kind, EventKind::Delete { id });
    let again = store.delete_message(room_id, alice.id, id).await;
    assert!(matches!(again, Err(StorageError::NotFound)), "{again:?}");
    assert!(
        store
            .history(room_id, None, 10)
            .await
            .expect("history")
            .is_empty()
    );
    // Refused writes took no seq.
    assert_eq!(store.last_seq(room_id).await.expect("seq"), 3);
}

pub async fn deleted_bodies_are_never_served_again(store: Storage) {
    let alice = user(&store, "alice").await;
    let room_id = room(&store, &alice, "general").await;
    let (id, _) = post(&store, room_id, &alice, "secret").await;
    let (kept, _) = post(&store, room_id, &alice, "kept").await;
    store
        .edit_message(room_id, alice.id, id, body("still secret"))
        .await
        .expect("edit");
    store
        .delete_message(room_id, alice.id, id)
        .await
        .expect("delete");
    let events = store
        .events_since(room_id, Seq::ZERO, 100)
        .await
        .expect("since");
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    for event in &events {
        let text = match &event.kind {
            EventKind::New(m) => m.body.clone(),
            EventKind::Update { body, .. } => {
                body.as_ref().map_or("", MessageBody::as_str).to_owned()
            }
            EventKind::Delete { .. } => String::new(),
        };
        if event.message_id() == id {
            assert_eq!(text, "", "seq {} still carries the deleted body", event.seq);
        } else {
            assert_eq!(event.message_id(), kept);
            assert_eq!(text, "kept");
        }
    }
}

pub async fn client_ids_make_posts_idempotent(store: Storage) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let room_id = room(&store, &alice, "general").await;
    let cid = ClientId::parse("retry-1").expect("valid");
    let send = |author: &User, text: &str| {
        store.post_message(NewMessage {
            room_id,
            author: author.clone(),
            body: body(text),
            client_id: Some(cid.clone()),
        })
    };
    let first = send(&alice, "once").await.expect("first");
    assert!(!first.duplicate);
    let retry = send(&alice, "once, retried").await.expect("retry");
    assert!(retry.duplicate);
    assert_eq!(retry.event, first.event);
    match &retry.event.kind {
        EventKind::New(m) => assert_eq!(m.client_id.as_ref(), Some(&cid)),
        other => panic!("expected new, got {other:?}"),
    }
    // The key is per author: bob's same clientId is a different message.
    let bobs = send(&bob, "bob's").await.expect("bob");
    assert!(!bobs.duplicate);
    assert_eq!(bobs.event.seq, 2);
    assert_eq!(store.last_seq(room_id).await.expect("seq"), 2);
}

/// 64 concurrent writers to one room: enough to fill group-commit batches
/// and, on PostgreSQL, to queue on the room's row lock.
const WRITERS: usize = 64;

pub async fn concurrent_posts_get_every_seq_exactly_once(store: Storage) {
    const EACH: usize = 10;
    let alice = user(&store, "alice").await;
    let room_id = room(&store, &alice, "busy").await;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let alice = alice.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..EACH {
                let posted = store
                    .post_message(NewMessage {
                        room_id,
                        author: alice.clone(),
                        body: body(&format!("{w}-{i}")),
                        client_id: None,
                    })
                    .await
                    .expect("post");
                seqs.push(posted.event.seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let seqs = t.await.expect("writer task");
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one writer's seqs must grow"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    let want: Vec<u64> = (1..=(WRITERS * EACH) as u64).collect();
    assert_eq!(all, want);
    let logged: Vec<u64> = store
        .events_since(room_id, Seq::ZERO, 10_000)
        .await
        .expect("since")
        .iter()
        .map(|e| e.seq.get())
        .collect();
    assert_eq!(logged, want);
    assert_eq!(
        store.last_seq(room_id).await.expect("seq"),
        (WRITERS * EACH) as u64
    );
}

/// Writes refused for their own reason (unknown message, not the author)
/// arrive in the same batches as good ones: they fail alone, take no seq,
/// and the good ones are stored.
pub async fn refused_writes_in_a_busy_room_fail_alone(store: Storage) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let room_id = room(&store, &alice, "busy").await;
    let (alices, _) = post(&store, room_id, &alice, "alice's").await;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let (alice, bob) = (alice.clone(), bob.clone());
        tasks.push(tokio::spawn(async move {
            match w % 4 {
                0 => store
                    .edit_message(room_id, bob.id, alices, body("not yours"))
                    .await
                    .map(|e| e.seq),
                1 => store
                    .delete_message(room_id, alice.id, MessageId::new())
                    .await
                    .map(|e| e.seq),
                _ => store
                    .post_message(NewMessage {
                        room_id,
                        author: alice.clone(),
                        body: body(&format!("good {w}")),
                        client_id: None,
                    })
                    .await
                    .map(|p| p.event.seq),
            }
        }));
    }
    let mut seqs = Vec::new();
    for (w, t) in tasks.into_iter().enumerate() {
        let outcome = t.await.expect("writer task");
        match w % 4 {
            0 => assert!(
                matches!(outcome, Err(StorageError::Forbidden)),
                "{outcome:?}"
            ),
            1 => assert!(
                matches!(outcome, Err(StorageError::NotFound)),
                "{outcome:?}"
            ),
            _ => seqs.push(outcome.expect("a good post is stored")),
        }
    }
    seqs.sort_unstable();
    let good = WRITERS / 2;
    assert_eq!(seqs, (2..=good as u64 + 1).collect::<Vec<_>>());
    assert_eq!(store.last_seq(room_id).await.expect("seq"), good as u64 + 1);
    let page = store.history(room_id, None, 100).await.expect("history");
    assert_eq!(page.len(), good + 1);
    assert_eq!(page[0].body, "alice's", "the refused edit changed nothing");
}

/// Several handles on one database, as several server processes have:
/// 64 writers spread over them post and edit in one room, and every seq is
/// taken exactly once, in each writer's order.
/// A socket keeps several writes in flight with `queue_write`; they must
/// commit in the order it queued them, even with other writers busy in the
/// same room, and an edit queued after posts comes after them.
pub async fn queued_writes_commit_in_the_order_queued(store: Storage) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let room_id = room(&store, &alice, "busy").await;
    store
        .add_participant(room_id, bob.id)
        .await
        .expect("add bob");
    let (first, _) = post(&store, room_id, &alice, "first").await;
    let noise = {
        let (store, bob) = (store.clone(), bob.clone());
        tokio::spawn(async move {
            for i in 0..40 {
                post(&store, room_id, &bob, &format!("noise {i}")).await;
            }
        })
    };
    let mut pending = Vec::new();
    for i in 0..40 {
        let op = WriteOp::Post(NewMessage {
            room_id,
            author: alice.clone(),
            body: body(&format!("queued {i}")),
            client_id: None,
        });
        pending.push(store.queue_write(op).await.expect("queued"));
    }
    let edit = WriteOp::Edit {
        room: room_id,
        author: alice.id,
        id: first,
        body: body("edited last"),
    };
    pending.push(store.queue_write(edit).await.expect("queued"));
    let mut seqs = Vec::new();
    for p in pending {
        let outcome = p.await.expect("committed");
        seqs.push(match outcome {
            WriteOutcome::Posted(posted) => posted.event.seq,
            WriteOutcome::Event(event) => event.seq,
        });
    }
    noise.await.expect("noise task");
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "queued writes committed out of order: {seqs:?}"
    );
    assert_eq!(store.last_seq(room_id).await.expect("seq"), 1 + 40 + 40 + 1);
    let refused = store
        .queue_write(WriteOp::Delete {
            room: room_id,
            author: bob.id,
            id: first,
        })
        .await
        .expect("queued")
        .await;
    assert!(
        matches!(refused, Err(StorageError::Forbidden)),
        "{refused:?}"
    );
}

pub async fn several_handles_share_one_sequence(handles: Vec<Storage>) {
    const EACH: usize = 4;
    let first = handles.first().expect("at least one handle").clone();
    let alice = user(&first, "alice").await;
    let room_id = room(&first, &alice, "shared").await;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = handles[w % handles.len()].clone();
        let alice = alice.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..EACH {
                let posted = store
                    .post_message(NewMessage {
                        room_id,
                        author: alice.clone(),
                        body: body(&format!("{w}-{i}")),
                        client_id: Some(
                            ClientId::parse(format!("w{w}-{i}")).expect("valid client id"),
                        ),
                    })
                    .await
                    .expect("post");
                seqs.push(posted.event.seq);
                let edited = store
                    .edit_message(
                        room_id,
                        alice.id,
                        posted.event.message_id(),
                        body(&format!("{w}-{i} edited")),
                    )
                    .await
                    .expect("edit");
                seqs.push(edited.seq);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let seqs = t.await.expect("writer task");
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one writer's seqs must grow"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    let want: Vec<u64> = (1..=(WRITERS * EACH * 2) as u64).collect();
    assert_eq!(all, want);
    for store in &handles {
        let logged: Vec<u64> = store
            .events_since(room_id, Seq::ZERO, 10_000)
            .await
            .expect("since")
            .iter()
            .map(|e| e.seq.get())
            .collect();
        assert_eq!(logged, want, "every handle sees the same log");
    }
}

pub async fn history_pages_backwards_oldest_first(store: Storage) {
    let alice = user(&store, "alice").await;
    let room_id = room(&store, &alice, "general").await;
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(post(&store, room_id, &alice, &format!("m{i}")).await.0);
    }
    let newest = store.history(room_id, None, 10).await.expect("page");
    assert_eq!(
        newest.iter().map(|m| m.id).collect::<Vec<_>>(),
        ids[15..].to_vec()
    );
    let older = store
        .history(room_id, Some(newest[0].id), 10)
        .await
        .expect("page");
    assert_eq!(
        older.iter().map(|m| m.id).collect::<Vec<_>>(),
        ids[5..15].to_vec()
    );
    let oldest = store
        .history(room_id, Some(older[0].id), 10)
        .await
        .expect("page");
    assert_eq!(
        oldest.iter().map(|m| m.id).collect::<Vec<_>>(),
        ids[..5].to_vec()
    );
    let unknown = store.history(room_id, Some(MessageId::new()), 10).await;
    assert!(
        matches!(unknown, Err(StorageError::NotFound)),
        "{unknown:?}"
    );
}

pub async fn seeding_adds_and_never_breaks(store: Storage) {
    let seed = |rooms: usize, members: usize| -> Vec<RoomSeed> {
        (0..rooms)
            .map(|r| {
                let names: Vec<Username> = (0..members)
                    .map(|k| name(&format!("user-{}", r * members + k)))
                    .collect();
                RoomSeed {
                    host: names[0].clone(),
                    slug: slug(&format!("room-{r}")),
                    members: names,
                }
            })
            .collect()
    };
    let first = store.seed_rooms(&seed(2, 3)).await.expect("seed");
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].members.len(), 3);
    assert_eq!(first[0].room.participants_count, 3);
    assert_eq!(first[1].members[0].username, name("user-3"));
    let room0 = first[0].room.id;
    let (msg, _) = post(&store, room0, &first[0].members[0], "before reseed").await;

    let second = store.seed_rooms(&seed(3, 3)).await.expect("reseed");
    assert_eq!(second[0].room.id, room0, "existing rooms are kept");
    assert_eq!(
        second[0].members[0].id, first[0].members[0].id,
        "existing users are kept"
    );
    assert_eq!(second.len(), 3);
    let history = store.history(room0, None, 10).await.expect("history");
    assert_eq!(history.iter().map(|m| m.id).collect::<Vec<_>>(), vec![msg]);
    let ids: HashSet<_> = second
        .iter()
        .flat_map(|r| r.members.iter().map(|m| m.id))
        .collect();
    assert_eq!(ids.len(), 9);
}

pub async fn logins_find_users_by_username_or_email(store: Storage) {
    let alice = store
        .create_user(NewUser {
            username: name("alice"),
            name: "Alice".into(),
            email: Some("Alice@Example.com".into()),
            password_hash: Some("$argon2id$fake".into()),
        })
        .await
        .expect("create");
    for login in ["alice", "alice@example.com", "ALICE@EXAMPLE.COM"] {
        let found = store
            .credentials(login)
            .await
            .expect("lookup")
            .expect("found");
        assert_eq!(found.user, alice, "{login}");
        assert_eq!(found.password_hash.as_deref(), Some("$argon2id$fake"));
    }
    assert!(store.credentials("bob").await.expect("lookup").is_none());
}

pub async fn refresh_tokens_rotate_once_and_replays_revoke_the_family(store: Storage) {
    let alice = user(&store, "alice").await;
    let later =
        Timestamp::from_unix_micros(Timestamp::now().unix_micros() + 3_600_000_000).expect("ts");
    let first = |hash: &str, family: RefreshFamily| NewRefreshToken {
        token_hash: hash.to_owned(),
        user_id: alice.id,
        family,
        expires: later,
    };
    let next = |hash: &str| RotatedRefreshToken {
        token_hash: hash.to_owned(),
        expires: later,
    };
    let family = RefreshFamily::new();
    let owner = RefreshOwner {
        user_id: alice.id,
        family,
    };
    store
        .insert_refresh_token(first("t1", family))
        .await
        .expect("insert");
    assert_eq!(
        store.refresh_token_owner("t1").await.expect("owner"),
        Some(owner)
    );
    assert_eq!(
        store
            .rotate_refresh_token("t1", next("t2"))
            .await
            .expect("rotate"),
        Ok(owner)
    );
    assert_eq!(
        store.refresh_token_owner("t2").await.expect("owner"),
        Some(owner),
        "rotation keeps the user and the family"
    );
    // t1 again: a replay. Refused, and t2 dies with it.
    assert_eq!(
        store
            .rotate_refresh_token("t1", next("t3"))
            .await
            .expect("rotate"),
        Err(RefreshRefusal::Reused)
    );
    assert_eq!(store.refresh_token_owner("t2").await.expect("owner"), None);
    assert_eq!(
        store
            .rotate_refresh_token("t2", next("t4"))
            .await
            .expect("rotate"),
        Err(RefreshRefusal::Reused)
    );
    assert_eq!(
        store
            .rotate_refresh_token("never", next("t5"))
            .await
            .expect("rotate"),
        Err(RefreshRefusal::Unknown)
    );
    // Logout revokes a family.
    let other = RefreshFamily::new();
    store
        .insert_refresh_token(first("o1", other))
        .await
        .expect("insert");
    store.revoke_refresh_family(other).await.expect("revoke");
    assert_eq!(store.refresh_token_owner("o1").await.expect("owner"), None);
}

pub async fn retention_prunes_old_events_but_keeps_messages(store: Storage) {
    let alice = user(&store, "alice").await;
    let room_id = room(&store, &alice, "general").await;
    assert_eq!(store.first_kept_seq(room_id).await.expect("first"), 1);
    post(&store, room_id, &alice, "old").await;
    post(&store, room_id, &alice, "older still kept as a message").await;
    assert_eq!(store.first_kept_seq(room_id).await.expect("first"), 1);
    let cutoff = Timestamp::from_unix_micros(Timestamp::now().unix_micros() + 1).expect("ts");
    assert_eq!(store.prune_events(cutoff).await.expect("prune"), 2);
    assert_eq!(
        store.first_kept_seq(room_id).await.expect("first"),
        3,
        "empty log: last_seq + 1"
    );
    assert_eq!(
        store.log_bounds(room_id).await.expect("bounds"),
        (Seq::new(2), Seq::new(3))
    );
    let (_, seq) = post(&store, room_id, &alice, "new").await;
    assert_eq!(seq, 3, "seq keeps counting after pruning");
    assert_eq!(store.first_kept_seq(room_id).await.expect("first"), 3);
    assert_eq!(
        store.log_bounds(room_id).await.expect("bounds"),
        (Seq::new(3), Seq::new(3))
    );
    assert_eq!(
        store
            .history(room_id, None, 10)
            .await
            .expect("history")
            .len(),
        3
    );
    let since: Vec<u64> = store
        .events_since(room_id, Seq::ZERO, 10)
        .await
        .expect("since")
        .iter()
        .map(|e| e.seq.get())
        .collect();
    assert_eq!(since, vec![3]);
}

/// Rooms spread over every table of the log (PostgreSQL's partitions):
/// retention reaches each, and only what is older than the cutoff.
pub async fn retention_prunes_every_rooms_log(store: Storage) {
    let alice = user(&store, "alice").await;
    let mut rooms = Vec::new();
    for i in 0..24 {
        let room_id = room(&store, &alice, &format!("room-{i}")).await;
        post(&store, room_id, &alice, "old").await;
        rooms.push(room_id);
    }
    let cutoff = Timestamp::from_unix_micros(Timestamp::now().unix_micros() + 1).expect("ts");
    // Posted once the clock has passed the cutoff, the second events are
    // newer than it.
    while Timestamp::now().unix_micros() <= cutoff.unix_micros() {
        tokio::task::yield_now().await;
    }
    for &room_id in &rooms {
        post(&store, room_id, &alice, "kept").await;
    }
    assert_eq!(store.prune_events(cutoff).await.expect("prune"), 24);
    for &room_id in &rooms {
        assert_eq!(
            store.log_bounds(room_id).await.expect("bounds"),
            (Seq::new(2), Seq::new(2)),
            "the old event pruned, the new one kept"
        );
    }
}

async fn unread(store: &Storage, room_id: RoomId, who: &User) -> u64 {
    store
        .read_state(room_id, who.id)
        .await
        .expect("read state")
        .expect("a participant")
        .unread
}

pub async fn read_positions_only_move_forward_up_to_the_last_seq(store: Storage) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let carol = user(&store, "carol").await;
    let room_id = room(&store, &alice, "reading").await;
    store.add_participant(room_id, bob.id).await.expect("add");
    for i in 0..5 {
        post(&store, room_id, &alice, &format!("m{i}")).await;
    }
    let mark = store
        .mark_read(room_id, bob.id, Seq::new(3))
        .await
        .expect("read");
    assert!(mark.moved);
    assert_eq!(
        (mark.state.read_seq, mark.state.last_seq),
        (Seq::new(3), Seq::new(5))
    );
    assert_eq!(mark.state.unread, 2);
    let back = store
        .mark_read(room_id, bob.id, Seq::new(2))
        .await
        .expect("read");
    assert!(!back.moved, "a read position never moves back");
    assert_eq!(back.state.read_seq, 3);
    let same = store
        .mark_read(room_id, bob.id, Seq::new(3))
        .await
        .expect("read");
    assert!(!same.moved);
    let past = store
        .mark_read(room_id, bob.id, Seq::new(1_000))
        .await
        .expect("read");
    assert!(past.moved);
    assert_eq!(past.state.read_seq, 5, "clamped to the room's last seq");
    assert_eq!(past.state.unread, 0);
    let huge = store
        .mark_read(room_id, bob.id, Seq::new(u64::MAX))
        .await
        .expect("read");
    assert!(!huge.moved);
    assert!(matches!(
        store.mark_read(room_id, carol.id, Seq::new(1)).await,
        Err(StorageError::NotFound)
    ));
    assert_eq!(
        store.read_state(room_id, carol.id).await.expect("state"),
        None
    );
    // Durable: another look at the database sees the same position.
    assert_eq!(
        store
            .read_state(room_id, bob.id)
            .await
            .expect("state")
            .map(|s| s.read_seq),
        Some(Seq::new(5))
    );
}

pub async fn unread_counts_live_messages_of_others_through_edits_and_deletes(store: Storage) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let room_id = room(&store, &alice, "counting").await;
    store.add_participant(room_id, bob.id).await.expect("add");
    let (a1, _) = post(&store, room_id, &alice, "a1").await;
    let (_b1, _) = post(&store, room_id, &bob, "b1").await;
    let (a2, _) = post(&store, room_id, &alice, "a2").await;
    let (a3, s3) = post(&store, room_id, &alice, "a3").await;
    assert_eq!(
        unread(&store, room_id, &bob).await,
        3,
        "others' messages only"
    );
    assert_eq!(unread(&store, room_id, &alice).await, 1);

    store
        .edit_message(room_id, alice.id, a3, body("a3 edited"))
        .await
        .expect("edit");
    assert_eq!(
        unread(&store, room_id, &bob).await,
        3,
        "an edit is not a new unread message"
    );
    store.mark_read(room_id, bob.id, s3).await.expect("read");
    assert_eq!(unread(&store, room_id, &bob).await, 0);

    // Deleting a read message leaves the count; deleting an unread one lowers it.
    store
        .delete_message(room_id, alice.id, a1)
        .await
        .expect("delete");
    assert_eq!(unread(&store, room_id, &bob).await, 0);
    let (a4, _) = post(&store, room_id, &alice, "a4").await;
    post(&store, room_id, &alice, "a5").await;
    assert_eq!(unread(&store, room_id, &bob).await, 2);
    store
        .delete_message(room_id, alice.id, a4)
        .await
        .expect("delete");
    assert_eq!(unread(&store, room_id, &bob).await, 1);
    // A message of my own being deleted changes nothing for me.
    store
        .delete_message(room_id, alice.id, a2)
        .await
        .expect("delete");
    assert_eq!(unread(&store, room_id, &alice).await, 1);
    assert_eq!(unread(&store, room_id, &bob).await, 1);

    // Someone who leaves and comes back has read nothing, but has seen
    // their own messages.
    store
        .remove_participant(room_id, bob.id)
        .await
        .expect("remove");
    store.add_participant(room_id, bob.id).await.expect("add");
    let state = store
        .read_state(room_id, bob.id)
        .await
        .expect("state")
        .expect("a participant");
    assert_eq!(state.read_seq, 0);
    assert_eq!(state.unread, 2, "a3 and a5; b1 is bob's own");
}

pub async fn unread_counts_stay_exact_under_batched_writes(store: Storage) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let rooms = [
        room(&store, &alice, "one").await,
        room(&store, &alice, "two").await,
    ];
    let mut old = Vec::new();
    for room_id in rooms {
        store.add_participant(room_id, bob.id).await.expect("add");
        for i in 0..4 {
            old.push((
                room_id,
                post(&store, room_id, &alice, &format!("old {i}")).await.0,
            ));
        }
        store
            .mark_read(room_id, bob.id, Seq::new(2))
            .await
            .expect("read");
    }
    // Posts by both, edits and deletes of read and unread messages, queued
    // together so that backends batch them into shared commits.
    let mut pending = Vec::new();
    for i in 0..30 {
        for room_id in rooms {
            let author = if i % 3 == 0 { &bob } else { &alice };
            pending.push(
                store
                    .queue_write(WriteOp::Post(NewMessage {
                        room_id,
                        author: author.clone(),
                        body: body(&format!("new {i}")),
                        client_id: None,
                    }))
                    .await
                    .expect("queued"),
            );
        }
    }
    for (room_id, id) in &old {
        pending.push(
            store
                .queue_write(WriteOp::Delete {
                    room: *room_id,
                    author: alice.id,
                    id: *id,
                })
                .await
                .expect("queued"),
        );
    }
    for p in pending {
        p.await.expect("committed");
    }
    for room_id in rooms {
        // Alice's 20 new ones are unread for bob; the old ones are gone.
        assert_eq!(unread(&store, room_id, &bob).await, 20);
        // Bob's 10 are unread for alice, who never read anything.
        assert_eq!(unread(&store, room_id, &alice).await, 10);
        let history = store.history(room_id, None, 100).await.expect("history");
        let others_after = |who: UserId, after: Seq| {
            history
                .iter()
                .filter(|m| m.user_id != who && m.seq > after)
                .count() as u64
        };
        let bob_state = store
            .read_state(room_id, bob.id)
            .await
            .expect("state")
            .expect("a participant");
        assert_eq!(bob_state.unread, others_after(bob.id, bob_state.read_seq));
    }
}

pub async fn room_lists_carry_each_rooms_read_state(store: Storage) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let quiet = room(&store, &alice, "quiet").await;
    let busy = room(&store, &alice, "busy").await;
    let elsewhere = room(&store, &bob, "elsewhere").await;
    store.add_participant(busy, bob.id).await.expect("add");
    for i in 0..3 {
        post(&store, busy, &bob, &format!("b{i}")).await;
    }
    post(&store, elsewhere, &bob, "not alice's").await;
    store
        .mark_read(busy, alice.id, Seq::new(1))
        .await
        .expect("read");
    let list = store.room_list(alice.id).await.expect("list");
    let got: Vec<_> = list
        .iter()
        .map(|l| {
            (
                l.room.id,
                l.read.last_seq.get(),
                l.read.read_seq.get(),
                l.read.unread,
            )
        })
        .collect();
    assert_eq!(got, vec![(busy, 3, 1, 2), (quiet, 0, 0, 0)], "newest first");
    assert_eq!(list[0].room.participants_count, 2);
    let rooms_of: Vec<_> = store
        .rooms_of(alice.id)
        .await
        .expect("rooms")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(rooms_of, vec![busy, quiet]);
}

pub async fn rooms_keep_the_visibility_they_were_made_with(store: Storage) {
    let alice = user(&store, "alice").await;
    let open = store
        .create_room(NewRoom {
            host: alice.id,
            slug: slug("open"),
            name: "Open".into(),
            description: String::new(),
            visibility: Visibility::Public,
        })
        .await
        .expect("create room");
    assert_eq!(open.visibility, Visibility::Public);
    room(&store, &alice, "closed").await;
    let found = store
        .room_by_address(&alice.username, &slug("closed"))
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(found.visibility, Visibility::Private);
    let admission = store
        .admission(alice.id, &alice.username, &slug("open"))
        .await
        .expect("admission");
    assert_eq!(
        admission.room.map(|r| r.visibility),
        Some(Visibility::Public)
    );
}

pub async fn removed_participants_are_banned_until_the_host_adds_them(store: Storage) {
    let alice = user(&store, "alice").await;
    let bob = user(&store, "bob").await;
    let room_id = room(&store, &alice, "general").await;
    assert!(!store.ban_participant(room_id, bob.id).await.expect("ban"));
    assert!(
        !store.is_banned(room_id, bob.id).await.expect("banned?"),
        "not a participant: no ban"
    );
    store.add_participant(room_id, bob.id).await.expect("join");
    assert!(store.ban_participant(room_id, bob.id).await.expect("ban"));
    assert!(
        !store
            .is_participant(room_id, bob.id)
            .await
            .expect("participant?")
    );
    assert!(store.is_banned(room_id, bob.id).await.expect("banned?"));
    assert!(
        store
            .readmit_participant(room_id, bob.id)
            .await
            .expect("readmit")
    );
    assert!(
        store
            .is_participant(room_id, bob.id)
            .await
            .expect("participant?")
    );
    assert!(!store.is_banned(room_id, bob.id).await.expect("banned?"));
    assert!(
        !store
            .readmit_participant(room_id, bob.id)
            .await
            .expect("again")
    );
    let nobody = UserId::new();
    assert!(matches!(
        store.readmit_participant(room_id, nobody).await,
        Err(StorageError::NotFound)
    ));
}

pub async fn revoked_sessions_are_shared_until_they_expire(store: Storage) {
    let start = Timestamp::now();
    let later = |secs: i64| {
        Timestamp::from_unix_micros(start.unix_micros() + secs * 1_000_000).expect("in range")
    };
    let (live, gone) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    store
        .revoke_session(live, later(600))
        .await
        .expect("revoke");
    store
        .revoke_session(live, later(600))
        .await
        .expect("twice is fine");
    store.revoke_session(gone, later(-1)).await.expect("revoke");
    let since = Timestamp::from_unix_micros(start.unix_micros() - 1_000_000).expect("in range");
    let seen: Vec<_> = store
        .revoked_sessions_since(since)
        .await
        .expect("poll")
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(seen, vec![live], "expired revocations are not served");
    assert!(
        store
            .revoked_sessions_since(later(60))
            .await
            .expect("poll")
            .is_empty()
    );
    assert_eq!(
        store
            .prune_revoked_sessions(Timestamp::now())
            .await
            .expect("prune"),
        1
    );
}

fn service_key(key_name: &str, hash: &str, scopes: &[Scope]) -> NewServiceKey {
    NewServiceKey {
        name: name(key_name),
        key_hash: hash.to_owned(),
        scopes: Scopes::new(scopes.iter().copied()).expect("test scopes are not empty"),
    }
}

pub async fn service_keys_are_found_by_hash_until_revoked(store: Storage) {
    let deploy = store
        .create_service_key(service_key("deploy-bot", "h1", &[Scope::Publish]))
        .await
        .expect("create");
    let reader = store
        .create_service_key(service_key("audit", "h2", &[Scope::Read, Scope::Publish]))
        .await
        .expect("create");
    assert_eq!(deploy.bot.username, name("deploy-bot"));
    assert_eq!(deploy.revoked, None);
    assert_eq!(
        store.live_service_key("h1").await.expect("find"),
        Some(deploy.clone())
    );
    assert_eq!(
        store
            .live_service_key("h2")
            .await
            .expect("find")
            .map(|k| k.scopes.to_string()),
        Some("publish read".to_owned())
    );
    assert_eq!(store.live_service_key("nope").await.expect("find"), None);
    // The bot is an account nobody can log in to.
    let login = store
        .credentials("deploy-bot")
        .await
        .expect("lookup")
        .expect("the bot user exists");
    assert_eq!(login.user, deploy.bot);
    assert_eq!(login.password_hash, None);

    assert!(
        store
            .revoke_service_key(&name("deploy-bot"))
            .await
            .expect("revoke")
    );
    assert!(
        !store
            .revoke_service_key(&name("deploy-bot"))
            .await
            .expect("again"),
        "revoking twice changes nothing"
    );
    assert!(matches!(
        store.revoke_service_key(&name("nobody")).await,
        Err(StorageError::NotFound)
    ));
    assert_eq!(
        store.live_service_key("h1").await.expect("find"),
        None,
        "a revoked key is not live"
    );
    let listed = store.service_keys().await.expect("list");
    let names: Vec<&str> = listed.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["audit", "deploy-bot"], "revoked keys stay listed");
    assert!(listed[1].revoked.is_some());
    assert_eq!(listed[0], reader);
}

pub async fn service_key_names_are_usernames_nobody_else_has(store: Storage) {
    user(&store, "alice").await;
    assert!(matches!(
        store
            .create_service_key(service_key("alice", "h1", &[Scope::Publish]))
            .await,
        Err(StorageError::Conflict("username"))
    ));
    store
        .create_service_key(service_key("bot", "h2", &[Scope::Publish]))
        .await
        .expect("create");
    store
        .revoke_service_key(&name("bot"))
        .await
        .expect("revoke");
    assert!(
        matches!(
            store
                .create_service_key(service_key("bot", "h3", &[Scope::Publish]))
                .await,
            Err(StorageError::Conflict("username"))
        ),
        "a revoked key keeps its name"
    );
    assert!(
        store.service_keys().await.expect("list").len() == 1,
        "a refused key leaves no trace"
    );
    assert!(store.live_service_key("h1").await.expect("find").is_none());
}

pub async fn service_key_bots_post_without_taking_part(store: Storage) {
    let alice = user(&store, "alice").await;
    let room_id = room(&store, &alice, "news").await;
    let key = store
        .create_service_key(service_key("deploy-bot", "h1", &[Scope::Publish]))
        .await
        .expect("create");
    let (_, seq) = post(&store, room_id, &alice, "hi").await;
    let (id, bot_seq) = post(&store, room_id, &key.bot, "deployed").await;
    assert_eq!(bot_seq.get(), seq.get() + 1);
    assert!(
        !store
            .is_participant(room_id, key.bot.id)
            .await
            .expect("check")
    );
    store
        .edit_message(room_id, key.bot.id, id, body("deployed v2"))
        .await
        .expect("the bot edits its own message");
    let state = store
        .read_state(room_id, alice.id)
        .await
        .expect("read state")
        .expect("alice takes part");
    assert_eq!(state.unread, 1, "the bot's message is unread for alice");
}
