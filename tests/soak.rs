//! Soak: 10,000 asks over 1,000 sessions, at least 500 in flight at once, with faults injected
//! at random (fixed seed) into every stage, through the real `Pipeline` and `InMemoryHistory`.
//! The harness (scenarios, invariants, printed counts) is `support/soak.rs`.

#[path = "support/soak.rs"]
mod soak;

use std::sync::Arc;

use rag::memory::InMemoryHistory;
use rag::HistoryStore;
use soak::SoakConfig;

#[test]
fn soak_10k_asks_with_faults_keeps_every_invariant() {
    soak::run(SoakConfig::new("InMemoryHistory", 1_000, 10), || async {
        Arc::new(InMemoryHistory::new()) as Arc<dyn HistoryStore>
    });
}
