//! A hedge: a second attempt of a bodyless read beside a first one slow to answer, and the
//! bookkeeping that keeps each of the two one balancer and health update (see
//! [`crate::hedge`] for the delay and budget).

use super::internal::pick_and_start;
use super::*;

impl Exchange {
    /// When this exchange's attempt will have waited longer than the hedge delay for its
    /// response head (a microsecond past it: an answer that takes exactly the pool's
    /// percentile, as on a clock that ticks in milliseconds, is not a slow one): due,
    /// [`Exchange::handle_hedge_due`] may answer [`Step::Hedge`]. A separate instant from
    /// [`Exchange::poll_timeout`]'s, so that a driver never meets a hedge where it handles a
    /// deadline. `None` when it may not be
    /// (hedging off, not a bodyless read, already hedged, not yet sent whole, or past
    /// waiting for its head).
    pub fn poll_hedge(&self) -> Option<Instant> {
        if self.hedging.spent {
            return None;
        }
        let delay = self.hedging.delay?;
        match self.state {
            State::Attempt {
                phase: AttemptPhase::AwaitingHead { since },
                ..
            } => Some(since + delay + Duration::from_micros(1)),
            _ => None,
        }
    }

    /// The instant from [`Exchange::poll_hedge`] has come: send a hedge (`Hedge`) if the hedge
    /// and retry budgets allow one and an untried backend is available; `Continue` otherwise,
    /// or when it is not due (at most one hedge per exchange either way).
    pub fn handle_hedge_due(&mut self, now: Instant) -> Step {
        if self.poll_hedge().is_some_and(|due| due <= now) {
            self.start_hedge(now)
        } else {
            Step::Continue
        }
    }

    /// The hedge's request was written whole at `now` (on an open connection).
    pub fn handle_hedge_sent(&mut self, now: Instant) {
        if self.hedging.promoted {
            self.handle_connected(now);
            self.handle_request_sent(now);
            return;
        }
        if let Some(hedge) = self.hedging.open.as_mut() {
            hedge.sent_at.get_or_insert(now);
            hedge.open.record.connected_at.get_or_insert(now);
            hedge.open.record.sent_at.get_or_insert(now);
        }
    }

    /// The hedge's response head arrived with `status`. A transient error (a status the
    /// retry policy retries) is the hedge failing: `Continue`, the attempt beside it carries
    /// on. Any other answer wins: the attempt beside it is cancelled and the hedge's response
    /// goes back (`Return`). After the attempt beside it failed, the hedge is the exchange's
    /// attempt and its head is handled as [`Exchange::handle_response_head`] handles one.
    pub fn handle_hedge_head(&mut self, now: Instant, status: u16) -> Step {
        if self.hedging.promoted {
            return self.handle_response_head(now, status);
        }
        let State::Attempt {
            backend: first,
            started_at,
            phase,
        } = self.state
        else {
            return match self.state {
                State::Finished(_) => Step::Continue,
                _ => self.contract_violation("a hedge's head outside an attempt"),
            };
        };
        let Some(hedge) = self.hedging.open.take() else {
            return self.contract_violation("a head of no hedge");
        };
        let since = hedge.sent_at.unwrap_or(hedge.started_at);
        if self.snapshot.settings().retry_policy().retried.contains(status) {
            self.end_hedge(*hedge, AttemptOutcome::Response { status }, now - since, now);
            self.hedging.result = Some(HedgeResult::Failed);
            return Step::Continue;
        }
        self.end_attempt(
            first,
            AttemptOutcome::Cancelled,
            now - phase.waited_since(started_at),
            now,
        );
        tracing::debug!(exchange = self.id, slow = %first, hedge = %hedge.backend, "the hedge answered first");
        let HedgeAttempt { backend, mut open, .. } = *hedge;
        let first_byte = now - since;
        open.record.first_byte = Some(first_byte);
        self.open = Some(open);
        self.hedging.result = Some(HedgeResult::Won);
        self.state = State::Responding {
            backend,
            status,
            first_byte,
        };
        Step::Return
    }

    /// The hedge failed before its head: `outcome` is a failed connect, a reset, or
    /// [`AttemptOutcome::Abandoned`] when the proxy had no connection slot for it. The attempt
    /// beside it carries on (`Continue`); once the hedge is the exchange's attempt, the failure
    /// is that attempt's (retried or failed as any other).
    pub fn handle_hedge_failed(&mut self, now: Instant, outcome: AttemptOutcome) -> Step {
        if self.hedging.promoted {
            return match outcome {
                AttemptOutcome::ConnectFailed => self.handle_connect_failed(now),
                AttemptOutcome::Timeout(phase) => self.handle_timeout(now, phase),
                AttemptOutcome::Abandoned => self.handle_local_limit(now),
                _ => self.handle_backend_reset(now),
            };
        }
        let Some(hedge) = self.hedging.open.take() else {
            return Step::Continue;
        };
        let since = hedge.sent_at.unwrap_or(hedge.started_at);
        self.end_hedge(*hedge, outcome, now - since, now);
        self.hedging.result = Some(HedgeResult::Failed);
        Step::Continue
    }

