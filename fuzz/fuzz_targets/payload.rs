//! Payload parsing on arbitrary bytes: never panics, and every booking it accepts survives
//! the round trip through JSON that the ledger stores it in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webhook::contract::payload::{Delivery, parse};
use webhook::contract::reservation::Reservation;

fuzz_target!(|data: &[u8]| {
    if let Ok(Delivery::Booking { reservation, .. }) = parse(data, |kind| kind == "Switch Port") {
        let stored = serde_json::to_string(&reservation).expect("a reservation serializes");
        let back: Reservation =
            serde_json::from_str(&stored).expect("the ledger's copy reads back");
        assert_eq!(back, reservation);
    }
});
