//! The measurements quotas are enforced on, after Kafka's metrics library: a rate over
//! sampled windows (`Rate` over `WindowedSum`, `SampledStat`) and a token bucket
//! (`TokenBucket`, KIP-599's controller mutation quota), with the throttle times Kafka's
//! quota managers compute from them (`QuotaUtils.throttleTime`,
//! `ControllerMutationQuotaManager.throttleTime`). Time is in milliseconds, from any origin.

/// `quota.window.num` windows of `quota.window.size.seconds` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub samples: usize,
    pub window_ms: i64,
}

impl Windows {
    pub fn new(samples: usize, window_seconds: u64) -> Windows {
        Windows {
            samples: samples.max(1),
            window_ms: i64::try_from(window_seconds.saturating_mul(1000))
                .unwrap_or(i64::MAX)
                .max(1),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    value: f64,
    last_window_ms: i64,
}

impl Sample {
    fn new(now: i64) -> Sample {
        Sample {
            value: 0.0,
            last_window_ms: now,
        }
    }
}

/// A rate per second over the last `samples` windows (Kafka's `Rate` of a `WindowedSum`).
#[derive(Debug, Default)]
pub struct SampledRate {
    samples: Vec<Sample>,
    current: usize,
}

impl SampledRate {
    /// Adds `value` at `now` (Kafka's `SampledStat.record`: a sample whose window has passed
    /// is complete, and the next one starts at `now`).
    pub fn record(&mut self, w: &Windows, value: f64, now: i64) {
        if self.samples.is_empty() {
            self.samples.push(Sample::new(now));
            self.current = 0;
        }
        if now - self.samples[self.current].last_window_ms >= w.window_ms {
            self.current = (self.current + 1) % w.samples;
            if self.current >= self.samples.len() {
                self.samples.push(Sample::new(now));
            } else {
                self.samples[self.current] = Sample::new(now);
            }
        }
        self.samples[self.current].value += value;
    }

    /// Samples older than all the windows start afresh at `now`.
    fn purge(&mut self, w: &Windows, now: i64) {
        let expire = w.samples as i64 * w.window_ms;
        for s in &mut self.samples {
            if now - s.last_window_ms >= expire {
                *s = Sample::new(now);
            }
        }
    }

    /// The span the rate is taken over, in ms (Kafka's `Rate.windowSize`): since the oldest
    /// sample, but at least `samples - 1` whole windows, so a young sensor does not measure
    /// a burst as a huge rate.
    pub fn window_size(&mut self, w: &Windows, now: i64) -> i64 {
        self.purge(w, now);
        if self.samples.is_empty() {
            self.samples.push(Sample::new(now));
        }
        let oldest = self
            .samples
            .iter()
            .map(|s| s.last_window_ms)
            .min()
            .unwrap_or(now);
        let mut elapsed = now - oldest;
        let full = elapsed / w.window_ms;
        let min_full = w.samples as i64 - 1;
        if full < min_full {
            elapsed += (min_full - full) * w.window_ms;
        }
        elapsed.max(1)
    }

    /// The rate per second at `now`.
    pub fn measure(&mut self, w: &Windows, now: i64) -> f64 {
        self.purge(w, now);
        let total: f64 = self.samples.iter().map(|s| s.value).sum();
        total / (self.window_size(w, now) as f64 / 1000.0)
    }

    /// Records `value` and answers how long the client must wait (ms) for the rate to come
    /// back to `limit` if it sends nothing more: `(rate - limit) / limit × window span`
    /// (Kafka's `QuotaUtils.throttleTime`), 0 within the limit.
    pub fn record_and_throttle(&mut self, w: &Windows, value: f64, now: i64, limit: f64) -> i64 {
        self.record(w, value, now);
        let rate = self.measure(w, now);
        if rate <= limit {
            return 0;
        }
        let window = self.window_size(w, now) as f64;
        ((rate - limit) / limit * window).round() as i64
    }
}

/// Kafka's `TokenBucket`: `limit` tokens per second, at most `(samples - 1) × window ×
/// limit` saved up (the burst), full at the start; a record may take it below zero.
#[derive(Debug, Default)]
pub struct TokenBucket {
    tokens: f64,
    last_update_ms: Option<i64>,
}

impl TokenBucket {
    fn burst(w: &Windows, limit: f64) -> f64 {
        (w.samples as f64 - 1.0) * (w.window_ms as f64 / 1000.0) * limit
    }

    fn refill(&mut self, w: &Windows, limit: f64, now: i64) {
        let burst = Self::burst(w, limit);
        self.tokens = match self.last_update_ms {
            None => burst,
            Some(last) => (self.tokens + limit * ((now - last).max(0) as f64 / 1000.0)).min(burst),
        };
        self.last_update_ms = Some(now);
    }

    /// The tokens left at `now`.
    pub fn tokens(&mut self, w: &Windows, limit: f64, now: i64) -> f64 {
        self.refill(w, limit, now);
        self.tokens
    }

    /// Takes `value` tokens.
    pub fn record(&mut self, w: &Windows, limit: f64, value: f64, now: i64) {
        self.refill(w, limit, now);
        self.tokens = (self.tokens - value).min(Self::burst(w, limit));
    }

    /// How long until the bucket is back at zero (ms; 0 when it is not below):
    /// `-tokens / limit × 1000` (Kafka's `ControllerMutationQuotaManager.throttleTime`).
    pub fn throttle(&mut self, w: &Windows, limit: f64, now: i64) -> i64 {
        let tokens = self.tokens(w, limit, now);
        if tokens >= 0.0 {
            0
        } else {
            (-tokens / limit * 1000.0).round() as i64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Windows = Windows {
        samples: 11,
        window_ms: 1000,
    };

    #[test]
    fn a_young_rate_counts_ten_whole_windows() {
        let mut r = SampledRate::default();
        r.record(&W, 1000.0, 0);
        // 500 ms in: 0.5 s elapsed + 10 assumed windows.
        assert_eq!(r.window_size(&W, 500), 10_500);
        assert!((r.measure(&W, 500) - 1000.0 / 10.5).abs() < 1e-9);
        // After 12 s, the first sample has expired.
        r.record(&W, 0.0, 12_000);
        assert_eq!(r.measure(&W, 12_000), 0.0);
    }

    #[test]
    fn throttle_time_is_kafkas() {
        let mut r = SampledRate::default();
        // 10 MB at once against 1 MB/s: rate = 10 MB / 10 s = 1 MB/s, within.
        assert_eq!(r.record_and_throttle(&W, 10e6, 0, 1e6), 0);
        // 1 MB more 100 ms later: 11 MB over 10.1 s; throttle = (rate - q) / q × 10.1 s.
        let t = r.record_and_throttle(&W, 1e6, 100, 1e6);
        let rate: f64 = 11e6 / 10.1;
        assert_eq!(t, ((rate - 1e6) / 1e6 * 10_100.0).round() as i64);
        assert_eq!(t, 900);
    }

    #[test]
    fn a_steady_sender_that_honours_throttles_gets_its_limit() {
        // A client sending 64 KB requests as fast as throttling allows, for 60 s. A fresh
        // sensor lets a burst of ten windows through, and a burst comes back each time the
        // last one leaves the window: the rate is exact over whole periods of
        // samples × window (11 s), not over any 10 s.
        let (limit, size) = (1e6, 65536.0);
        let mut r = SampledRate::default();
        let mut now = 0;
        let mut sent: Vec<(i64, f64)> = Vec::new();
        while now < 60_000 {
            let t = r.record_and_throttle(&W, size, now, limit);
            sent.push((now, size));
            now += 2 + t;
        }
        let over = |from: i64, to: i64| {
            sent.iter()
                .filter(|(t, _)| (from..to).contains(t))
                .map(|(_, n)| n)
                .sum::<f64>()
                / ((to - from) as f64 / 1000.0)
        };
        for k in 0..4 {
            let from = 5_500 + k * 11_000;
            let rate = over(from, from + 11_000);
            assert!((rate - limit).abs() / limit < 0.02, "period {k}: {rate}");
        }
        // The first 10 s hold the first burst: about 16% over.
        assert!(over(0, 10_000) > 1.1 * limit);
    }

    #[test]
    fn the_token_bucket_starts_full_and_owes_what_it_overdrew() {
        let mut b = TokenBucket::default();
        // Burst: 10 windows × 1 s × 2 per second = 20.
        assert_eq!(b.tokens(&W, 2.0, 0), 20.0);
        b.record(&W, 2.0, 30.0, 0);
        assert_eq!(b.throttle(&W, 2.0, 0), 5000);
        // 5 s later it is back at zero.
        assert_eq!(b.throttle(&W, 2.0, 5000), 0);
        assert_eq!(b.tokens(&W, 2.0, 100_000), 20.0);
    }
}
