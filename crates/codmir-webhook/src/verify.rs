//! Signature verification: Standard Webhooks (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`) and, when those are absent, the contract's `X-Codmir-Signature`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::event::Event;
use crate::headers::Headers;

type HmacSha256 = Hmac<Sha256>;

/// How far `webhook-timestamp` may be from the receiver's clock, either way, by default: the
/// Standard Webhooks recommendation.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Which signature a request was verified by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `webhook-signature` over `webhook-id.webhook-timestamp.body`.
    StandardWebhooks,
    /// `X-Codmir-Signature: sha256=<hex>` over the body alone (no timestamp: it does not
    /// protect against a replay of a captured request).
    Codmir,
}

/// Why a request was not accepted. Each says what is wrong and what to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// Neither `webhook-signature` nor `X-Codmir-Signature` is present.
    MissingSignature,
    /// A header the present scheme needs is missing.
    MissingHeader(&'static str),
    /// A header is present but malformed.
    InvalidHeader { name: &'static str, reason: String },
    /// `webhook-timestamp` is older than the tolerance.
    TimestampTooOld { age: Duration, tolerance: Duration },
    /// `webhook-timestamp` is further ahead than the tolerance.
    TimestampInFuture {
        ahead: Duration,
        tolerance: Duration,
    },
    /// No signature in the header matches any of the secrets.
    NoSignatureMatched(Scheme),
    /// The signature matched but the body is not a JSON event.
    NotAnEvent(String),
    /// The secret given to the verifier cannot be one codmir showed.
    InvalidSecret(&'static str),
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::MissingSignature => f.write_str(
                "no signature: the request has neither a webhook-signature nor an \
                 x-codmir-signature header",
            ),
            VerifyError::MissingHeader(name) => write!(f, "the {name} header is missing"),
            VerifyError::InvalidHeader { name, reason } => {
                write!(f, "the {name} header is invalid: {reason}")
            }
            VerifyError::TimestampTooOld { age, tolerance } => write!(
                f,
                "webhook-timestamp is {} s old, more than the {} s allowed: a replayed request, \
                 or this machine's clock is wrong",
                age.as_secs(),
                tolerance.as_secs()
            ),
            VerifyError::TimestampInFuture { ahead, tolerance } => write!(
                f,
                "webhook-timestamp is {} s in the future, more than the {} s allowed: this \
                 machine's clock (or the sender's) is wrong",
                ahead.as_secs(),
                tolerance.as_secs()
            ),
            VerifyError::NoSignatureMatched(scheme) => {
                let header = match scheme {
                    Scheme::StandardWebhooks => "webhook-signature",
                    Scheme::Codmir => "x-codmir-signature",
                };
                write!(
                    f,
                    "no signature in {header} matches the secret: the secret is not this \
                     webhook's, or the body was changed on the way (verify the raw bytes as \
                     received, before any JSON parsing)"
                )
            }
            VerifyError::NotAnEvent(why) => {
                write!(
                    f,
                    "the signature is valid but the body is not an event: {why}"
                )
            }
            VerifyError::InvalidSecret(why) => write!(f, "the secret is not usable: {why}"),
        }
    }
}

impl std::error::Error for VerifyError {}

/// The keys one secret string can stand for. codmir shows two strings per webhook —
/// `secret`, which `X-Codmir-Signature` is keyed with as text, and `signing_secret`
/// (`whsec_<base64>`), which Standard Webhooks libraries decode — and a receiver may hold
/// either, so both readings of the string are tried.
#[derive(Clone)]
struct Keys {
    text: Vec<u8>,
    decoded: Option<Vec<u8>>,
}

impl Keys {
    fn parse(secret: &str) -> Result<Self, VerifyError> {
        if secret.is_empty() {
            return Err(VerifyError::InvalidSecret("it is empty"));
        }
        if secret.trim() != secret {
            return Err(VerifyError::InvalidSecret(
                "it starts or ends with whitespace (a newline read from a file?)",
            ));
        }
        let decoded = secret
            .strip_prefix("whsec_")
            .and_then(|b64| STANDARD.decode(b64).ok())
            .filter(|k| !k.is_empty());
        Ok(Self {
            text: secret.as_bytes().to_vec(),
            decoded,
        })
    }

    fn each(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.text.as_slice()).chain(self.decoded.as_deref())
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// Verifies requests with one or more secrets (several while the receiver itself moves from
/// one secret to the next). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Vec<Keys>,
    tolerance: Duration,
}

impl Verifier {
    /// A verifier for one secret: the webhook's `secret` or its `signing_secret`.
    pub fn new(secret: &str) -> Result<Self, VerifyError> {
        Self::with_secrets([secret])
    }

    /// A verifier that accepts a request signed with any of `secrets`.
    pub fn with_secrets<I, S>(secrets: I) -> Result<Self, VerifyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let keys = secrets
            .into_iter()
            .map(|s| Keys::parse(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(VerifyError::InvalidSecret("no secret was given"));
        }
        Ok(Self {
            keys,
            tolerance: DEFAULT_TOLERANCE,
        })
    }

