//! `rio:service/lifecycle`: a turn asks that its object be deactivated once
//! it commits; the activation does it (see `activation`).

use super::ActivationData;
use super::bindings::lifecycle::Host;

impl Host for ActivationData {
    fn deactivate(&mut self) {
        self.turn.deactivate = true;
    }
}
