//! `/api/docs`: the OpenAPI document as a page, with Swagger UI's assets
//! embedded in the binary (vendored from `swagger-ui-dist`, see
//! `assets/swagger-ui/README.md`): nothing is loaded from a CDN.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use crate::ApiError;

const INDEX: &str = include_str!("../../assets/swagger-ui/index.html");
const INIT: &str = include_str!("../../assets/swagger-ui/init.js");
const BUNDLE: &str = include_str!("../../assets/swagger-ui/swagger-ui-bundle.js");
const CSS: &str = include_str!("../../assets/swagger-ui/swagger-ui.css");

/// A page to read and try this API (Swagger UI, served by this server).
#[utoipa::path(get, path = "/api/docs", tag = "operations", operation_id = "apiDocs", security(()),
    responses((status = 200, description = "An HTML page", body = String, content_type = "text/html")))]
pub(crate) async fn page() -> Response {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}

/// The page's scripts and style sheet.
#[utoipa::path(get, path = "/api/docs/{file}", tag = "operations", operation_id = "apiDocsAsset", security(()),
    params(("file" = String, Path, description = "`swagger-ui-bundle.js`, `swagger-ui.css` or `init.js`")),
    responses((status = 200, description = "The file", body = String, content_type = "text/javascript"),
        (status = 404, body = crate::ErrorBody, description = "No such file")))]
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    let (content_type, body) = match name.as_str() {
        "swagger-ui-bundle.js" => ("text/javascript; charset=utf-8", BUNDLE),
        "swagger-ui.css" => ("text/css; charset=utf-8", CSS),
        "init.js" => ("text/javascript; charset=utf-8", INIT),
        _ => return ApiError::not_found("No such file.").into_response(),
    };
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}
