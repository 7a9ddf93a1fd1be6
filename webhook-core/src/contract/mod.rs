//! The wire contract: what the senders post and what they are answered. A layer of its own,
//! which the rest builds on and which depends on nothing else of the service.

pub mod event;
#[doc(hidden)]
pub mod payload;
#[doc(hidden)]
pub mod reply;
pub mod reservation;
pub mod signature;

/// Compares two display names ignoring case and surrounding spaces, without allocating.
pub fn same_name(a: &str, b: &str) -> bool {
    a.trim()
        .chars()
        .flat_map(char::to_lowercase)
        .eq(b.trim().chars().flat_map(char::to_lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_types_match_ignoring_case_and_spaces() {
        assert!(same_name("Switch Port", " switch port "));
        assert!(same_name("Räume", "RÄUME"));
        assert!(!same_name("Switch Port", "Switch"));
    }
}
