//! Embedding, as an embedder writes it (public API only): two Roomcast
//! apps in one process, on one database and one shared in-memory channel
//! layer (the "swap the layer in tests" use of `InMemoryBus`, standing in
//! for the Redis a fleet shares). An event published by one app's
//! `Publisher` reaches the sockets of the other, and a socket's message on
//! the other reaches the first: the same path as between real nodes.

use std::net::SocketAddr;
use std::sync::Arc;

use roomcast_broadcast::{HubConfig, InMemoryBus};
use roomcast_domain::{ClientId, MessageBody, RoomSlug, User, Username, Visibility};
use roomcast_storage::{NewRoom, NewUser, Storage, StorageError};
use roomcast_transport::{AppState, JwtKeys, TransportConfig, hub_builder};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::harness::Ws;

const SECRET: &[u8] = b"one secret for every app of the fleet";

/// One embedded app: Roomcast's state on a node of `bus`, served on a
/// random port until dropped.
struct Embedded {
    state: AppState,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<std::io::Result<()>>>,
}

impl Embedded {
    async fn start(database_url: &str, bus: &InMemoryBus) -> Self {
        let storage = roomcast_storage::connect(database_url)
            .await
            .expect("storage");
        let builder = hub_builder(&storage, HubConfig::default());
        let layer = bus.node(builder.inbox());
        let hub = builder.build(Arc::new(layer));
        let state = AppState::new(
            storage,
            hub,
            JwtKeys::new(SECRET),
            TransportConfig::default(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(roomcast_transport::serve(
            listener,
            state.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            state,
            addr,
            stop: Some(stop),
            served: Some(served),
        }
    }

    async fn socket(&self, user: &User, slug: &str) -> Ws {
        let token = JwtKeys::new(SECRET)
            .sign(user, time::Duration::hours(1))
            .expect("sign");
        let url = format!("ws://{}/ws/chat/alice/{slug}", self.addr);
        Ws::connect(&url, &[("Cookie", &format!("JWT={token}"))])
            .await
            .expect("the socket opens")
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.expect("joined").expect("served");
        }
    }
}

async fn person(storage: &Storage, name: &str) -> User {
    storage
        .create_user(NewUser {
            username: Username::parse(name).expect("valid"),
            name: name.to_uppercase(),
            email: None,
            password_hash: None,
        })
        .await
        .expect("user")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_embedded_apps_share_rooms_through_one_in_memory_layer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("chat.db").display());
    let bus = InMemoryBus::new();
    let one = Embedded::start(&url, &bus).await;
    let two = Embedded::start(&url, &bus).await;

    let storage = one.state.storage();
    let alice = person(storage, "alice").await;
    let bob = person(storage, "bob").await;
    let room = storage
        .create_room(NewRoom {
            host: alice.id,
            slug: RoomSlug::parse("launch").expect("valid"),
            name: "Launch".into(),
            description: String::new(),
            visibility: Visibility::Private,
        })
        .await
        .expect("room");
    storage
        .add_participant(room.id, bob.id)
        .await
        .expect("bob joins");

    let mut alice_on_one = one.socket(&alice, "launch").await;
    let mut bob_on_two = two.socket(&bob, "launch").await;

    // App one's own code publishes; app two's socket hears it.
    let publisher = one.state.publisher();
    let body = |s: &str| MessageBody::parse(s).expect("valid");
    let countdown = ClientId::parse("countdown-1").expect("valid");
    let posted = publisher
        .post(room.id, &alice, body("T minus 10"), Some(countdown.clone()))
        .await
        .expect("posted");
    assert!(!posted.duplicate);
    let heard = bob_on_two.next_json().await;
    assert_eq!(
        (
            &heard["action"],
            &heard["user"],
            &heard["body"],
            &heard["seq"]
        ),
        (
            &json!("new"),
            &json!("alice"),
            &json!("T minus 10"),
            &json!(1)
        ),
    );
    assert_eq!(alice_on_one.next_json().await["seq"], 1);
    // The same clientId again: the original, nothing new for anyone.
    let again = publisher
        .post(room.id, &alice, body("T minus 10"), Some(countdown))
        .await
        .expect("posted");
    assert!(again.duplicate);
    assert_eq!(again.event, posted.event);

    // A person on app two; app one's socket hears it, next in seq.
    bob_on_two
        .send_json(json!({"type": "text", "message": "go", "clientId": "b-1"}))
        .await;
    let heard = alice_on_one.next_json().await;
    assert_eq!((&heard["user"], &heard["seq"]), (&json!("bob"), &json!(2)));
    assert_eq!(bob_on_two.next_json().await["seq"], 2);

    // Edits and deletes go the same way.
    let id = posted.event.message_id();
    publisher
        .edit(room.id, alice.id, id, body("T minus 9"))
        .await
        .expect("edited");
    let heard = bob_on_two.next_json().await;
    assert_eq!(
        (&heard["action"], &heard["seq"]),
        (&json!("update"), &json!(3))
    );
    // Only its author deletes it, whichever app asks.
    let refused = two.state.publisher().delete(room.id, bob.id, id).await;
    assert!(
        matches!(refused, Err(StorageError::Forbidden)),
        "{refused:?}"
    );
    publisher
        .delete(room.id, alice.id, id)
        .await
        .expect("deleted");
    let heard = bob_on_two.next_json().await;
    assert_eq!(
        (&heard["action"], &heard["seq"]),
        (&json!("delete"), &json!(4))
    );

    drop((alice_on_one, bob_on_two));
    one.stop().await;
    two.stop().await;
}
