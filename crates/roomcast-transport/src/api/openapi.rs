//! The OpenAPI document, generated from the handlers' annotations and
//! completed by [`Conventions`] with what every operation shares: the
//! security schemes, and the error answers that the extractors and layers
//! give on every route (so no annotation has to repeat them, and none can
//! forget them).
//!
//! Adding a route: annotate its handler with `#[utoipa::path(...)]` (a doc
//! comment for the summary, an `operation_id`, `security(())` if it needs
//! no login) and list it in `paths(...)` below. The test
//! `every_route_of_the_router_is_documented` fails until you do.

use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, Ref, RefOr, Required, Response};
use utoipa::{Modify, OpenApi};

use super::{accounts, dto, messages, presence, reads, rooms};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Roomcast",
        description = "Real-time room chat: the HTTP API. The WebSocket frames are described in docs/protocol.md. \
Authenticate with the `JWT` cookie set by login, or `Authorization: Bearer <token>`. \
Programs that publish into rooms use a service key (`roomcast keys create NAME --scope publish`) \
as `Authorization: Bearer rk_...`: the message endpoints take it, as its bot user, in any room. \
Every error is `{\"error\": \"...\", \"code\": \"...\"}` with a code from `ErrorCode`."
    ),
    modifiers(&Conventions),
    security(("bearer" = []), ("cookie" = [])),
    tags(
        (name = "accounts", description = "Sign-up, login and tokens"),
        (name = "rooms", description = "Rooms and participants"),
        (name = "messages", description = "History and posting"),
        (name = "websocket", description = "The chat socket's handshake"),
        (name = "operations", description = "Health, metrics and this document"),
    ),
    paths(
        accounts::register,
        accounts::login,
        accounts::refresh,
        accounts::logout,
        accounts::me,
        rooms::create,
        rooms::list,
        rooms::get_one,
        rooms::join,
        rooms::leave,
        rooms::add_participant,
        rooms::remove_participant,
        messages::history,
        messages::post,
        messages::edit,
        messages::delete,
        presence::presence,
        reads::mark_read,
        crate::http::healthz,
        crate::http::readyz,
        crate::http::metrics,
        crate::handshake::ws_chat_doc,
        crate::user_feed::ws_user_doc,
        document,
        super::docs::page,
        super::docs::asset,
    ),
    components(schemas(
        crate::ErrorCode,
        dto::ErrorBody,
        dto::UserDto,
        dto::RoomDto,
        dto::RoomDetailDto,
        dto::MessageDto,
        dto::HistoryDto,
        dto::RegisterRequest,
        dto::LoginRequest,
        dto::AuthResponse,
        dto::RefreshRequest,
        dto::TokenPair,
        dto::LogoutRequest,
        dto::CreateRoomRequest,
        dto::PostMessageRequest,
        dto::EditMessageRequest,
        dto::EditedDto,
        dto::DeletedDto,
        presence::PresenceDto,
        dto::RoomListingDto,
        dto::ReadRequest,
        dto::ReadStateDto,
    ))
)]
pub(crate) struct ApiDoc;

/// The whole document, as served.
pub(crate) fn spec() -> Document {
    ApiDoc::openapi()
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations", operation_id = "openapi",
    security(()), responses((status = 200, description = "This document", body = Object)))]
pub(crate) async fn document() -> Json<Document> {
    Json(spec())
}

/// What every operation shares, added after the annotations.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An access token from login, register or refresh."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "serviceKey",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("rk_ service key")
                    .description(Some(
                        "A service key made with `roomcast keys create NAME --scope publish` \
                         (shown once; stored hashed; `roomcast keys revoke NAME` ends it): \
                         `Authorization: Bearer rk_...`. It acts as its bot user NAME, in any \
                         room, on the endpoints that list it with the scope they need \
                         (`publish`: post, edit, delete; `read`: history). An unknown or \
                         revoked key gets 401; a key without the scope, or on any other \
                         endpoint, 403 `insufficient_scope`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "JWT",
                "The HttpOnly cookie that login and register set.",
            ))),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                complete(path, operation);
            }
        }
    }
}