    /// How far `webhook-timestamp` may be from this machine's clock ([`DEFAULT_TOLERANCE`]).
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Verifies `body` (the raw bytes received) against `headers` now, and reads the event.
    pub fn verify(
        &self,
        body: &[u8],
        headers: &(impl Headers + ?Sized),
    ) -> Result<Event, VerifyError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.verify_at(body, headers, now)
    }

    /// [`Verifier::verify`] with the clock given (seconds since the Unix epoch).
    pub fn verify_at(
        &self,
        body: &[u8],
        headers: &(impl Headers + ?Sized),
        now: i64,
    ) -> Result<Event, VerifyError> {
        self.verify_signature_at(body, headers, now)?;
        serde_json::from_slice(body).map_err(|e| VerifyError::NotAnEvent(e.to_string()))
    }

    /// Checks the signature only (the body is not read as an event); says which scheme
    /// verified it.
    pub fn verify_signature_at(
        &self,
        body: &[u8],
        headers: &(impl Headers + ?Sized),
        now: i64,
    ) -> Result<Scheme, VerifyError> {
        match headers.get("webhook-signature") {
            Some(signatures) => self.standard(body, headers, signatures, now),
            None => match headers.get("x-codmir-signature") {
                Some(signature) => self.codmir(body, signature),
                None => Err(VerifyError::MissingSignature),
            },
        }
    }

    fn standard(
        &self,
        body: &[u8],
        headers: &(impl Headers + ?Sized),
        signatures: &str,
        now: i64,
    ) -> Result<Scheme, VerifyError> {
        let id = headers
            .get("webhook-id")
            .ok_or(VerifyError::MissingHeader("webhook-id"))?;
        let raw_ts = headers
            .get("webhook-timestamp")
            .ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
        let timestamp: i64 = raw_ts
            .trim()
            .parse()
            .map_err(|_| VerifyError::InvalidHeader {
                name: "webhook-timestamp",
                reason: format!("`{raw_ts}` is not a number of seconds since the Unix epoch"),
            })?;
        let given: Vec<Vec<u8>> = signatures
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|b64| STANDARD.decode(b64).ok())
            .collect();
        if given.is_empty() {
            return Err(VerifyError::InvalidHeader {
                name: "webhook-signature",
                reason: "no `v1,<base64>` signature in it".into(),
            });
        }
        let ts = raw_ts.trim();
        let matched = self.keys.iter().flat_map(Keys::each).any(|key| {
            given.iter().any(|sig| {
                mac(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body])
                    .verify_slice(sig)
                    .is_ok()
            })
        });
        if !matched {
            return Err(VerifyError::NoSignatureMatched(Scheme::StandardWebhooks));
        }
        // Judged after the signature, so that a timestamp error is about an authentic
        // request: a replay, or a clock that is off.
        let tolerance = self.tolerance;
        let skew = now.abs_diff(timestamp);
        if skew > tolerance.as_secs() {
            let by = Duration::from_secs(skew);
            return Err(if timestamp < now {
                VerifyError::TimestampTooOld { age: by, tolerance }
            } else {
                VerifyError::TimestampInFuture {
                    ahead: by,
                    tolerance,
                }
            });
        }
        Ok(Scheme::StandardWebhooks)
    }

    fn codmir(&self, body: &[u8], signature: &str) -> Result<Scheme, VerifyError> {
        let invalid = |reason: &str| VerifyError::InvalidHeader {
            name: "x-codmir-signature",
            reason: reason.into(),
        };
        let hex = signature
            .trim()
            .strip_prefix("sha256=")
            .ok_or_else(|| invalid("it does not start with `sha256=`"))?;
        let given =
            decode_hex(hex).ok_or_else(|| invalid("`sha256=` is not followed by 64 hex digits"))?;
        let matched = self
            .keys
            .iter()
            .flat_map(Keys::each)
            .any(|key| mac(key, &[body]).verify_slice(&given).is_ok());
        if matched {
            Ok(Scheme::Codmir)
        } else {
            Err(VerifyError::NoSignatureMatched(Scheme::Codmir))
        }
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    hex.as_bytes()
        .chunks(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

/// Verifies `body` against `headers` with `secret` (the webhook's `secret` or its
/// `signing_secret`) and reads the event: the one call most receivers need.
///
/// ```
/// let secret = "your-webhook-secret";
/// let body = br#"{"id":"evt_1","type":"project.created","timestamp":"2026-12-01T10:00:00.000Z","data":{"project":{"id":"proj_1","name":"Main App"},"user":{"id":"usr_1","name":"John Doe"}}}"#;
/// // The contract's header alone (the Standard Webhooks ones are checked first when there).
/// let headers = [(
///     "X-Codmir-Signature",
///     "sha256=409f99389e51c2db20d024809e02301cb74f46320aabf4db740e49ba6be61442",
/// )];
/// let event = codmir_webhook::verify(body, &headers[..], secret).unwrap();
/// assert_eq!(event.event_type(), "project.created");
///
/// let mut changed = body.to_vec();
/// changed[8] = b'2'; // evt_2
/// assert!(codmir_webhook::verify(&changed, &headers[..], secret).is_err());
/// ```
pub fn verify(
    body: &[u8],
    headers: &(impl Headers + ?Sized),
    secret: &str,
) -> Result<Event, VerifyError> {
    Verifier::new(secret)?.verify(body, headers)
}
