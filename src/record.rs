//! The one record every finished request becomes.
//!
//! The proxy builds a [`RequestRecord`] when a response body ends (or the client goes away);
//! `scan` builds the same record from an Ollama `[GIN]` line. Everything downstream —
//! metrics, the access log, the detection engine — consumes only this type, which is why
//! it carries no HTTP or I/O types: the detection engine must not know where a request
//! came from.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::route::Route;

/// How a proxied exchange ended, as seen from the client side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Outcome {
    /// The response body was delivered to its end (or the response had no body).
    Complete,
    /// The client went away before the last byte (the upstream request was dropped).
    ClientCancelled,
    /// The upstream failed: connect error, reset, or an error mid-stream.
    UpstreamError,
    /// The request was refused by a ban and never forwarded.
    Blocked,
    /// The request was refused before forwarding for what it is, not who sent it (a `Host`
    /// the guard does not serve); never fed to detection, so nobody can be framed with it.
    Refused,
    /// The request was refused by `[auth]` (401 without a valid key, 403 without the role a
    /// route needs) and never forwarded. Fed to detection only for rules that name its status
    /// in `status` (the built-in `auth_failures` counts the 401s), so a stranger's refused
    /// requests cannot count toward any other rule.
    Unauthorized,
}

impl Outcome {
    /// Every outcome, in a fixed order (metric label tables are built from it).
    pub(crate) const ALL: [Outcome; 6] = [
        Outcome::Complete,
        Outcome::Blocked,
        Outcome::UpstreamError,
        Outcome::ClientCancelled,
        Outcome::Refused,
        Outcome::Unauthorized,
    ];

    /// The metric label value (README, "Metrics": `forwarded`, `blocked`, `upstream_error`, `client_cancelled`).
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Complete => "forwarded",
            Outcome::Blocked => "blocked",
            Outcome::UpstreamError => "upstream_error",
            Outcome::ClientCancelled => "client_cancelled",
            Outcome::Refused => "refused",
            Outcome::Unauthorized => "unauthorized",
        }
    }

    /// Position in [`Outcome::ALL`], for pre-resolved handle tables.
    pub(crate) fn index(self) -> usize {
        match self {
            Outcome::Complete => 0,
            Outcome::Blocked => 1,
            Outcome::UpstreamError => 2,
            Outcome::ClientCancelled => 3,
            Outcome::Refused => 4,
            Outcome::Unauthorized => 5,
        }
    }

    /// Refused before forwarding (a ban or a refused Host): such requests never reach
    /// detection, so a refusal cannot feed more bans or frame anyone.
    pub(crate) fn is_refusal(self) -> bool {
        matches!(self, Outcome::Blocked | Outcome::Refused)
    }
}

/// The HTTP method, reduced to a small closed set so it can be a bounded metric label
/// and a compact detection key without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `DELETE`
    Delete,
    /// `OPTIONS`
    Options,
    /// `PATCH`
    Patch,
    /// Anything else (`CONNECT`, `TRACE`, extension methods).
    Other,
}

impl Method {
    /// Every method, in label-table order.
    pub(crate) const ALL: [Method; 8] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Options,
        Method::Patch,
        Method::Other,
    ];

    /// Classifies method text (case-sensitive, as HTTP methods are).
    pub(crate) fn parse(text: &str) -> Method {
        match text {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }

    /// The method text (`OTHER` for the catch-all).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Other => "OTHER",
        }
    }

    /// Position in [`Method::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One finished request: what the detection engine, the metrics and the access log see.
///
/// The text fields are `Cow<'static, str>`: for the common case (a known method, a known
/// route path with no query) they borrow from static tables, so building a record does
/// not allocate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RequestRecord {
    /// The resolved client address (socket peer, or the `X-Forwarded-For` hop a trusted
    /// proxy vouched for). IPv4-mapped IPv6 is already shown as IPv4.
    pub(crate) src: IpAddr,
    /// The socket peer that actually connected (differs from `src` behind a trusted proxy).
    pub(crate) peer: IpAddr,
    /// The request method.
    pub(crate) method: Method,
    /// The method text as received, for the access log (`GET`, or an extension method).
    pub(crate) method_text: Cow<'static, str>,
    /// The normalised path (percent-decoded, `//` collapsed, no query): the detection key.
    pub(crate) path: Cow<'static, str>,
    /// The raw request target (path and query) as received, for the access log.
    pub(crate) raw_target: Cow<'static, str>,
    /// Which known Ollama route the path belongs to (bounded metric label).
    pub(crate) route: Route,
    /// The response status sent to the client (`499` when the client left before the head).
    pub(crate) status: u16,
    /// Time from request head in to the first response body byte (none when no body byte
    /// was ever sent).
    pub(crate) ttfb: Option<Duration>,
    /// Time from request head in to the last response byte out, or to the client disconnect:
    /// the span Ollama's own `[GIN]` line measures.
    pub(crate) total: Duration,
    /// Wall-clock time the request finished (window alignment and log timestamps).
    pub(crate) completed_at: DateTime<Utc>,
    /// How the exchange ended.
    pub(crate) outcome: Outcome,
    /// Request body bytes read from the client (what passed before an error; 0 for a
    /// refused request, whose body is never read). `scan` cannot know it: 0.
    pub(crate) bytes_in: u64,
    /// Response body bytes written to the client (0 for HEAD, 204, 304; `scan`: 0 — gin
    /// logs no size). Volume rules (`metric = "bytes_out"`) count it.
    pub(crate) bytes_out: u64,
    /// Rules (bit = rule index) that already reported this request in flight with a
    /// sliding window: `observe` counts it there without a second `detection`. Filled by
    /// [`RecordSink::end`]; 0 for `scan` and for requests no rule reported while running.
    pub(crate) in_flight_reported: u64,
    /// Who is calling, by API key: the key's name when `[auth]` is on and the request carried
    /// a valid key, `None` otherwise (anonymous, `auth.mode = "off"`, and every `scan` record).
    pub(crate) identity: Option<std::sync::Arc<str>>,
}

/// Where finished requests go. The proxy calls it once per request, from the task that
/// finished the response; an implementation must not block (hand slow work to a task).
pub(crate) trait RecordSink: Send + Sync + 'static {
    /// Takes one finished request.
    fn record(&self, record: RequestRecord);

    /// A request started at `start` (`record` is its start record: no status, no timings).
    /// Returns a ticket to hand to [`RecordSink::end`] when it ends, so in-flight detection
    /// can see requests still running; `None` when the sink does not track running requests.
    fn begin(&self, _record: &RequestRecord, _start: tokio::time::Instant) -> Option<u64> {
        None
    }

    /// The request of ticket `ticket` ended (called just before its `record`). Returns the
    /// record's [`RequestRecord::in_flight_reported`] mask (0 when nothing reported it).
    fn end(&self, _ticket: u64) -> u64 {
        0
    }

    /// A request ended: [`RecordSink::end`] of its ticket (if it had one), then
    /// [`RecordSink::record`] with the mask `end` returned.
    fn finish(&self, ticket: Option<u64>, mut record: RequestRecord) {
        if let Some(ticket) = ticket {
            record.in_flight_reported = self.end(ticket);
        }
        self.record(record);
    }
}
