//! OpenAPI schemas for values the request types carry as plain strings: the closed sets the
//! API accepts, built from the same lists the parsers use, so the document states exactly
//! what is accepted and cannot drift from it. Used as `value_type` (inline) on request fields.

use codmir_core::event::EventType;
use codmir_core::tracker::{Priority, Role, TicketStatus};
use codmir_core::webhook::DeliveryStatus;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// Declares a schema-only type: a string that is one of `$values`.
macro_rules! one_of {
    ($(#[$doc:meta])* $name:ident, $values:expr) => {
        $(#[$doc])*
        pub(super) struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some($values))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

one_of!(
    /// An event type, a family (`ticket.*`) or `*`, as webhooks and filters take them.
    EventPattern, event_patterns());
one_of!(
    TicketStatusName,
    TicketStatus::ALL.iter().map(|s| s.as_str())
);
one_of!(PriorityName, Priority::ALL.iter().map(|p| p.as_str()));
one_of!(RoleName, Role::ALL.iter().map(|r| r.as_str()));
one_of!(DeliveryStatusName, DeliveryStatus::SHOWN);
one_of!(
    WindowName,
    crate::ops::Window::ALL.map(crate::ops::Window::as_str)
);
one_of!(ReplayStatusName, ["failed", "cancelled", "any"]);
one_of!(OrderName, ["desc", "asc"]);
one_of!(
    OrderingName,
    codmir_core::webhook::DeliveryOrder::ALL.map(codmir_core::webhook::DeliveryOrder::as_str)
);

/// A webhook's static headers: at most 20, string values of at most 1024 characters.
pub(super) struct CustomHeaders;

impl utoipa::PartialSchema for CustomHeaders {
    fn schema() -> RefOr<Schema> {
        let value = ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(1024));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .max_properties(Some(codmir_core::webhook::CustomHeaders::MAX))
            .additional_properties(Some(value))
            .into()
    }
}

impl utoipa::ToSchema for CustomHeaders {}

/// `*`, every family's `family.*`, every event type.
pub(super) fn event_patterns() -> Vec<String> {
    let mut out = vec!["*".to_owned()];
    for t in EventType::ALL {
        let family = format!("{}.*", t.family());
        if !out.contains(&family) {
            out.push(family);
        }
    }
    out.extend(EventType::ALL.map(|t| t.as_str().to_owned()));
    out
}

#[cfg(test)]
mod tests {
    use codmir_core::webhook::EventFilter;

    #[test]
    fn every_stated_pattern_is_accepted() {
        let all = super::event_patterns();
        assert_eq!(all.len(), 1 + 5 + 10);
        for p in &all {
            EventFilter::parse(&[p]).unwrap_or_else(|e| panic!("{p}: {e:?}"));
        }
    }
}

#[cfg(test)]
mod catalog {
    use codmir_core::event::{EventType, example};
    use codmir_core::time::Timestamp;

    /// The receiving crate knows every type the server sends, and each example reads back
    /// as its type there.
    #[test]
    fn the_crate_knows_every_event_type_and_reads_every_example() {
        let ours: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(ours, codmir_webhook::EVENT_TYPES);
        for t in EventType::ALL {
            assert!(codmir_webhook::schema(t.as_str()).is_some(), "{t:?}");
            let e: codmir_webhook::Event =
                serde_json::from_value(example(t, Timestamp::now())).unwrap();
            assert!(
                !matches!(e.data, codmir_webhook::Data::Unknown { .. }),
                "{t:?}"
            );
        }
    }
}
