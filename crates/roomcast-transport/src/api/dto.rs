//! Request and response bodies of the HTTP API, with their OpenAPI schemas.
//! Domain values are converted to these shapes here, not serialized as-is.

use roomcast_domain::wire::{DeleteFrame, NewFrame, UpdateFrame};
use roomcast_domain::{Message, Room, Seq, User};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub(crate) use crate::error::ErrorBody;

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserDto {
    pub id: String,
    pub username: String,
    pub name: String,
    pub avatar: Option<String>,
}

impl From<&User> for UserDto {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.to_string(),
            username: u.username.to_string(),
            name: u.name.clone(),
            avatar: u.avatar.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RoomDto {
    pub id: String,
    pub host: String,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub created: String,
    pub updated: String,
    pub participants_count: u64,
    /// `public` or `private`.
    #[schema(example = "private")]
    pub visibility: &'static str,
}

impl From<&Room> for RoomDto {
    fn from(r: &Room) -> Self {
        Self {
            id: r.id.to_string(),
            host: r.host.to_string(),
            slug: r.slug.to_string(),
            name: r.name.clone(),
            description: r.description.clone(),
            created: r.created.to_string(),
            updated: r.updated.to_string(),
            participants_count: r.participants_count,
            visibility: r.visibility.as_str(),
        }
    }
}

/// A room with who is in it and where its event log stands.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RoomDetailDto {
    #[serde(flatten)]
    pub room: RoomDto,
    pub participants: Vec<UserDto>,
    #[schema(value_type = u64)]
    pub last_seq: Seq,
}

/// A room of `GET /api/rooms`: the room, where its event log stands and
/// what the caller has read of it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RoomListingDto {
    #[serde(flatten)]
    pub room: RoomDto,
    /// The room's latest seq.
    #[schema(value_type = u64)]
    pub last_seq: Seq,
    /// The caller's read position (`read` frame, `PUT .../read`).
    #[schema(value_type = u64)]
    pub read_seq: Seq,
    /// Messages of others after `read_seq` that are not deleted.
    pub unread: u64,
}

impl From<&roomcast_storage::RoomListing> for RoomListingDto {
    fn from(l: &roomcast_storage::RoomListing) -> Self {
        Self {
            room: RoomDto::from(&l.room),
            last_seq: l.read.last_seq,
            read_seq: l.read.read_seq,
            unread: l.read.unread,
        }
    }
}

/// `PUT /api/rooms/{host}/{slug}/read`: read up to `seq`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct ReadRequest {
    #[schema(value_type = u64)]
    pub seq: Seq,
}

/// The caller's read state in a room after `PUT .../read`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReadStateDto {
    #[schema(value_type = u64)]
    pub last_seq: Seq,
    /// Only moves forward, at most `last_seq`.
    #[schema(value_type = u64)]
    pub read_seq: Seq,
    pub unread: u64,
}

impl From<roomcast_storage::ReadState> for ReadStateDto {
    fn from(s: roomcast_storage::ReadState) -> Self {
        Self {
            last_seq: s.last_seq,
            read_seq: s.read_seq,
            unread: s.unread,
        }
    }
}

/// A message: the `new` frame's fields without `type` and `action`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MessageDto {
    pub id: String,
    pub user: String,
    pub user_id: String,
    pub body: String,
    pub created: String,
    pub edited: bool,
    pub updated: String,
    #[serde(rename = "userAvatar")]
    pub user_avatar: Option<String>,
    #[schema(value_type = u64)]
    pub seq: Seq,
    #[serde(rename = "clientId", skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl From<NewFrame> for MessageDto {
    fn from(f: NewFrame) -> Self {
        Self {
            id: f.id.to_string(),
            user: f.user.to_string(),
            user_id: f.user_id.to_string(),
            body: f.body,
            created: f.created.to_string(),
            edited: f.edited,
            updated: f.updated.to_string(),
            user_avatar: f.user_avatar,
            seq: f.seq,
            client_id: f.client_id,
        }
    }
}

impl From<&Message> for MessageDto {
    fn from(m: &Message) -> Self {
        NewFrame::from_message(m).into()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HistoryDto {
    /// Oldest first within the page.
    pub messages: Vec<MessageDto>,
    #[schema(value_type = u64)]
    pub last_seq: Seq,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct RegisterRequest {
    pub username: String,
    pub email: String,
    pub password: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// Log in with `username` or `email` (or `login`, either one).
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct LoginRequest {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub login: Option<String>,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuthResponse {
    pub user: UserDto,
    /// Access token (also set as the `JWT` cookie).
    pub token: String,
    pub refresh: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct RefreshRequest {
    pub refresh: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TokenPair {
    pub token: String,
    pub refresh: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub(crate) struct LogoutRequest {
    #[serde(default)]
    pub refresh: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CreateRoomRequest {
    pub name: String,
    #[serde(default)]
    pub slug: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// `private` (default: only the host adds participants; the room is 404
    /// to everyone else) or `public` (anyone may join, but users the host
    /// removed).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "private")]
    pub visibility: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct PostMessageRequest {
    pub body: String,
    #[serde(rename = "clientId", default)]
    pub client_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct EditMessageRequest {
    pub body: String,
}

/// An edited message: the `update` frame's fields without `type` and
/// `action`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EditedDto {
    pub id: String,
    pub body: String,
    pub edited: bool,
    pub updated: String,
    #[schema(value_type = u64)]
    pub seq: Seq,
}

impl From<UpdateFrame> for EditedDto {
    fn from(f: UpdateFrame) -> Self {
        Self {
            id: f.id.to_string(),
            body: f.body,
            edited: f.edited,
            updated: f.updated.to_string(),
            seq: f.seq,
        }
    }
}

/// A deleted message: the `delete` frame's fields without `type` and
/// `action`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeletedDto {
    pub id: String,
    #[schema(value_type = u64)]
    pub seq: Seq,
}

impl From<DeleteFrame> for DeletedDto {
    fn from(f: DeleteFrame) -> Self {
        Self {
            id: f.id.to_string(),
            seq: f.seq,
        }
    }
}
