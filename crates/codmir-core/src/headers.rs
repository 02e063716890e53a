//! A webhook's custom headers: validated, and write-only (masked whenever shown).

use crate::ValidationError;

/// Static headers a webhook's requests carry besides codmir's own: at most
/// [`CustomHeaders::MAX`], names that are HTTP tokens, values of visible ASCII. Headers that
/// belong to the connection, the body or the signatures are refused. Values are often the
/// receiver's credentials, so they are write-only: their `Debug` shows the names only, and
/// what is shown back is [`CustomHeaders::masked`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct CustomHeaders(Vec<(String, String)>);

impl std::fmt::Debug for CustomHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| format!("{name}: <redacted>")))
            .finish()
    }
}

impl CustomHeaders {
    pub const MAX: usize = 20;
    const MAX_NAME: usize = 64;
    const MAX_VALUE: usize = 1024;

    /// Headers codmir sets, or that describe the connection or the body.
    fn reserved(lower: &str) -> bool {
        const EXACT: [&str; 20] = [
            "connection",
            "keep-alive",
            "proxy-authenticate",
            "proxy-authorization",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "host",
            "user-agent",
            // What a receiver or a proxy in front of it would take as the client's, or as
            // about the transfer rather than the event: cookies, forwarding, and negotiation.
            "cookie",
            "set-cookie",
            "forwarded",
            "via",
            "x-real-ip",
            "expect",
            "accept-encoding",
            "range",
            "date",
        ];
        EXACT.contains(&lower)
            || lower.starts_with("x-forwarded-")
            || lower.starts_with("content-")
            || lower.starts_with("x-codmir-")
            || lower.starts_with("webhook-")
            || lower.contains("signature")
    }

    /// Parses `(name, value)` pairs; each error names the header at fault. A masked value
    /// is refused: there is nothing it could keep.
    pub fn parse<N: AsRef<str>, V: AsRef<str>>(pairs: &[(N, V)]) -> Result<Self, ValidationError> {
        HeadersUpdate::parse(pairs)?.apply(&Self::default())
    }

    /// The value of `name` (any case).
    fn get(&self, name: &str) -> Option<&str> {
        let mut same = self.0.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        same.next().map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// The names, each with its value masked: what reads and the delivery log show.
    pub fn masked(&self) -> impl Iterator<Item = (&str, String)> {
        self.0.iter().map(|(n, v)| (n.as_str(), mask(v)))
    }
}

/// What a custom header's value is shown as: [`MASK`], and its last four characters when it
/// has at least 20 (so that at least 16 stay hidden), to tell two values apart.
pub fn mask(value: &str) -> String {
    if value.len() >= 20 {
        format!("{MASK}{}", &value[value.len() - 4..])
    } else {
        MASK.to_owned()
    }
}

/// The start of every masked value; a value sent back starting with it keeps the header's
/// value if it is what a read shows of it ([`HeadersUpdate::apply`]), and is refused otherwise.
pub const MASK: &str = "********";

/// A webhook's headers as an update sends them: each a value, or the masked value a read
/// showed, which keeps that header's value as it is. A client can so read a webhook, change
/// one header (or none) and send the whole set back without knowing the others' values.
#[derive(Clone, PartialEq, Eq)]
pub struct HeadersUpdate(Vec<(String, Sent)>);

#[derive(Clone, PartialEq, Eq)]
enum Sent {
    Value(String),
    Masked(String),
}

impl std::fmt::Debug for HeadersUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| format!("{name}: <redacted>")))
            .finish()
    }
}

