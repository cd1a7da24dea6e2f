//! Routing keys: `<vendor>.<event>`, computed here and nowhere else.

/// The routing key (and CloudEvents `type`) of a normalized event.
pub fn routing_key(vendor: &str, event: &str) -> String {
    let mut key = String::with_capacity(vendor.len() + event.len() + 1);
    key.push_str(vendor);
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
