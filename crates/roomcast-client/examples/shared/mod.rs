//! What both examples do once connected: post one message, print what
//! arrives for a while, then how far the room got. Shared by `mod shared;`
//! (a folder without `main.rs` is not an example of its own).

use std::time::Duration;

use roomcast_client::{Client, ClientConfig, ClientEvent};
use roomcast_domain::wire::{ChatMessage, ServerFrame};

/// Connects with `config`, posts `text`, prints every event for `listen`,
/// then closes.
pub async fn post_and_listen(
    config: ClientConfig,
    text: &str,
    listen: Duration,
) -> anyhow::Result<()> {
    let (client, mut events) = Client::connect(config);
    let client_id = client.send(text).await?;
    println!("sent {text:?} as clientId {client_id}");
    let print = async {
        while let Some(event) = events.next().await {
            match event {
                ClientEvent::Frame(ServerFrame::Message(ChatMessage::New(m))) => {
                    println!("#{} {}: {}", m.seq, m.user, m.body);
                }
                ClientEvent::Frame(other) => println!("{other:?}"),
                ClientEvent::Error(e) => println!("error: {}", e.error),
                ClientEvent::Status(s) => println!("status: {s:?}"),
                ClientEvent::Lagged(n) => println!("(missed {n} events)"),
            }
        }
    };
    let _ = tokio::time::timeout(listen, print).await;
    println!(
        "{} messages in the room, last seq {}",
        client.messages().len(),
        client.last_seq()
    );
    client.close().await;
    Ok(())
}
