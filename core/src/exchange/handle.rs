//! The driver's inputs to an exchange: deadlines, connection progress, the response, and
//! every way an attempt or the exchange can end (see the call order in the module docs).

use super::*;

impl Exchange {
    /// The next deadline core owns, with its phase (see the module docs): the backend's first
    /// byte once the request was sent, and the total deadline. `None` when neither applies.
    pub fn poll_timeout(&self) -> Option<(Instant, Phase)> {
        let phase_deadline = match self.state {
            State::Attempt {
                phase: AttemptPhase::Connecting { since },
                ..
            } => Some((since + self.timeouts.backend_connect, Phase::BackendConnect)),
            State::Attempt {
                phase: AttemptPhase::AwaitingHead { since },
                ..
            } => Some((since + self.timeouts.backend_first_byte, Phase::BackendFirstByte)),
            State::Attempt {
                phase: AttemptPhase::WaitingSlot | AttemptPhase::Sending,
                ..
            }
            | State::Verifying { .. }
            | State::Responding { .. } => None,
            State::Starting | State::Local | State::Finished(_) => return None,
        };
        let total = self.timeouts.total.map(|total| (self.started_at + total, Phase::Total));
        match (phase_deadline, total) {
            (Some(phase), Some(total)) => Some(if total.0 < phase.0 { total } else { phase }),
            (one, other) => one.or(other),
        }
    }

    /// The instant from [`Exchange::poll_timeout`] has come (or passed): handle the deadline
    /// that is due, as [`Exchange::handle_timeout`] with its phase. Nothing is due (the state
    /// moved on since the driver asked): `Continue`, and the driver asks again.
    pub fn handle_deadline(&mut self, now: Instant) -> Step {
        match self.poll_timeout() {
            Some((due, phase)) if due <= now => self.handle_timeout(now, phase),
            _ => Step::Continue,
        }
    }

    /// Every connection slot of the backend is taken: the attempt waits for one. The connect
    /// deadline does not run while it waits (the wait is the proxy's own bounded limit, not the
    /// backend's slowness); the total deadline still does.
    pub fn handle_waiting_for_connection(&mut self, _now: Instant) {
        if let State::Attempt {
            phase: phase @ AttemptPhase::Connecting { .. },
            ..
        } = &mut self.state
        {
            *phase = AttemptPhase::WaitingSlot;
        }
    }

    /// The runtime starts dialling the backend (no idle connection could be reused): the
    /// connect deadline counts from `now`.
    pub fn handle_dialing(&mut self, now: Instant) {
        if let State::Attempt {
            phase: phase @ (AttemptPhase::WaitingSlot | AttemptPhase::Connecting { .. }),
            ..
        } = &mut self.state
        {
            *phase = AttemptPhase::Connecting { since: now };
        }
    }

    /// The backend connection of the current attempt is open.
    pub fn handle_connected(&mut self, now: Instant) {
        if let Some(open) = self.open.as_mut() {
            open.record.connected_at.get_or_insert(now);
        }
        if let State::Attempt {
            phase: phase @ (AttemptPhase::Connecting { .. } | AttemptPhase::WaitingSlot),
            ..
        } = &mut self.state
        {
            *phase = AttemptPhase::Sending;
        }
    }

    /// The first request-body byte was taken from the client: from now on, a request with a
    /// body cannot be retried.
    pub fn handle_body_started(&mut self, _now: Instant) {
        self.body_started = true;
    }

    /// The whole request (head and body) was written to the backend at `now` (which may be
    /// earlier than the last event: the runtime learns of it late); the first-byte timeout and
    /// the latency measurement start there.
    pub fn handle_request_sent(&mut self, now: Instant) {
        if let State::Attempt { phase, .. } = &mut self.state
            && !matches!(phase, AttemptPhase::AwaitingHead { .. })
        {
            *phase = AttemptPhase::AwaitingHead { since: now };
            if let Some(open) = self.open.as_mut() {
                open.record.sent_at = Some(now);
            }
        }
    }

    /// The backend connection could not be opened.
    pub fn handle_connect_failed(&mut self, now: Instant) -> Step {
        match self.state {
            State::Attempt { .. } => self.attempt_failed(
                now,
                AttemptOutcome::ConnectFailed,
                ErrorCode::ServiceUnavailable,
                "no backend could be reached; please retry",
            ),
            State::Verifying { .. } | State::Responding { .. } => {
                self.contract_violation("connect failure while responding")
            }
            State::Starting | State::Local | State::Finished(_) => Step::Continue,
        }
    }

