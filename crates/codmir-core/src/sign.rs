//! Webhook signatures: the contract's `X-Codmir-Signature` and the Standard Webhooks scheme.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::id::random_bytes;

type HmacSha256 = Hmac<Sha256>;

const WHSEC: &str = "whsec_";

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// `sha256=<lowercase hex HMAC-SHA256(secret as UTF-8, body)>`: what the contract's
/// `verifySignature(payload, signature, secret)` accepts.
pub fn codmir_signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac(secret.as_bytes(), &[body])))
}

/// A secret's HMAC states for both schemes, keyed once. Keying hashes a block of each pad
/// and, for a `whsec_` secret, decodes its base64; every attempt of every delivery to the
/// webhook signs with the same secret, so each signature starts from a copy instead.
#[derive(Clone)]
pub struct SigningKeys {
    codmir: HmacSha256,
    standard: HmacSha256,
}

impl SigningKeys {
    pub fn new(secret: &str) -> Self {
        let key = |k: &[u8]| HmacSha256::new_from_slice(k).expect("HMAC takes any key length");
        Self {
            codmir: key(secret.as_bytes()),
            standard: key(&standard_key(secret)),
        }
    }

    /// The same value as [`codmir_signature`] of this secret.
    pub fn codmir_signature(&self, body: &[u8]) -> String {
        let mut mac = self.codmir.clone();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    /// The same value as [`standard_signature`] with this secret's [`standard_key`].
    pub fn standard_signature(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.standard.clone();
        for part in [
            msg_id.as_bytes(),
            b".",
            timestamp.to_string().as_bytes(),
            b".",
            body,
        ] {
            mac.update(part);
        }
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keyed states are as good as the secret: never printed.
        f.write_str("SigningKeys(..)")
    }
}

/// The bytes a Standard Webhooks signature is keyed with: the decoded part of a
/// `whsec_<base64>` secret of 24–64 bytes, otherwise the secret's UTF-8 bytes.
pub fn standard_key(secret: &str) -> Vec<u8> {
    decode_whsec(secret).unwrap_or_else(|| secret.as_bytes().to_vec())
}

fn decode_whsec(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix(WHSEC)?;
    let key = STANDARD.decode(encoded).ok()?;
    (24..=64).contains(&key.len()).then_some(key)
}

/// `v1,<base64 HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}")>` for the `webhook-signature`
/// header of the Standard Webhooks specification.
pub fn standard_signature(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = hmac(key, &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!("v1,{}", STANDARD.encode(mac))
}

/// The `whsec_…` string a receiver gives to a Standard Webhooks library so that it verifies
/// with the same key [`standard_key`] signs with.
pub fn signing_secret(secret: &str) -> String {
    if decode_whsec(secret).is_some() {
        secret.to_owned()
    } else {
        format!("{WHSEC}{}", STANDARD.encode(secret.as_bytes()))
    }
}

/// A new secret: `whsec_` and the base64 of 32 random bytes, good for both schemes.
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    random_bytes(&mut key);
    format!("{WHSEC}{}", STANDARD.encode(key))
}

/// Constant-time check of a contract signature, for receivers and tests.
pub fn verify_codmir_signature(secret: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_part) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_part) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_states_sign_as_the_secret_does() {
        for secret in [
            "Jefe-but-longer-than-16",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ] {
            let keys = SigningKeys::new(secret);
            for body in [&b""[..], b"{}", &[7u8; 300][..]] {
                // Twice: signing must not change the kept state.
                for _ in 0..2 {
                    assert_eq!(keys.codmir_signature(body), codmir_signature(secret, body));
                    assert_eq!(
                        keys.standard_signature("msg_1", 1_700_000_000, body),
                        standard_signature(&standard_key(secret), "msg_1", 1_700_000_000, body)
                    );
                }
            }
        }
        assert_eq!(format!("{:?}", SigningKeys::new("s")), "SigningKeys(..)");
    }

    #[test]
    fn contract_signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        let sig = codmir_signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify_codmir_signature(
            "Jefe",
            b"what do ya want for nothing?",
            &sig
        ));
        assert!(!verify_codmir_signature(
            "Jefe",
            b"what do ya want for nothing!",
            &sig
        ));
    }

    #[test]
    fn standard_signature_matches_the_specification_example() {
        // The example from the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = standard_signature(
            &standard_key(secret),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn signing_secret_round_trips_to_the_same_key() {
        for secret in ["your-webhook-secret", &generate_secret(), "whsec_short"] {
            let signing = signing_secret(secret);
            assert!(signing.starts_with("whsec_"));
            let decoded = STANDARD.decode(&signing[6..]).unwrap();
            assert_eq!(decoded, standard_key(secret), "{secret}");
        }
        let generated = generate_secret();
        assert_eq!(signing_secret(&generated), generated);
        assert_eq!(standard_key(&generated).len(), 32);
    }
}