/// Adds the error answers an operation can give whatever its handler
/// says, and gives every error answer the one error body.
fn complete(path: &str, operation: &mut Operation) {
    // `security(())` in an annotation: no login needed.
    let public = operation
        .security
        .as_ref()
        .is_some_and(|s| s.iter().all(|r| *r == Default::default()));
    let mut add = |status: &str, description: &str| {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(Response::new(description)));
    };
    if !public {
        add("401", "Missing, invalid or expired credentials");
        add(
            "403",
            "Not allowed; a service key gets `insufficient_scope` here",
        );
    }
    if let Some(body) = &operation.request_body {
        // An optional body is read leniently: only its size is checked.
        if body.required == Some(Required::True) {
            add(
                "400",
                "The body is not valid JSON or not of the expected shape",
            );
            add("415", "The body is not `Content-Type: application/json`");
        }
        add("413", "The body is over the size limit");
    }
    let uses_storage = (path.starts_with("/api/")
        && path != "/api/openapi.json"
        && !path.starts_with("/api/docs"))
        || path.starts_with("/ws/");
    if uses_storage {
        add("503", "Storage is unavailable; nothing was done, try again");
    }
    for (status, response) in operation.responses.responses.iter_mut() {
        let is_error = status.starts_with('4') || status.starts_with('5');
        if let (true, RefOr::T(response)) = (is_error, response) {
            response.content.insert(
                "application/json".to_owned(),
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operations(doc: &Document) -> Vec<(String, String, &Operation)> {
        let mut all = Vec::new();
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                ("get", &item.get),
                ("put", &item.put),
                ("post", &item.post),
                ("delete", &item.delete),
                ("patch", &item.patch),
            ] {
                if let Some(op) = op {
                    all.push((method.to_owned(), path.clone(), op));
                }
            }
        }
        all
    }

    #[test]
    fn every_operation_has_a_summary_a_unique_id_and_error_bodies() {
        let doc = spec();
        let mut ids = std::collections::HashSet::new();
        for (method, path, op) in operations(&doc) {
            let at = format!("{} {path}", method.to_uppercase());
            assert!(
                op.summary.as_deref().is_some_and(|s| !s.is_empty()),
                "{at}: give its handler a doc comment (its first line is the summary)"
            );
            let id = op.operation_id.clone().unwrap_or_default();
            assert!(
                ids.insert(id.clone()),
                "{at}: operation id {id:?} is used twice"
            );
            for (status, response) in &op.responses.responses {
                if !(status.starts_with('4') || status.starts_with('5')) {
                    continue;
                }
                let RefOr::T(response) = response else {
                    panic!("{at}: {status} is a reference")
                };
                assert!(
                    response.content.contains_key("application/json"),
                    "{at}: {status} has no error body"
                );
            }
        }
    }

    #[test]
    fn service_keys_are_documented_on_the_message_endpoints_with_their_scope() {
        let json = serde_json::to_value(spec()).expect("serializes");
        assert_eq!(
            json["components"]["securitySchemes"]["serviceKey"]["scheme"],
            "bearer"
        );
        let messages = "/api/rooms/{host}/{slug}/messages";
        let message = "/api/rooms/{host}/{slug}/messages/{id}";
        for (path, method, scope) in [
            (messages, "get", "read"),
            (messages, "post", "publish"),
            (message, "patch", "publish"),
            (message, "delete", "publish"),
        ] {
            let security = json["paths"][path][method]["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} has no security"));
            assert!(
                security
                    .iter()
                    .any(|r| r["serviceKey"] == serde_json::json!([scope])),
                "{method} {path}: {security:?}"
            );
        }
        let me = &json["paths"]["/api/me"]["get"];
        assert!(
            me["security"].is_null(),
            "people only: the document's default"
        );
    }

    #[test]
    fn history_pages_are_optional_query_parameters() {
        let json = serde_json::to_value(spec()).expect("serializes");
        let params = &json["paths"]["/api/rooms/{host}/{slug}/messages"]["get"]["parameters"];
        let params = params.as_array().expect("parameters");
        for name in ["before", "limit"] {
            let p = params
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(p["in"], "query", "{name}");
            assert_eq!(p["required"], false, "{name}");
        }
        assert_eq!(
            json["components"]["securitySchemes"]["cookie"]["in"],
            "cookie"
        );
        assert_eq!(
            json["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