    /// True for a request that may be hedged: a bodyless read.
    pub(super) fn hedgeable(&self) -> bool {
        let bodyless = self
            .plan
            .as_ref()
            .is_some_and(|plan| plan.body == forward::BodyFraming::Empty);
        bodyless && self.request.as_ref().is_some_and(S3Request::is_read_only)
    }

    /// The hedge delay passed: send a hedge to another backend of the pool (see
    /// [`Exchange::handle_hedge_due`]).
    fn start_hedge(&mut self, now: Instant) -> Step {
        self.hedging.spent = true;
        let (Some(route), Some(plan)) = (self.route, self.plan.clone()) else {
            return Step::Continue;
        };
        if self.attempts >= self.max_attempts {
            return Step::Continue;
        }
        let tried = std::mem::take(&mut self.tried);
        let picked = self.with_pool(now, |pool, now| {
            if !pool.balancer().has_available_untried(&tried) {
                return None;
            }
            // Both budgets, or neither: a hedge the retry budget refuses spends no hedge.
            if !(pool.hedging().allows(now) && pool.budget().allows(now)) {
                return Some(None);
            }
            let taken = pool.hedging_mut().try_withdraw(now) && pool.budget_mut().try_withdraw(now);
            debug_assert!(taken, "both budgets allowed it under the same lock");
            // An untried backend is available (above), so the pick is one of them.
            Some(pick_and_start(pool, now, &tried))
        });
        self.tried = tried;
        let picked = match picked.flatten() {
            // Nowhere else to send it: not a refusal.
            None => return Step::Continue,
            Some(None) => {
                tracing::debug!(exchange = self.id, "hedge refused: budget exhausted");
                self.hedging.result = Some(HedgeResult::Refused);
                return Step::Continue;
            }
            Some(Some(picked)) => picked,
        };
        let (backend, address) = (picked.backend, picked.address.clone());
        self.attempts += 1;
        self.tried.push(backend);
        self.hedging.open = Some(Box::new(HedgeAttempt {
            backend,
            started_at: now,
            sent_at: None,
            open: OpenAttempt::new(route.pool, picked, self.attempts, now, true),
        }));
        tracing::debug!(exchange = self.id, %backend, delay = ?self.hedging.delay, "hedge");
        Step::Hedge(Dispatch {
            plan,
            pool: route.pool,
            backend,
            address,
            attempt: self.attempts,
        })
    }

    /// The attempt failed with `outcome` while a hedge is under way: end it, and let the
    /// hedge carry the exchange (`AwaitHedge`). `None` without a hedge.
    pub(super) fn fall_back_on_hedge(&mut self, now: Instant, outcome: AttemptOutcome) -> Option<Step> {
        self.hedging.open.as_ref()?;
        let State::Attempt {
            backend, started_at, ..
        } = self.state
        else {
            return None;
        };
        self.end_attempt(backend, outcome, now - started_at, now);
        let hedge = self.hedging.open.take()?;
        let HedgeAttempt {
            backend,
            started_at,
            sent_at,
            open,
        } = *hedge;
        self.open = Some(open);
        self.state = State::Attempt {
            backend,
            started_at,
            phase: match sent_at {
                Some(since) => AttemptPhase::AwaitingHead { since },
                None => AttemptPhase::Sending,
            },
        };
        self.hedging.promoted = true;
        self.hedging.result = Some(HedgeResult::Won);
        tracing::debug!(exchange = self.id, %backend, "attempt failed: the hedge carries on");
        Some(Step::AwaitHedge)
    }

    /// Drop the hedge still open beside the attempt (that attempt answered, or the exchange
    /// ended): it ends as cancelled, after the time it had.
    pub(super) fn cancel_hedge(&mut self, now: Instant) {
        if let Some(hedge) = self.hedging.open.take() {
            let since = hedge.sent_at.unwrap_or(hedge.started_at);
            self.end_hedge(*hedge, AttemptOutcome::Cancelled, now - since, now);
            self.hedging.result.get_or_insert(HedgeResult::Lost);
        }
    }

    /// Record the end of `hedge` in its pool and in the exchange's attempts.
    fn end_hedge(&mut self, hedge: HedgeAttempt, outcome: AttemptOutcome, latency: Duration, now: Instant) {
        let backend = hedge.backend;
        self.with_pool(now, |pool, now| pool.end_attempt(backend, outcome, latency, now));
        let mut record = hedge.open.record;
        record.ended_at = now;
        record.outcome = outcome;
        self.attempt_records.push(record);
    }
}