    /// The backend's response head arrived with `status`.
    pub fn handle_response_head(&mut self, now: Instant, status: u16) -> Step {
        let State::Attempt {
            backend,
            started_at,
            phase,
        } = self.state
        else {
            return match self.state {
                State::Starting | State::Local | State::Finished(_) => Step::Continue,
                _ => self.contract_violation("a second response head"),
            };
        };
        let waited_since = phase.waited_since(started_at);
        let outcome = AttemptOutcome::Response { status };
        let transient = self.snapshot.settings().retry_policy().retried.contains(status);
        if transient && let Some(step) = self.fall_back_on_hedge(now, outcome) {
            return step;
        }
        if transient && let Some(step) = self.try_retry(now, outcome) {
            return step;
        }
        // This answer wins: a hedge beside it is dropped.
        self.cancel_hedge(now);
        let first_byte = now - waited_since;
        if let Some(open) = self.open.as_mut() {
            open.record.first_byte = Some(first_byte);
        }
        if let Some(verify) = self.verification(backend, status) {
            self.state = State::Verifying {
                backend,
                status,
                first_byte,
            };
            return Step::Verify(verify);
        }
        self.state = State::Responding {
            backend,
            status,
            first_byte,
        };
        Step::Return
    }

    /// The response body was delivered whole to the client.
    pub fn handle_response_done(&mut self, now: Instant) -> Step {
        match self.state {
            State::Responding {
                backend,
                status,
                first_byte,
            } => {
                self.end_attempt(backend, AttemptOutcome::Response { status }, first_byte, now);
                self.finish(
                    now,
                    ExchangeOutcome::Completed { status },
                    fault_of(
                        status,
                        Side::Backend,
                        self.snapshot.settings().failure_statuses().contains(status),
                    ),
                );
                Step::Done
            }
            State::Attempt { .. } | State::Verifying { .. } => self.contract_violation("response done before its head"),
            State::Starting | State::Local | State::Finished(_) => Step::Continue,
        }
    }

    /// The backend connection broke (reset, or closed early).
    pub fn handle_backend_reset(&mut self, now: Instant) -> Step {
        match self.state {
            State::Attempt {
                phase: AttemptPhase::Connecting { .. } | AttemptPhase::WaitingSlot,
                ..
            } => self.handle_connect_failed(now),
            State::Attempt { .. } => self.attempt_failed(
                now,
                AttemptOutcome::Reset {
                    response_started: false,
                },
                ErrorCode::BadGateway,
                "the storage node closed the connection before answering; please retry",
            ),
            State::Responding { .. } => self.abort(now, AttemptOutcome::Reset { response_started: true }),
            State::Verifying { .. } => self.contract_violation("a reset while verifying"),
            State::Starting | State::Local | State::Finished(_) => Step::Continue,
        }
    }

    /// A phase timed out (core's own deadline from [`Exchange::poll_timeout`], or an idle
    /// timeout the runtime enforces).
    pub fn handle_timeout(&mut self, now: Instant, phase: Phase) -> Step {
        let outcome = AttemptOutcome::Timeout(phase);
        match (&self.state, phase) {
            (State::Starting | State::Local | State::Finished(_), _) => Step::Continue,
            (State::Attempt { .. }, Phase::BackendConnect) => self.attempt_failed(
                now,
                outcome,
                ErrorCode::ServiceUnavailable,
                "no backend accepted a connection in time; please retry",
            ),
            (State::Attempt { .. }, Phase::BackendFirstByte | Phase::BackendBodyIdle) => self.attempt_failed(
                now,
                AttemptOutcome::Timeout(Phase::BackendFirstByte),
                ErrorCode::GatewayTimeout,
                "the storage node did not answer in time; please retry",
            ),
            (State::Attempt { .. }, Phase::BackendSendIdle) => self.attempt_failed(
                now,
                outcome,
                ErrorCode::GatewayTimeout,
                "the storage node stopped accepting the request body; please retry",
            ),
            (State::Attempt { .. }, Phase::Total) => self.attempt_failed(
                now,
                outcome,
                ErrorCode::GatewayTimeout,
                "the request exceeded the proxy's deadline",
            ),
            (State::Attempt { .. }, Phase::ClientBodyIdle | Phase::ClientHeader | Phase::ResponseWriteIdle) => {
                // The client stalled mid-upload. The attempt ends as the client's doing; the
                // runtime drops the backend connection so nothing truncated is committed.
                self.attempt_failed(
                    now,
                    AttemptOutcome::Abandoned,
                    ErrorCode::RequestTimeout,
                    "Your socket connection to the server was not read from or written to within the timeout period.",
                )
            }
            (State::Verifying { .. }, Phase::Total) => self.verification_failed(
                now,
                ErrorCode::GatewayTimeout,
                "the request exceeded the proxy's deadline",
            ),
            (State::Verifying { .. }, _) => self.contract_violation("an IO timeout while verifying"),
            (State::Responding { .. }, _) => self.abort(now, outcome),
        }
    }

