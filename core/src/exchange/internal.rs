//! How an exchange ends its attempts, retries, picks and finishes: the bookkeeping that keeps
//! each attempt one balancer and health update, and each exchange one record.

use super::*;

impl Exchange {
    /// The current attempt failed with `outcome`: retry if safe and affordable, else fail.
    pub(super) fn attempt_failed(
        &mut self,
        now: Instant,
        outcome: AttemptOutcome,
        code: ErrorCode,
        message: &'static str,
    ) -> Step {
        if outcome != AttemptOutcome::Timeout(Phase::Total)
            && let Some(step) = self.fall_back_on_hedge(now, outcome)
        {
            return step;
        }
        if let Some(step) = self.try_retry(now, outcome) {
            return step;
        }
        let State::Attempt {
            backend, started_at, ..
        } = self.state
        else {
            unreachable!("attempt_failed is only called in the attempt state");
        };
        self.end_attempt(backend, outcome, now - started_at, now);
        self.finish(now, ExchangeOutcome::Failed { code }, Some(outcome.side()));
        Step::Fail(S3ErrorResponse::new(code, Cow::Borrowed(message)))
    }

    /// If `outcome` may be retried and the budget allows, end the current attempt and dispatch
    /// the next; `None` leaves the current attempt untouched.
    pub(super) fn try_retry(&mut self, now: Instant, outcome: AttemptOutcome) -> Option<Step> {
        let State::Attempt {
            backend, started_at, ..
        } = self.state
        else {
            return None;
        };
        let request = self.request.as_ref()?;
        let context = RetryContext {
            idempotent: request.is_idempotent(),
            has_body: request.body.is_present(),
            body_started: self.body_started,
            response_started: false,
            attempts: self.attempts,
        };
        let verdict = self.snapshot.settings().retry_policy().verdict(outcome, context);
        self.last_retry_verdict = Some(verdict);
        if verdict != RetryVerdict::Retry {
            return None;
        }
        let pool_id = self.route?.pool;
        let id = self.id;
        let withdrawn = self.with_pool(now, |pool, now| {
            let withdrawn = pool.budget_mut().try_withdraw(now);
            if !withdrawn {
                pool.push_event(Event::RetryRefused {
                    pool: pool_id,
                    exchange: id,
                });
            }
            withdrawn
        })?;
        if !withdrawn {
            self.retry_budget_exhausted = true;
            tracing::debug!(exchange = self.id, "retry refused: budget exhausted");
            return None;
        }
        self.end_attempt(backend, outcome, now - started_at, now);
        self.fail_over_when_exhausted(now);
        match self.dispatch(now) {
            Some(dispatch) => {
                tracing::debug!(exchange = self.id, attempt = dispatch.attempt, failed = %backend, next = %dispatch.backend, outcome = outcome.class(), "retry");
                Some(Step::Retry(dispatch))
            }
            None => {
                self.finish(
                    now,
                    ExchangeOutcome::Failed {
                        code: ErrorCode::ServiceUnavailable,
                    },
                    Some(Side::Backend),
                );
                Some(Step::Fail(S3ErrorResponse::new(
                    ErrorCode::ServiceUnavailable,
                    "no backend is available; please retry",
                )))
            }
        }
    }

    /// Before a retry: when this exchange's pool has no available backend it has not tried
    /// (its zone unreachable while health has not yet said so: each try meets a connect
    /// failure or a timeout), move the exchange to the failover pool the router names, so the
    /// retry goes where it can succeed. Only a retry the policy already judged safe gets here
    /// (an idempotent request, or one that never reached a backend), and crossing a pool does
    /// not change what the backend saw. The retry budget was already drawn from the pool that
    /// failed; the next attempt is recorded in the pool it runs in.
    fn fail_over_when_exhausted(&mut self, now: Instant) {
        let Some(route) = self.route else { return };
        let tried = std::mem::take(&mut self.tried);
        let exhausted = self.with_pool(now, |pool, _| !pool.balancer().has_available_untried(&tried));
        self.tried = tried;
        if exhausted != Some(true) {
            return;
        }
        let pools = self.snapshot.pools();
        let target = self.snapshot.settings().router().failover_for_retry(&route, |pool| {
            pools.get(pool.0).is_some_and(|cell| cell.has_available())
        });
        let Some(target) = target else { return };
        tracing::debug!(
            exchange = self.id,
            from = route.pool.0,
            to = target.0,
            "retry fails over"
        );
        self.route = Some(RouteDecision {
            pool: target,
            reason: route.reason,
            failed_over_from: Some(route.failed_over_from.unwrap_or(route.pool)),
        });
        self.pool = Some(target.0);
    }

