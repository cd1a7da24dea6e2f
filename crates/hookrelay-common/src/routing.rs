//! Routing keys: `<prefix>.<event>`, computed here and nowhere else. The prefix is the
//! vendor's name, or the source's for a generic vendor many senders share
//! (`standard-webhooks`); see docs/vendors.md.

/// What a vendor's routing keys start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// `<vendor>.<event>`: `chatwoot.message.created`.
    Vendor,
    /// `<source>.<event>`: `billing.invoice.paid` for a source named `billing`.
    Source,
}

/// The routing key (and CloudEvents `type`) of a normalized event; `prefix` is the
/// vendor's or the source's name, as the vendor's [`Prefix`] says.
pub fn routing_key(prefix: &str, event: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + event.len() + 1);
    key.push_str(prefix);
    key.push('.');
    key.push_str(event);
    key
}

/// The normalized event name for a vendor event hookrelay has no mapping for:
/// `unmapped.<name>`, the name lower-cased and every character outside
/// `[a-z0-9_]` turned into `_` (so it can never add a routing-key level).
pub fn unmapped_event(vendor_event: &str) -> String {
    let mut out = String::with_capacity(vendor_event.len() + 9);
    out.push_str("unmapped.");
    for c in vendor_event.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
            out.push(c);
        } else {
            out.push('_');
        }
    }
    if vendor_event.is_empty() {
        out.push('_');
    }
    out
}

/// A sender's own dotted event type as a routing-key tail: lower-cased, every character
/// outside `[a-z0-9_.]` turned into `_` (dots keep their meaning as levels).
pub fn event_type(ty: &str) -> String {
    ty.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_key_joins_vendor_and_event() {
        assert_eq!(
            routing_key("chatwoot", "message.created"),
            "chatwoot.message.created"
        );
    }

    #[test]
    fn sender_types_keep_their_levels_and_lose_everything_else() {
        assert_eq!(event_type("Invoice.Paid"), "invoice.paid");
        assert_eq!(event_type("user-created v2/é"), "user_created_v2__");
        assert_eq!(
            routing_key("billing", &event_type("invoice.paid")),
            "billing.invoice.paid"
        );
    }

    #[test]
    fn unmapped_names_are_sanitized() {
        assert_eq!(
            unmapped_event("automation_event.conversation_created"),
            "unmapped.automation_event_conversation_created"
        );
        assert_eq!(unmapped_event("Call-Ended #1"), "unmapped.call_ended__1");
        assert_eq!(unmapped_event("é"), "unmapped._");
        assert_eq!(unmapped_event(""), "unmapped._");
    }
}
