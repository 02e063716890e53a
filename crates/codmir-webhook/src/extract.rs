//! An axum extractor: the request verified and its event read, or a 400 that says why.

use axum::extract::{FromRef, FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::{Event, Verifier, VerifyError};

/// The largest body read: codmir's events are far smaller.
const MAX_BODY: usize = 1 << 20;

/// A verified request's event. The [`Verifier`] comes from the router's state
/// (`Verifier: FromRef<S>`).
///
/// ```no_run
/// use axum::{Router, routing::post, http::StatusCode};
/// use codmir_webhook::{Verified, Verifier};
///
/// async fn hook(Verified(event): Verified) -> StatusCode {
///     println!("{} {}", event.id, event.event_type());
///     StatusCode::NO_CONTENT
/// }
///
/// let verifier = Verifier::new(&std::env::var("CODMIR_SIGNING_SECRET").unwrap()).unwrap();
/// let app: Router = Router::new().route("/webhooks/codmir", post(hook)).with_state(verifier);
/// ```
#[derive(Debug, Clone)]
pub struct Verified(pub Event);

/// Why [`Verified`] refused a request: answered `400 Bad Request` with the reason as text
/// (codmir records it in the delivery log and retries).
#[derive(Debug)]
pub struct Rejected(pub VerifyError);

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, self.0.to_string()).into_response()
    }
}

impl<S> FromRequest<S> for Verified
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Verifier::from_ref(state);
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("the body could not be read: {e}"),
            )
                .into_response()
        })?;
        verifier
            .verify(&body, &parts.headers)
            .map(Verified)
            .map_err(|e| Rejected(e).into_response())
    }
}