    /// Run `f` on this exchange's pool under its lock, with `now` as the pool orders it (never
    /// behind what another thread passed it), and keep the events the call queued for
    /// [`Exchange::poll_event`]. `None` before routing.
    pub(super) fn with_pool<T>(&mut self, now: Instant, f: impl FnOnce(&mut Pool, Instant) -> T) -> Option<T> {
        let cell: &PoolCell = self.snapshot.pools().get(self.pool?)?;
        let pending = &mut self.pending;
        Some(cell.with(|pool| {
            let now = pool.order(now);
            let result = f(pool, now);
            pending.extend(std::iter::from_fn(|| pool.poll_event()));
            result
        }))
    }

    /// Count the request in its pool's retry budget (and hedge budget, when it may be hedged),
    /// learn the pool's hedge delay, and dispatch its first attempt.
    pub(super) fn dispatch_first(&mut self, now: Instant) -> Option<Dispatch> {
        let tried = std::mem::take(&mut self.tried);
        let hedgeable = self.hedgeable();
        let picked = self.with_pool(now, |pool, now| {
            pool.budget_mut().record_request(now);
            pool.record_arrival(now);
            let delay = hedgeable.then(|| {
                pool.hedging_mut().record_request(now);
                pool.hedging().delay()
            });
            (pick_and_start(pool, now, &tried), delay.flatten())
        });
        self.tried = tried;
        let (picked, delay) = picked?;
        self.hedging.delay = delay;
        self.start_attempt(now, picked?)
    }

    /// Pick a backend (avoiding those tried) and start an attempt on it.
    pub(super) fn dispatch(&mut self, now: Instant) -> Option<Dispatch> {
        let tried = std::mem::take(&mut self.tried);
        let picked = self.with_pool(now, |pool, now| pick_and_start(pool, now, &tried));
        self.tried = tried;
        self.start_attempt(now, picked??)
    }

    /// The attempt on the backend just picked and started in the balancer.
    pub(super) fn start_attempt(&mut self, now: Instant, picked: Picked) -> Option<Dispatch> {
        let pool_id = self.route?.pool;
        let (backend, address) = (picked.backend, picked.address.clone());
        self.attempts += 1;
        debug_assert!(self.attempts <= self.max_attempts, "attempts past the policy's maximum");
        if !self.tried.contains(&backend) {
            self.tried.push(backend);
        }
        self.state = State::Attempt {
            backend,
            started_at: now,
            phase: AttemptPhase::Connecting { since: now },
        };
        self.open = Some(OpenAttempt::new(pool_id, picked, self.attempts, now, false));
        Some(Dispatch {
            plan: self.plan.clone().expect("a dispatched exchange has its plan"),
            pool: pool_id,
            backend,
            address,
            attempt: self.attempts,
        })
    }

    /// The verification [`Step::Verify`] to ask for, when the answer `status` of `backend` to
    /// this request may hide a success the client missed: a CompleteMultipartUpload of a key
    /// answered `404` (the upload is gone, perhaps completed). A HEAD of the object, to the
    /// same backend.
    pub(super) fn verification(&self, backend: BackendId, status: u16) -> Option<Dispatch> {
        let request = self.request.as_ref()?;
        if status != 404 || request.operation != Operation::CompleteMultipartUpload || request.key.is_none() {
            return None;
        }
        let plan = forward::plan_head_object(self.plan.as_deref()?)?;
        let open = self.open.as_ref()?;
        Some(Dispatch {
            plan: Arc::new(plan),
            pool: self.route?.pool,
            backend,
            address: open.record.address.clone(),
            attempt: self.attempts,
        })
    }

    /// The verification could not end (the total deadline passed): the client gets `code`;
    /// the backend's answer was sound and is recorded as it was.
    pub(super) fn verification_failed(&mut self, now: Instant, code: ErrorCode, message: &'static str) -> Step {
        let State::Verifying {
            backend,
            status,
            first_byte,
        } = self.state
        else {
            unreachable!("verification_failed is only called while verifying");
        };
        self.end_attempt(backend, AttemptOutcome::Response { status }, first_byte, now);
        self.finish(now, ExchangeOutcome::Failed { code }, Some(Side::Proxy));
        Step::Fail(S3ErrorResponse::new(code, Cow::Borrowed(message)))
    }

    pub(super) fn abort(&mut self, now: Instant, outcome: AttemptOutcome) -> Step {
        let State::Responding {
            backend, first_byte, ..
        } = self.state
        else {
            unreachable!("abort is only called while responding");
        };
        self.end_attempt(backend, outcome, first_byte.max(now - self.started_at), now);
        self.finish(now, ExchangeOutcome::Aborted { outcome }, Some(outcome.side()));
        Step::Abort
    }

