//! Property tests: every parser of outside input takes any string without panicking, and a
//! refusal always says what was wrong; the SSRF guard agrees with registration and judges an
//! IPv6 form of an IPv4 address like the address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use codmir_core::event::EventType;
use codmir_core::retry::{RetrySchedule, parse_duration, parse_retry_after};
use codmir_core::target::{Cidr, TargetPolicy, is_public};
use codmir_core::time::Timestamp;
use codmir_core::tracker::{
    CommentBody, Description, Email, Priority, ProjectName, Role, TicketStatus, TicketTitle,
    UserName, WorkspaceName,
};
use codmir_core::webhook::{
    CustomHeaders, DeliveryStatus, EndpointUrl, EventFilter, WebhookSecret,
};
use codmir_core::{ValidationError, has_control_chars};
use proptest::prelude::*;

fn explained<T>(r: Result<T, ValidationError>) {
    if let Err(e) = r {
        assert!(!e.message.is_empty(), "a refusal names its reason");
        assert!(!e.field.is_empty());
    }
}

/// Strings as hostile clients send them: any Unicode, control characters, near-valid forms.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,64}",
        "https?://[a-z0-9.:\\[\\]@%/?#-]{0,40}",
        "[0-9a-f:.]{0,40}(/[0-9]{0,3})?",
        "[0-9]{0,6}(ms|s|m|h|d)?(,[0-9]{0,4}(ms|s|m|h|d)?){0,3}",
        "[\\x00-\\x1f\\x7f]{0,8}[a-z]{0,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_parser_panics_and_every_refusal_says_why(raw in hostile()) {
        explained(WorkspaceName::parse(&raw));
        explained(UserName::parse(&raw));
        explained(ProjectName::parse(&raw));
        explained(TicketTitle::parse(&raw));
        explained(Description::parse(&raw));
        explained(CommentBody::parse(&raw));
        explained(Email::parse(&raw));
        explained(TicketStatus::parse(&raw));
        explained(Priority::parse(&raw));
        explained(Role::parse(&raw));
        explained(EventType::parse(&raw));
        explained(DeliveryStatus::parse(&raw));
        explained(WebhookSecret::parse(&raw));
        explained(EndpointUrl::parse(&raw, &TargetPolicy::default()));
        explained(EndpointUrl::parse(&raw, &TargetPolicy::permissive()));
        explained(EventFilter::parse(&[raw.as_str()]));
        explained(CustomHeaders::parse(&[(raw.as_str(), raw.as_str())]));
        explained(Cidr::parse(&raw));
        explained(RetrySchedule::parse(&raw));
        explained(parse_duration(&raw));
        explained(Timestamp::parse_rfc3339(&raw, "since"));
        let _ = parse_retry_after(&raw);
    }

    #[test]
    fn accepted_text_never_holds_control_characters(raw in hostile()) {
        if let Ok(t) = TicketTitle::parse(&raw) {
            prop_assert!(!has_control_chars(t.as_str()));
        }
        if let Ok(s) = WebhookSecret::parse(&raw) {
            prop_assert!(!s.as_str().chars().any(char::is_control));
        }
    }

    #[test]
    fn an_accepted_url_is_never_a_refused_address(a in any::<u32>(), port in 1u16..) {
        let v4 = Ipv4Addr::from(a);
        let url = format!("http://{v4}:{port}/");
        let accepted = EndpointUrl::parse(&url, &TargetPolicy::default()).is_ok();
        prop_assert_eq!(accepted, is_public(IpAddr::V4(v4)), "{}", url);
    }

    #[test]
    fn a_v6_form_of_a_v4_address_is_judged_like_it(a in any::<u32>()) {
        let v4 = Ipv4Addr::from(a);
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        prop_assert_eq!(is_public(mapped), is_public(IpAddr::V4(v4)));
        let nat64 = IpAddr::V6(Ipv6Addr::from((0x0064_ff9b_u128 << 96) | u128::from(a)));
        prop_assert_eq!(is_public(nat64), is_public(IpAddr::V4(v4)));
    }
}
