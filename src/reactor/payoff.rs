//! Whether spinning has paid lately. The reactor's watch for an answer or
//! a next request, and a store thread's linger for its next job, spend up
//! to `--spin` of CPU each time to save a sleep and a wake-up; that pays
//! when what they wait for comes within it (a busy client), and is waste
//! when it does not (fifty clients sending a request every 10 ms each made
//! the server spend 2-4x Redis's CPU). So each keeps a little credit: a
//! spin that caught something earns one, one that timed out loses
//! several, and with none left it spins again only now and then, to see
//! whether things have changed.

/// Most credit kept: how many misses in a row it takes (over [`MISS`])
/// to stop spinning after a good run.
const MOST: u32 = 8;
/// Credit a spin that caught nothing costs.
const MISS: u32 = 4;
/// With no credit, one chance to spin in this many.
const PROBE_EVERY: u32 = 32;

pub struct Payoff {
    credit: u32,
    skipped: u32,
}

impl Default for Payoff {
    fn default() -> Self {
        Payoff {
            credit: MOST,
            skipped: 0,
        }
    }
}

impl Payoff {
    /// Whether to spin now.
    pub fn worth(&mut self) -> bool {
        if self.credit > 0 {
            return true;
        }
        self.skipped += 1;
        if self.skipped >= PROBE_EVERY {
            self.skipped = 0;
            return true;
        }
        false
    }

    /// How the spin went: whether it caught what it waited for.
    pub fn paid(&mut self, caught: bool) {
        self.credit = if caught {
            (self.credit + 1).min(MOST)
        } else {
            self.credit.saturating_sub(MISS)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_while_it_pays_and_probes_after() {
        let mut p = Payoff::default();
        for _ in 0..100 {
            assert!(p.worth());
            p.paid(true);
        }
        // Two misses use the credit up.
        p.paid(false);
        assert!(p.worth());
        p.paid(false);
        let spins = (0..PROBE_EVERY * 4).filter(|_| p.worth()).count();
        assert_eq!(spins, 4, "only the probes spin");
        // A probe that catches something starts it again.
        p.paid(true);
        assert!(p.worth());
    }
}