impl HeadersUpdate {
    /// Checks names and values as [`CustomHeaders`] takes them; a masked value is kept aside
    /// for [`HeadersUpdate::apply`].
    pub fn parse<N: AsRef<str>, V: AsRef<str>>(pairs: &[(N, V)]) -> Result<Self, ValidationError> {
        let err = |m: String| ValidationError::new("headers", m);
        if pairs.len() > CustomHeaders::MAX {
            return Err(err(format!("at most {} headers", CustomHeaders::MAX)));
        }
        let mut out: Vec<(String, Sent)> = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            let (name, value) = (name.as_ref(), value.as_ref());
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || name.len() > CustomHeaders::MAX_NAME || !name.chars().all(token) {
                return Err(err(format!(
                    "`{name}` is not a header name (letters, digits and !#$%&'*+-.^_`|~, at most {} characters)",
                    CustomHeaders::MAX_NAME
                )));
            }
            let lower = name.to_ascii_lowercase();
            if CustomHeaders::reserved(&lower) {
                return Err(err(format!(
                    "`{name}` cannot be set: codmir sets it, or it belongs to the connection or the body"
                )));
            }
            if value.len() > CustomHeaders::MAX_VALUE
                || !value
                    .chars()
                    .all(|c| c == ' ' || c == '\t' || c.is_ascii_graphic())
            {
                return Err(err(format!(
                    "the value of `{name}` must be visible ASCII, at most {} characters",
                    CustomHeaders::MAX_VALUE
                )));
            }
            if out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                return Err(err(format!("`{name}` is given twice")));
            }
            let sent = match value.starts_with(MASK) {
                true => Sent::Masked(value.to_owned()),
                false => Sent::Value(value.to_owned()),
            };
            out.push((name.to_owned(), sent));
        }
        Ok(Self(out))
    }

    /// The headers this update makes of `current`: a masked value keeps the value of the
    /// header of that name if it is what a read shows of it, and is refused otherwise (a
    /// masked value taken for a real one would replace a credential with asterisks).
    pub fn apply(self, current: &CustomHeaders) -> Result<CustomHeaders, ValidationError> {
        let mut out = Vec::with_capacity(self.0.len());
        for (name, sent) in self.0 {
            let value = match sent {
                Sent::Value(v) => v,
                Sent::Masked(shown) => match current.get(&name) {
                    Some(v) if mask(v) == shown => v.to_owned(),
                    _ => {
                        return Err(ValidationError::new(
                            "headers",
                            format!(
                                "the value of `{name}` is a masked value as reads show it, and not the one `{name}` has; send the value itself (or the masked value a read shows, to keep it)"
                            ),
                        ));
                    }
                },
            };
            out.push((name, value));
        }
        Ok(CustomHeaders(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_headers_are_validated_and_reserved_ones_refused() {
        let ok =
            CustomHeaders::parse(&[("X-Tenant", "acme"), ("Authorization", "Bearer t")]).unwrap();
        assert_eq!(ok.pairs().len(), 2);
        for bad in [
            "Host",
            "content-type",
            "Content-Length",
            "Transfer-Encoding",
            "Connection",
            "X-Codmir-Event",
            "webhook-id",
            "X-Hub-Signature",
            "User-Agent",
            "Cookie",
            "X-Forwarded-For",
            "x-forwarded-host",
            "Forwarded",
            "Via",
            "Expect",
            "Accept-Encoding",
            "Range",
            "Date",
            "bad name",
            "",
        ] {
            let e = CustomHeaders::parse(&[(bad, "v")]).unwrap_err();
            assert_eq!(e.field, "headers");
            assert!(
                e.message.contains(&format!("`{bad}`")),
                "{bad}: {}",
                e.message
            );
        }
        assert!(CustomHeaders::parse(&[("X-A", "line\nbreak")]).is_err());
        assert!(CustomHeaders::parse(&[("X-A", "1"), ("x-a", "2")]).is_err());
        let many: Vec<(String, String)> = (0..21).map(|i| (format!("X-{i}"), "v".into())).collect();
        assert!(CustomHeaders::parse(&many).is_err());
    }

    #[test]
    fn header_values_are_shown_masked_and_a_masked_value_is_not_taken_back() {
        let h = CustomHeaders::parse(&[
            ("X-Tenant", "acme"),
            ("Authorization", "Bearer receiver-token-1234"),
            ("X-Nineteen", "abcdefghijklmnopqrs"),
        ])
        .unwrap();
        let shown: Vec<(&str, String)> = h.masked().collect();
        assert_eq!(
            shown,
            [
                ("X-Tenant", "********".to_owned()),
                ("Authorization", "********1234".to_owned()),
                ("X-Nineteen", "********".to_owned()),
            ]
        );
        let e = CustomHeaders::parse(&[("Authorization", "********1234")]).unwrap_err();
        assert!(e.message.contains("masked"), "{}", e.message);
        assert!(!format!("{h:?}").contains("acme"));
    }

    #[test]
    fn an_update_keeps_a_header_sent_back_masked_and_refuses_any_other_masked_value() {
        let h = CustomHeaders::parse(&[
            ("X-Tenant", "acme"),
            ("Authorization", "Bearer receiver-token-1234"),
        ])
        .unwrap();
        // Read, change one, send all back: the other keeps its value, whatever its case.
        let back = HeadersUpdate::parse(&[
            ("x-tenant", "********"),
            ("Authorization", "Bearer a-new-token-5678"),
            ("X-New", "1"),
        ])
        .unwrap()
        .apply(&h)
        .unwrap();
        assert_eq!(
            back.pairs(),
            [
                ("x-tenant".to_owned(), "acme".to_owned()),
                (
                    "Authorization".to_owned(),
                    "Bearer a-new-token-5678".to_owned()
                ),
                ("X-New".to_owned(), "1".to_owned()),
            ]
        );
        for (name, shown) in [
            ("Authorization", "********9999"), // not what a read shows of it
            ("Authorization", "********"),
            ("X-Other", "********"), // no such header
        ] {
            let e = HeadersUpdate::parse(&[(name, shown)])
                .unwrap()
                .apply(&h)
                .unwrap_err();
            assert!(e.message.contains(&format!("`{name}`")), "{}", e.message);
        }
        assert!(
            !format!("{:?}", HeadersUpdate::parse(&[("X-A", "sekrit")]).unwrap())
                .contains("sekrit")
        );
    }
}