    /// The proxy could not get a connection to the backend within its own limits (the
    /// per-backend connection cap was full for the whole bounded wait). Nothing reached the
    /// backend and it is not to blame: the attempt ends as abandoned and the client gets
    /// `503 SlowDown`, which SDKs back off from and retry.
    pub fn handle_local_limit(&mut self, now: Instant) -> Step {
        let error = S3ErrorResponse::new(
            ErrorCode::SlowDown,
            "Please reduce your request rate: the proxy's connection limit for the storage node is reached.",
        );
        self.local_failure(now, error, AttemptOutcome::Abandoned, Side::Proxy)
    }

    /// The client went away. The runtime drops the backend connection.
    pub fn handle_client_gone(&mut self, now: Instant) -> Step {
        match self.state {
            State::Attempt {
                backend, started_at, ..
            } => {
                self.end_attempt(backend, AttemptOutcome::Abandoned, now - started_at, now);
            }
            State::Verifying {
                backend, first_byte, ..
            }
            | State::Responding {
                backend, first_byte, ..
            } => {
                self.end_attempt(backend, AttemptOutcome::Abandoned, first_byte, now);
            }
            State::Starting | State::Local | State::Finished(_) => return Step::Continue,
        }
        self.finish(now, ExchangeOutcome::ClientGone, Some(Side::Client));
        Step::Done
    }

    /// The backend answered the verification that [`Step::Verify`] asked for: `etag` is the
    /// object's ETag from its HEAD (`None`: no object, or no answer), `body` the request body
    /// the runtime kept (`None`: it was longer than [`Exchange::keeps_request_body`]). When
    /// the object is exactly what this CompleteMultipartUpload makes (its ETag is the one the
    /// listed parts give), the upload was completed by an earlier try whose answer was lost:
    /// the client gets the success it missed (`Answer`). Otherwise it gets the backend's
    /// answer as it was (`Return`).
    pub fn handle_verified(&mut self, now: Instant, etag: Option<&str>, body: Option<&[u8]>) -> Step {
        let State::Verifying {
            backend,
            status,
            first_byte,
        } = self.state
        else {
            return match self.state {
                State::Finished(_) => Step::Continue,
                _ => self.contract_violation("a verification that was not asked for"),
            };
        };
        let request = self.request.as_ref().expect("only a classified completion is verified");
        let expected = body.and_then(crate::s3::completion::multipart_etag);
        let completed = match (etag, expected.as_deref()) {
            (Some(etag), Some(expected)) => crate::s3::completion::etag_matches(etag, expected),
            _ => false,
        };
        if !completed {
            tracing::debug!(
                exchange = self.id,
                ?etag,
                ?expected,
                "completion not verified: the backend's answer stands"
            );
            self.state = State::Responding {
                backend,
                status,
                first_byte,
            };
            return Step::Return;
        }
        let (bucket, key) = (
            request.bucket.as_deref().unwrap_or_default(),
            request.key.as_deref().unwrap_or_default(),
        );
        let answer = Answer {
            status: 200,
            body: crate::s3::completion::result_xml(bucket, key, expected.as_deref().unwrap_or_default()),
        };
        tracing::info!(
            exchange = self.id,
            bucket,
            key,
            "completion verified: answering the success an earlier try lost"
        );
        self.end_attempt(backend, AttemptOutcome::Response { status }, first_byte, now);
        self.response_body_bytes = answer.body.len() as u64;
        self.finish(now, ExchangeOutcome::Recovered, None);
        Step::Answer(answer)
    }
}