    pub(super) fn end_attempt(&mut self, backend: BackendId, outcome: AttemptOutcome, latency: Duration, now: Instant) {
        self.with_pool(now, |pool, now| pool.end_attempt(backend, outcome, latency, now));
        if let Some(open) = self.open.take() {
            debug_assert_eq!(open.record.backend, backend, "the open attempt is the one ending");
            let mut record = open.record;
            record.ended_at = now;
            record.outcome = outcome;
            self.attempt_records.push(record);
        }
    }

    pub(super) fn reject(mut self, now: Instant, response: S3ErrorResponse, fault: Side) -> (Exchange, Step) {
        self.finish(now, ExchangeOutcome::Rejected { code: response.code }, Some(fault));
        (self, Step::Reject(response))
    }

    pub(super) fn finish(&mut self, now: Instant, outcome: ExchangeOutcome, fault: Option<Side>) {
        debug_assert!(!matches!(self.state, State::Finished(_)), "an exchange ends once");
        // A hedge still open when the exchange ends (the client left, the total deadline, the
        // attempt beside it answered) is dropped with it.
        self.cancel_hedge(now);
        debug_assert!(self.open.is_none(), "every attempt ends before its exchange");
        tracing::debug!(
            exchange = self.id,
            attempts = self.attempts,
            ?outcome,
            "exchange finished"
        );
        let status = match outcome {
            ExchangeOutcome::Completed { status } | ExchangeOutcome::Served { status } => Some(status),
            ExchangeOutcome::Recovered => Some(200),
            ExchangeOutcome::Rejected { code } | ExchangeOutcome::Failed { code } => Some(code.status()),
            // The head went out before the body broke or the client left: the client saw the
            // backend's status.
            ExchangeOutcome::Aborted { .. } | ExchangeOutcome::ClientGone => match self.state {
                State::Responding { status, .. } => Some(status),
                _ => None,
            },
        };
        let request = self.request.as_ref();
        self.record = Some(Box::new(ExchangeRecord {
            id: self.id,
            method: self.method.clone(),
            started_at: self.started_at,
            ended_at: now.max(self.started_at),
            operation: request.map(|request| request.operation),
            bucket: request.and_then(|request| request.bucket.clone()),
            key: request.and_then(|request| request.key.clone()),
            caller: self.caller.clone(),
            decision: self.decision.clone(),
            route: self.route,
            attempts: std::mem::take(&mut self.attempt_records),
            outcome: outcome.clone(),
            status,
            fault,
            retry_budget_exhausted: self.retry_budget_exhausted,
            continued_locally: self.continued_locally,
            request_body_bytes: self.request_body_bytes,
            response_body_bytes: self.response_body_bytes,
            trace: self.trace.clone(),
            hedge: self.hedging.result,
        }));
        self.state = State::Finished(outcome);
    }

    pub(super) fn contract_violation(&self, what: &str) -> Step {
        debug_assert!(false, "exchange {}: {what} (state {:?})", self.id, self.state);
        Step::Continue
    }
}

impl OpenAttempt {
    /// Attempt `number` of an exchange, on the backend `picked` in `pool`, dispatched at
    /// `now`; `hedge` when it is sent beside another rather than after one.
    pub(super) fn new(pool: PoolId, picked: Picked, number: u32, now: Instant, hedge: bool) -> OpenAttempt {
        OpenAttempt {
            record: AttemptRecord {
                pool,
                backend: picked.backend,
                address: picked.address,
                number,
                started_at: now,
                connected_at: None,
                sent_at: None,
                first_byte: None,
                ended_at: now,
                outcome: AttemptOutcome::Abandoned,
                stale_connections: 0,
                dispatched_unavailable: picked.dispatched_unavailable,
                panic_mode: picked.panic_mode,
                hedge,
            },
        }
    }
}

/// A backend picked and started in its pool's balancer, with what the record needs of it.
pub(super) struct Picked {
    pub(super) backend: BackendId,
    pub(super) address: String,
    pub(super) dispatched_unavailable: bool,
    pub(super) panic_mode: bool,
}

/// Pick a backend of `pool` not in `tried` and count the attempt as started on it. When every
/// backend was tried, one of them is picked again.
pub(super) fn pick_and_start(pool: &mut Pool, now: Instant, tried: &[BackendId]) -> Option<Picked> {
    let (balancer, rng) = pool.balancer_and_rng();
    let backend = balancer.pick_excluding(now, rng, tried)?;
    let picked = balancer.get(backend)?;
    let address = picked.spec().address.clone();
    let dispatched_unavailable = !picked.is_available();
    let panic_mode = balancer.is_panic_mode();
    let started = balancer.on_start(backend, now);
    debug_assert!(started, "a picked backend exists");
    Some(Picked {
        backend,
        address,
        dispatched_unavailable,
        panic_mode,
    })
}
