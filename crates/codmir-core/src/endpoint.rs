//! A webhook's endpoint URL, as registered: its syntax, its host name, and the SSRF guard
//! applied at registration (`target.rs` decides what is public).

use std::net::IpAddr;

use crate::ValidationError;
use crate::target::TargetPolicy;

/// The longest endpoint URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// An absolute `http`/`https` URL without credentials, at most [`MAX_URL_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(String);

impl EndpointUrl {
    /// Parses `raw` under `policy` (the SSRF guard at registration): a host that is
    /// `localhost` (or under it), an IP literal that is not public and not allowed, port 0,
    /// and `http://` with `https_only` are refused. Names are resolved, and checked again, at
    /// each attempt.
    pub fn parse(raw: &str, policy: &TargetPolicy) -> Result<Self, ValidationError> {
        let err = |m: String| ValidationError::new("url", m);
        if raw.len() > MAX_URL_LEN {
            return Err(err(format!("must be at most {MAX_URL_LEN} characters")));
        }
        let url = url::Url::parse(raw)
            .map_err(|e| err(format!("`{raw}` is not an absolute URL ({e})")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(err(format!(
                "scheme `{}` is not allowed; use http or https",
                url.scheme()
            )));
        }
        if policy.https_only && url.scheme() != "https" {
            return Err(err(
                "must be https:// (the server runs with --https-only)".into()
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(err("must not contain credentials (user:password@)".into()));
        }
        if url.port() == Some(0) {
            return Err(err("port 0 cannot be connected to".into()));
        }
        let host = url.host().ok_or_else(|| err("must have a host".into()))?;
        if let url::Host::Domain(d) = host
            && !is_dns_name(d)
        {
            return Err(err(format!(
                "`{d}` is not a host name (labels of 1–63 letters, digits, `-` or `_`, \
                 253 characters at most)"
            )));
        }
        let refused = match host {
            url::Host::Domain(d) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                !policy.allow_private && (d == "localhost" || d.ends_with(".localhost"))
            }
            url::Host::Ipv4(ip) => !policy.allows(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => !policy.allows(IpAddr::V6(ip)),
        };
        if refused {
            return Err(err(format!(
                "`{host}` is not a public address (loopback, private, link-local, reserved or \
                 special-purpose); allow its network with --allow-cidr, or start the server with \
                 --allow-private-targets (CODMIR_ALLOW_PRIVATE_TARGETS=1) for local development"
            )));
        }
        Ok(Self(url.into()))
    }

    /// A URL read back from the database, where it was validated when it was stored.
    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `name` (as the URL parser gives it: lower-case, IDNA already in ASCII) can be
/// looked up and connected to — what the TLS stack will demand of it at each attempt — so
/// that a name no attempt could ever reach is refused at registration, not failed later.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_validated() {
        assert!(
            EndpointUrl::parse(
                "https://your-app.com/webhooks/codmir",
                &TargetPolicy::default()
            )
            .is_ok()
        );
        for bad in [
            "ftp://x.com/",
            "/relative",
            "https://user:pw@x.com/",
            "http://127.0.0.1:9/",
            "http://localhost/",
            "http://[::1]/",
            "http://10.1.2.3/",
            "http://169.254.169.254/",
            "http://0.0.0.0/",
            "http://[::ffff:127.0.0.1]/",
            "https://.xn--jda/",
            "https://a..b.com/",
            "https://-a.com/",
            "https://a-.com/",
            "https://a b.com/",
        ] {
            let e = EndpointUrl::parse(bad, &TargetPolicy::default()).unwrap_err();
            assert_eq!(e.field, "url", "{bad}");
        }
        assert!(EndpointUrl::parse("http://127.0.0.1:9/", &TargetPolicy::permissive()).is_ok());
        assert!(
            EndpointUrl::parse("http://localhost/", &TargetPolicy::default())
                .unwrap_err()
                .message
                .contains("--allow-private-targets")
        );
        let long = format!("https://x.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(EndpointUrl::parse(&long, &TargetPolicy::default()).is_err());
        let label = format!("https://{}.com/", "a".repeat(64));
        assert!(EndpointUrl::parse(&label, &TargetPolicy::default()).is_err());
        for good in [
            "https://intranet/",
            "https://bücher.example/",
            "https://_dmarc.x.com./h",
            "https://a-b.c_d.com:8443/",
        ] {
            EndpointUrl::parse(good, &TargetPolicy::default())
                .unwrap_or_else(|e| panic!("{good}: {e:?}"));
        }
    }
}
