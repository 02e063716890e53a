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
