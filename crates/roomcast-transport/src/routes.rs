//! The route table: axum's router plus the list of its paths, so that a
//! test can hold every route against the OpenAPI document (axum cannot
//! list a router's routes). Build routes with [`Routes::route`] exactly as
//! with `Router::route`.

use axum::Router;
use axum::routing::MethodRouter;

use crate::AppState;

#[derive(Debug, Default)]
pub(crate) struct Routes {
    router: Router<AppState>,
    paths: Vec<&'static str>,
}

impl Routes {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// `Router::route`, remembering the path.
    pub(crate) fn route(mut self, path: &'static str, handler: MethodRouter<AppState>) -> Self {
        self.router = self.router.route(path, handler);
        self.paths.push(path);
        self
    }

    /// `Router::merge`, keeping both tables' paths.
    pub(crate) fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.paths.extend(other.paths);
        self
    }

    /// Every path routed, as written (`{param}` placeholders).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn paths(&self) -> &[&'static str] {
        &self.paths
    }

    pub(crate) fn into_router(self) -> Router<AppState> {
        self.router
    }
}
