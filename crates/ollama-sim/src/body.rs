//! The simulator's response body: a fixed buffer, or a scheduled stream of frames.
//!
//! The body owns the request's [`Tracker`], so the log learns exactly how the response
//! ended: produced to the end, deliberately aborted, or dropped early by hyper because the
//! client went away.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::controls::{Controls, Fail};
use super::log::Tracker;

/// Number of frames sent before an `x-sim-fail` takes effect.
const FRAMES_BEFORE_FAIL: usize = 2;

/// The only way a simulator body fails.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SimError {
    /// `x-sim-fail: abort`: hyper must cut the connection without the chunked terminator.
    #[error("simulated upstream failure: stream aborted")]
    Abort,
}

/// One frame of a stream and whether it waits `chunk_delay` before being sent (content
/// chunks do; bookkeeping lines such as the final `done` line follow immediately).
#[derive(Debug)]
pub(crate) struct Chunk {
    data: Bytes,
    delayed: bool,
}

impl Chunk {
    pub(crate) fn delayed(data: Bytes) -> Self {
        Chunk {
            data,
            delayed: true,
        }
    }

    pub(crate) fn now(data: Bytes) -> Self {
        Chunk {
            data,
            delayed: false,
        }
    }

    /// The frame's bytes.
    #[cfg(test)]
    pub(crate) fn data(&self) -> &Bytes {
        &self.data
    }
}

/// A whole stream, planned up front from the request's [`Controls`].
#[derive(Debug)]
pub(crate) struct StreamPlan {
    chunks: VecDeque<Chunk>,
    chunk_delay: Duration,
    abort_at_end: bool,
    /// The abort waits one turn (and `chunk_delay`, like the chunk it replaces) so hyper
    /// flushes the frames before it cuts the connection.
    abort_armed: bool,
}

impl StreamPlan {
    /// Applies the failure mode: after two frames, either the in-band `error_line` ends the
    /// stream cleanly, or the stream aborts.
    pub(crate) fn new(controls: &Controls, mut chunks: Vec<Chunk>, error_line: Bytes) -> Self {
        let mut abort_at_end = false;
        match controls.fail {
            Fail::None => {}
            Fail::ErrorLine => {
                chunks.truncate(FRAMES_BEFORE_FAIL);
                chunks.push(Chunk::now(error_line));
            }
            Fail::Abort => {
                chunks.truncate(FRAMES_BEFORE_FAIL);
                abort_at_end = true;
            }
        }
        StreamPlan {
            chunks: chunks.into(),
            chunk_delay: controls.chunk_delay,
            abort_at_end,
            abort_armed: false,
        }
    }
}

/// What a response carries.
#[derive(Debug)]
pub(crate) enum Payload {
    /// No body (`Content-Length: 0`, or a HEAD answer).
    Empty,
    /// A fixed body, sent with `Content-Length`.
    Full(Bytes),
    /// A streamed body, sent chunked.
    Stream(Box<StreamPlan>),
}

#[derive(Debug)]
enum State {
    Done,
    Full(Bytes),
    Stream {
        plan: Box<StreamPlan>,
        pending: Option<Bytes>,
        sleep: Option<Pin<Box<Sleep>>>,
    },
}

/// The response body type of every simulator response.
#[derive(Debug)]
pub(crate) struct SimBody {
    state: State,
    tracker: Tracker,
}

// === impl SimBody ===

impl SimBody {
    /// An empty body is complete as soon as it exists: hyper never polls it.
    pub(crate) fn new(payload: Payload, mut tracker: Tracker) -> Self {
        let state = match payload {
            Payload::Empty => State::Done,
            Payload::Full(bytes) if bytes.is_empty() => State::Done,
            Payload::Full(bytes) => State::Full(bytes),
            Payload::Stream(plan) => State::Stream {
                plan,
                pending: None,
                sleep: None,
            },
        };
        if matches!(state, State::Done) {
            tracker.finish();
        }
        SimBody { state, tracker }
    }

    /// Emits one stream frame, marking the request finished if it was the last one.
    fn emit(&mut self, data: Bytes) -> Poll<Option<Result<Frame<Bytes>, SimError>>> {
        if let State::Stream { plan, .. } = &self.state {
            if plan.chunks.is_empty() && !plan.abort_at_end {
                self.tracker.finish();
            }
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn poll_stream(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, SimError>>> {
        loop {
            let State::Stream {
                plan,
                pending,
                sleep,
            } = &mut self.state
            else {
                return Poll::Ready(None);
            };
            if let Some(timer) = sleep.as_mut() {
                ready!(timer.as_mut().poll(cx));
                *sleep = None;
                if let Some(data) = pending.take() {
                    return self.emit(data);
                }
            }
            match plan.chunks.pop_front() {
                Some(chunk) if chunk.delayed && !plan.chunk_delay.is_zero() => {
                    *pending = Some(chunk.data);
                    *sleep = Some(Box::pin(tokio::time::sleep(plan.chunk_delay)));
                }
                Some(chunk) => return self.emit(chunk.data),
                None if plan.abort_at_end && !plan.abort_armed => {
                    plan.abort_armed = true;
                    if plan.chunk_delay.is_zero() {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    *sleep = Some(Box::pin(tokio::time::sleep(plan.chunk_delay)));
                }
                None if plan.abort_at_end => {
                    self.state = State::Done;
                    self.tracker.abort();
                    return Poll::Ready(Some(Err(SimError::Abort)));
                }
                None => {
                    self.state = State::Done;
                    self.tracker.finish();
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = SimError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match std::mem::replace(&mut this.state, State::Done) {
            State::Done => Poll::Ready(None),
            State::Full(bytes) => {
                this.tracker.finish();
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            stream @ State::Stream { .. } => {
                this.state = stream;
                this.poll_stream(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Done => SizeHint::with_exact(0),
            State::Full(bytes) => SizeHint::with_exact(bytes.len() as u64),
            State::Stream { .. } => SizeHint::default(),
        }
    }
}
