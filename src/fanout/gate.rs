//! The publish gate shutdown closes: while it is open, publish requests
//! pass and are counted until they are answered; once it is closed, new
//! ones are refused (503), and when none is in flight every acknowledged
//! event is in every shard's channel, so a shard can deliver what its
//! channel holds before it closes its connections. One gate per process,
//! touched once per publish request, never per delivery.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

#[derive(Default)]
pub struct Gate {
    closed: AtomicBool,
    in_flight: AtomicUsize,
}

/// A publish let through; it is no longer in flight when dropped.
pub struct Pass<'a>(&'a Gate);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, SeqCst);
    }
}

impl Gate {
    /// A pass for one publish, or `None` once the gate is closed. Counted
    /// before the check, so [`Gate::in_flight`] after [`Gate::close`] sees
    /// every publish that got through (both sides are SeqCst).
    pub fn enter(&self) -> Option<Pass<'_>> {
        self.in_flight.fetch_add(1, SeqCst);
        let pass = Pass(self);
        (!self.closed.load(SeqCst)).then_some(pass)
    }

    /// Refuses every later publish.
    pub fn close(&self) {
        self.closed.store(true, SeqCst);
    }

    /// Publishes let through and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_gate_refuses_and_counts_what_got_through() {
        let gate = Gate::default();
        let first = gate.enter().expect("open");
        assert_eq!(gate.in_flight(), 1);
        gate.close();
        assert!(gate.enter().is_none());
        assert_eq!(gate.in_flight(), 1, "a refused publish is not in flight");
        drop(first);
        assert_eq!(gate.in_flight(), 0);
    }
}
