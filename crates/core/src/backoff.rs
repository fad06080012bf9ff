//! The retry schedule of every service loop: exponential backoff, doubling
//! from a start delay up to a cap, reset after a success. Built on `backon`'s
//! [`ExponentialBuilder`]; no jitter, so that the schedule is the same on
//! every run (and in tests).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The delays between the tries of a failing step.
#[derive(Debug)]
pub struct Backoff {
    /// The schedule, kept to start it over on [`Backoff::reset`].
    builder: ExponentialBuilder,
    /// The delays still to come.
    delays: ExponentialBackoff,
    /// The longest delay, returned for ever once reached.
    max: Duration,
}

impl Backoff {
    /// Delays of `start`, twice that, and so on, never more than `max`.
    pub fn new(start: Duration, max: Duration) -> Backoff {
        let builder = ExponentialBuilder::default()
            .with_min_delay(start)
            .with_max_delay(max)
            .with_factor(2.0)
            .without_max_times();
        Backoff {
            builder,
            delays: builder.build(),
            max,
        }
    }

    /// How long to wait before the next try; each call doubles it, up to
    /// the cap.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max).min(self.max)
    }

    /// The step succeeded: the next failure waits the start delay again.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn delays_double_from_the_start_up_to_the_cap_and_stay_there() {
        let mut b = Backoff::new(ms(250), Duration::from_secs(30));
        let got: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        let want = [
            250, 500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000,
        ]
        .map(ms);
        assert_eq!(got, want);
        // It never gives up.
        assert_eq!((0..100).map(|_| b.next_delay()).last(), Some(ms(30_000)));
    }

    #[test]
    fn a_reset_starts_the_schedule_over() {
        let mut b = Backoff::new(ms(500), Duration::from_secs(30));
        for _ in 0..5 {
            b.next_delay();
        }
        b.reset();
        assert_eq!([b.next_delay(), b.next_delay()], [ms(500), ms(1000)]);
        assert_eq!(b.max(), Duration::from_secs(30));
    }
}
