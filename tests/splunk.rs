//! `[sinks.splunk_hec]` against a fake HTTP Event Collector on loopback (a hyper server, over
//! HTTPS with a test CA generated here): the exact envelopes, batching, retries through a 503
//! storm, a slow HEC filling the queue, a HEC restart, indexer acknowledgement, an unknown CA,
//! and the per-request `ollama:api` events.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::VecDeque;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{clear_of_window_end, config, loopback, metric, simulator, Stack};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ollama_guard::config::ServeArgs;
use ollama_guard::serve::Server;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

const TOKEN: &str = "6b7c0f4e-1d2a-4c3b-9e8f-0a1b2c3d4e5f";

/// What the fake HEC saw: one entry per POST to the event endpoint.
#[derive(Debug, Clone)]
struct Post {
    authorization: String,
    content_encoding: String,
    content_type: String,
    channel: Option<String>,
    /// The body, gunzipped.
    body: String,
}

impl Post {
    /// The HEC events of the body (concatenated JSON objects).
    fn events(&self) -> Vec<Value> {
        serde_json::Deserializer::from_str(&self.body)
            .into_iter::<Value>()
            .map(Result::unwrap)
            .collect()
    }
}

/// How the fake HEC answers.
#[derive(Default)]
struct Behaviour {
    /// Statuses to answer the next event POSTs with (then 200).
    statuses: VecDeque<u16>,
    /// Indexer acknowledgement: answer `ackId`s, and acknowledge every id but these.
    ack: bool,
    never_ack: Vec<u64>,
    next_ack_id: u64,
}

#[derive(Default)]
struct Seen {
    posts: Vec<Post>,
    /// Event POSTs answered with 200.
    accepted: Vec<Post>,
    ack_polls: Vec<Value>,
}

#[derive(Clone)]
struct FakeHec {
    seen: Arc<Mutex<Seen>>,
    behaviour: Arc<Mutex<Behaviour>>,
    /// Event POSTs wait while this is `false`: a test closes it to make the HEC slow.
    open: Arc<watch::Sender<bool>>,
    /// Event POSTs that arrived (before waiting at the gate).
    arrived: Arc<AtomicUsize>,
}

/// A running fake HEC; dropping it stops it (listener and connections).
struct Running {
    addr: SocketAddr,
    _tasks: JoinSet<()>,
}

impl FakeHec {
    fn new() -> FakeHec {
        FakeHec {
            seen: Arc::default(),
            behaviour: Arc::default(),
            open: Arc::new(watch::Sender::new(true)),
            arrived: Arc::default(),
        }
    }

    async fn serve(
        &self,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Running {
        let addr = listener.local_addr().unwrap();
        let mut tasks = JoinSet::new();
        let hec = self.clone();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let hec = hec.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let hec = hec.clone();
                        async move { Ok::<_, std::convert::Infallible>(hec.answer(req).await) }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        Running {
            addr,
            _tasks: tasks,
        }
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let path = req.uri().path().to_owned();
        let post = Post {
            authorization: header("authorization").unwrap_or_default(),
            content_encoding: header("content-encoding").unwrap_or_default(),
            content_type: header("content-type").unwrap_or_default(),
            channel: header("x-splunk-request-channel"),
            body: String::new(),
        };
        let raw = req.into_body().collect().await.unwrap().to_bytes();
        if path == "/services/collector/ack" {
            let query: Value = serde_json::from_slice(&raw).unwrap();
            let b = self.behaviour.lock().unwrap();
            let acks: serde_json::Map<String, Value> = query["acks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| {
                    let id = id.as_u64().unwrap();
                    (id.to_string(), Value::from(!b.never_ack.contains(&id)))
                })
                .collect();
            self.seen.lock().unwrap().ack_polls.push(query);
            return json(200, &serde_json::json!({ "acks": acks }).to_string());
        }
        assert_eq!(path, "/services/collector/event");
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let _ = self.open.subscribe().wait_for(|open| *open).await;
        let mut body = String::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut body)
            .unwrap();
        let post = Post { body, ..post };
        let (status, ack_id) = {
            let mut b = self.behaviour.lock().unwrap();
            let status = b.statuses.pop_front().unwrap_or(200);
            let ack_id = (b.ack && status == 200).then(|| {
                b.next_ack_id += 1;
                b.next_ack_id - 1
            });
            (status, ack_id)
        };
        let mut seen = self.seen.lock().unwrap();
        seen.posts.push(post.clone());
        if status == 200 {
            seen.accepted.push(post);
        }
        match (status, ack_id) {
            (200, Some(id)) => json(
                200,
                &format!(r#"{{"text":"Success","code":0,"ackId":{id}}}"#),
            ),
            (200, None) => json(200, r#"{"text":"Success","code":0}"#),
            (s, _) => json(s, r#"{"text":"Server is busy","code":9}"#),
        }
    }

    fn posts(&self) -> Vec<Post> {
        self.seen.lock().unwrap().posts.clone()
    }

    /// Every event of the accepted POSTs, in order.
    fn delivered(&self) -> Vec<Value> {
        self.seen
            .lock()
            .unwrap()
            .accepted
            .iter()
            .flat_map(Post::events)
            .collect()
    }

    async fn wait_delivered(&self, n: usize) -> Vec<Value> {
        for _ in 0..500 {
            let d = self.delivered();
            if d.len() >= n {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{n} events never arrived: {:#?}", self.delivered());
    }

    async fn wait_posts(&self, n: usize) -> Vec<Post> {
        for _ in 0..500 {
            let p = self.posts();
            if p.len() >= n {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{n} posts never arrived: {:#?}", self.posts());
    }
}

fn json(status: u16, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// A test CA, and a TLS acceptor for `127.0.0.1` signed by it.
struct Pki {
    dir: TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    fn ca_file(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// A guard in front of the simulator whose HEC is `hec_url`, with `extra` added to the
/// `[sinks.splunk_hec]` table and `rules` after it.
async fn guard(hec_url: &str, extra: &str, rules: &str) -> Stack {
    let sim = simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let file = format!(
        "[sinks.splunk_hec]\nurl = \"{hec_url}\"\ntoken = \"{TOKEN}\"\nhost = \"guard-test\"\n{extra}\n{rules}"
    );
    let config = config(&sim.url(), &dir, ServeArgs::default(), &file);
    let server = Server::start(config, loopback().await, loopback().await)
        .await
        .unwrap();
    Stack {
        proxy: format!("http://{}", server.proxy_addr),
        admin: format!("http://{}", server.admin_addr),
        sim,
        server,
        dir,
    }
}

async fn tags(s: &Stack) -> StatusCode {
    common::get(&format!("{}/api/tags", s.proxy)).await.status
}

const SINK: &str = r#"{sink="splunk_hec"}"#;

async fn sink_metric(s: &Stack, family: &str) -> f64 {
    metric(&s.admin, &format!("ollama_guard_sink_{family}_total{SINK}")).await
}

async fn sink_error(s: &Stack, kind: &str) -> f64 {
    metric(
        &s.admin,
        &format!(r#"ollama_guard_sink_errors_total{{kind="{kind}",sink="splunk_hec"}}"#),
    )
    .await
}

/// One rule that flags every first `/api/tags` of a source: one `detection` per source.
const EVERY_TAGS: &str = r#"
[[rule]]
name = "every_tags"
attack_type = "Tags Listing"
paths = ["/api/tags"]
group_by = "src"
threshold = 1
action = "log"
risk_score = 33
"#;

/// The tumbling window of `EVERY_TAGS` (the default `window`, epoch-aligned): when one closes
/// its `window_summary` is written and sent, an event more than the tests below expect.
const FIFTEEN_MINUTES: Duration = Duration::from_secs(900);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_events_reach_an_https_hec_as_gzipped_envelopes_with_the_token() {
    let pki = Pki::new("hec test CA");
    let hec = FakeHec::new();
    let running = hec.serve(loopback().await, Some(pki.acceptor())).await;
    let url = format!(
        "https://127.0.0.1:{}/services/collector/event",
        running.addr.port()
    );
    let extra = format!(
        "index = \"ollama\"\nca_file = \"{}\"\nbatch_interval = \"50ms\"",
        pki.ca_file()
    );
    let s = guard(&url, &extra, EVERY_TAGS).await;
    // Exactly one event, the detection: its window must not close during the test.
    clear_of_window_end(FIFTEEN_MINUTES, Duration::from_secs(30)).await;
    assert_eq!(tags(&s).await, StatusCode::OK);
    let delivered = hec.wait_delivered(1).await;
    let lines = common::wait_events(&s.detection_log(), |e| !e.is_empty()).await;
    assert_eq!(lines.len(), 1);
    let line = std::fs::read_to_string(s.detection_log()).unwrap();
    let line = line.trim_end();
    let post = &hec.posts()[0];
    assert_eq!(post.authorization, format!("Splunk {TOKEN}"));
    assert_eq!(post.content_encoding, "gzip");
    assert_eq!(post.content_type, "application/json");
    assert_eq!(post.channel, None);
    // The exact bytes: the epoch time of the line's own `time`, the fixed fields, the line.
    let when = chrono::DateTime::parse_from_rfc3339(lines[0]["time"].as_str().unwrap()).unwrap();
    let ms = when.timestamp_millis();
    assert_eq!(
        post.body,
        format!(
            r#"{{"time":{}.{:03},"host":"guard-test","source":"ollama-guard","sourcetype":"ollama:guard:detection","index":"ollama","event":{line}}}"#,
            ms / 1000,
            ms % 1000
        )
    );
    assert_eq!(delivered.len(), 1);
    let event = &delivered[0]["event"];
    assert_eq!(event["rule"], "every_tags");
    assert_eq!(event["risk_object"], "127.0.0.1");
    assert_eq!(event["risk_object_type"], "system");
    assert_eq!(event["risk_score"], 33);
    assert_eq!(
        event["risk_message"],
        format!(
            "Tags Listing detected from 127.0.0.1 by rule every_tags: 1 requests since {}",
            event["window_start"].as_str().unwrap()
        )
    );
    assert_eq!(
        common::metric_eventually(
            &s.admin,
            &format!("ollama_guard_sink_sent_total{SINK}"),
            1.0
        )
        .await,
        1.0
    );
    assert_eq!(sink_metric(&s, "dropped").await, 0.0);
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_hold_batch_size_events_and_shutdown_flushes_the_rest() {
    let hec = FakeHec::new();
    let running = hec.serve(loopback().await, None).await;
    let url = format!("http://127.0.0.1:{}", running.addr.port());
    let s = guard(
        &url,
        "requests = true\nbatch_size = 5\nbatch_interval = \"1h\"",
        "",
    )
    .await;
    for _ in 0..12 {
        assert_eq!(tags(&s).await, StatusCode::OK);
    }
    let posts = hec.wait_posts(2).await;
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0].events().len(), 5);
    assert_eq!(posts[1].events().len(), 5);
    s.server.shutdown().await;
    let posts = hec.posts();
    assert_eq!(posts.len(), 3);
    assert_eq!(posts[2].events().len(), 2);
    let delivered = hec.delivered();
    assert_eq!(delivered.len(), 12);
    assert!(delivered
        .iter()
        .all(|e| e["sourcetype"] == "ollama:api" && e["event"]["uri_path"] == "/api/tags"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_storm_is_retried_until_nothing_is_lost_and_the_proxy_keeps_answering() {
    let hec = FakeHec::new();
    hec.behaviour.lock().unwrap().statuses = [503; 6].into_iter().collect();
    let running = hec.serve(loopback().await, None).await;
    let url = format!(
        "http://127.0.0.1:{}/services/collector/event",
        running.addr.port()
    );
    let s = guard(
        &url,
        "requests = true\nbatch_size = 4\nbatch_interval = \"20ms\"\nretry_backoff = \"10ms\"",
        "",
    )
    .await;
    // Every request through the proxy succeeds while the HEC answers 503.
    for i in 0..20 {
        assert_eq!(tags(&s).await, StatusCode::OK, "request {i}");
    }
    let delivered = hec.wait_delivered(20).await;
    assert_eq!(delivered.len(), 20);
    assert_eq!(
        hec.posts().len() - hec.seen.lock().unwrap().accepted.len(),
        6
    );
    assert_eq!(sink_error(&s, "http_5xx").await, 6.0);
    assert_eq!(sink_metric(&s, "dropped").await, 0.0);
    assert_eq!(
        common::metric_eventually(
            &s.admin,
            &format!("ollama_guard_sink_sent_total{SINK}"),
            20.0
        )
        .await,
        20.0
    );
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_hec_fills_the_queue_the_overflow_is_counted_exactly_and_alerts_keep_their_room() {
    let hec = FakeHec::new();
    let running = hec.serve(loopback().await, None).await;
    let url = format!("http://127.0.0.1:{}", running.addr.port());
    // A rule that flags the fifth `/api/tags` of a source.
    let fifth = EVERY_TAGS
        .replace("threshold = 1", "threshold = 5")
        .replace("every_tags", "fifth_tags");
    clear_of_window_end(FIFTEEN_MINUTES, Duration::from_secs(30)).await;
    let s = guard(
        &url,
        "requests = true\nbatch_size = 1\nbatch_interval = \"10ms\"\nqueue = 4\nrequest_timeout = \"1h\"",
        &fifth,
    )
    .await;
    // The HEC stalls every POST until it is opened again.
    hec.open.send_replace(false);
    assert_eq!(tags(&s).await, StatusCode::OK);
    // The first event is in flight (its POST waits at the gate), so the queue is empty.
    common::eventually(|| hec.arrived.load(Ordering::SeqCst) == 1).await;
    for _ in 0..5 {
        assert_eq!(tags(&s).await, StatusCode::OK);
    }
    // Request events fill half the queue (2 of 4): the next three are dropped. The fifth
    // request's detection still finds room.
    assert_eq!(
        common::metric_eventually(
            &s.admin,
            &format!("ollama_guard_sink_dropped_total{SINK}"),
            3.0
        )
        .await,
        3.0
    );
    hec.open.send_replace(true);
    hec.wait_delivered(4).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let delivered = hec.delivered();
    assert_eq!(delivered.len(), 4, "{delivered:#?}");
    let kinds: Vec<&str> = delivered
        .iter()
        .map(|e| e["sourcetype"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "ollama:api").count(),
        3,
        "{kinds:?}"
    );
    let detection = delivered
        .iter()
        .find(|e| e["event"]["event"] == "detection")
        .unwrap_or_else(|| panic!("no detection: {delivered:#?}"));
    assert_eq!(detection["event"]["rule"], "fifth_tags");
    assert_eq!(sink_metric(&s, "dropped").await, 3.0);
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_resumes_after_the_hec_restarts() {
    let hec = FakeHec::new();
    let listener = loopback().await;
    let addr = listener.local_addr().unwrap();
    let running = hec.serve(listener, None).await;
    let url = format!("http://{addr}");
    let s = guard(
        &url,
        "requests = true\nbatch_size = 1\nbatch_interval = \"10ms\"\nretry_backoff = \"20ms\"",
        "",
    )
    .await;
    assert_eq!(tags(&s).await, StatusCode::OK);
    hec.wait_delivered(1).await;
    drop(running); // the HEC goes away: listener and connections
    for _ in 0..3 {
        assert_eq!(tags(&s).await, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hec.delivered().len(), 1);
    let _running = hec
        .serve(TcpListener::bind(addr).await.unwrap(), None)
        .await;
    let delivered = hec.wait_delivered(4).await;
    assert_eq!(delivered.len(), 4);
    assert!(sink_error(&s, "connect").await >= 1.0);
    assert_eq!(sink_metric(&s, "dropped").await, 0.0);
    s.server.shutdown().await;
}

/// A HEC with indexer acknowledgement that never acknowledges ack id 0: it, what serves it,
/// and its event URL.
async fn acking_hec() -> (FakeHec, Running, String) {
    let hec = FakeHec::new();
    {
        let mut b = hec.behaviour.lock().unwrap();
        b.ack = true;
        b.never_ack = vec![0];
    }
    let running = hec.serve(loopback().await, None).await;
    let url = format!(
        "http://127.0.0.1:{}/services/collector/event",
        running.addr.port()
    );
    (hec, running, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_not_acknowledged_in_time_are_sent_again_on_the_same_channel() {
    let (hec, _running, url) = acking_hec().await;
    let s = guard(
        &url,
        "ack = true\nbatch_interval = \"20ms\"\nack_timeout = \"300ms\"",
        EVERY_TAGS,
    )
    .await;
    // The window_summary comes only at the shutdown: the window must not close before.
    clear_of_window_end(FIFTEEN_MINUTES, Duration::from_secs(30)).await;
    assert_eq!(tags(&s).await, StatusCode::OK);
    let posts = hec.wait_posts(2).await;
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0].body, posts[1].body);
    let channel = posts[0].channel.clone().unwrap();
    assert_eq!(channel.len(), 36);
    assert_eq!(posts[1].channel.as_deref(), Some(channel.as_str()));
    assert_eq!(
        common::metric_eventually(
            &s.admin,
            &format!("ollama_guard_sink_sent_total{SINK}"),
            1.0
        )
        .await,
        1.0
    );
    assert_eq!(sink_error(&s, "ack_timeout").await, 1.0);
    let polls = hec.seen.lock().unwrap().ack_polls.clone();
    assert!(
        polls.contains(&serde_json::json!({"acks": [0]})),
        "{polls:?}"
    );
    assert!(
        polls.contains(&serde_json::json!({"acks": [1]})),
        "{polls:?}"
    );
    s.server.shutdown().await;
    // The shutdown's window_summary comes last, once.
    let posts = hec.posts();
    assert_eq!(posts.len(), 3);
    assert_eq!(posts[2].events()[0]["event"]["event"], "window_summary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_hec_lost_in_a_restart_is_sent_again_not_taken_for_the_next_batch_s_ack() {
    let (hec, _running, url) = acking_hec().await;
    // ack_timeout far away: only the restart can make the first batch go again in time.
    let s = guard(
        &url,
        "ack = true\nbatch_interval = \"20ms\"\nack_timeout = \"1h\"\nrequests = true",
        "",
    )
    .await;
    assert_eq!(tags(&s).await, StatusCode::OK);
    hec.wait_posts(1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The indexer restarts: its ack ids start over, and it acknowledges everything now.
    {
        let mut b = hec.behaviour.lock().unwrap();
        b.next_ack_id = 0;
        b.never_ack.clear();
    }
    assert_eq!(tags(&s).await, StatusCode::OK);
    // The second batch gets ack id 0 again: the first is sent again (and acknowledged as 1).
    let posts = hec.wait_posts(3).await;
    assert_eq!(posts[2].body, posts[0].body);
    assert_eq!(
        common::metric_eventually(
            &s.admin,
            &format!("ollama_guard_sink_sent_total{SINK}"),
            2.0
        )
        .await,
        2.0
    );
    assert_eq!(sink_error(&s, "ack_lost").await, 1.0);
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hec_certificate_of_an_unknown_ca_is_refused_and_counted() {
    let hec_ca = Pki::new("the HEC's CA");
    let other_ca = Pki::new("some other CA");
    let hec = FakeHec::new();
    let running = hec.serve(loopback().await, Some(hec_ca.acceptor())).await;
    let url = format!("https://127.0.0.1:{}", running.addr.port());
    let extra = format!(
        "ca_file = \"{}\"\nbatch_interval = \"10ms\"\nretry_backoff = \"1h\"\nshutdown_timeout = \"100ms\"",
        other_ca.ca_file()
    );
    let s = guard(&url, &extra, EVERY_TAGS).await;
    assert_eq!(tags(&s).await, StatusCode::OK);
    assert_eq!(
        common::metric_eventually(
            &s.admin,
            r#"ollama_guard_sink_errors_total{kind="tls",sink="splunk_hec"}"#,
            1.0
        )
        .await,
        1.0
    );
    assert!(hec.posts().is_empty());
    assert_eq!(sink_metric(&s, "sent").await, 0.0);
    s.server.shutdown().await;
    assert!(hec.posts().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_true_sends_one_ollama_api_event_per_request_with_exact_fields() {
    let hec = FakeHec::new();
    let running = hec.serve(loopback().await, None).await;
    let url = format!("http://127.0.0.1:{}", running.addr.port());
    let s = guard(
        &url,
        "requests = true\nbatch_interval = \"20ms\"\nindex = \"web\"",
        "",
    )
    .await;
    let body = r#"{"model":"llama3.2","prompt":"hi","stream":false}"#;
    let reply = common::send(
        Method::POST,
        &format!("{}/api/generate?x=1", s.proxy),
        &[("content-type", "application/json")],
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let delivered = hec.wait_delivered(1).await;
    assert_eq!(delivered.len(), 1);
    let envelope = delivered[0].as_object().unwrap();
    let keys: Vec<&str> = envelope.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["time", "host", "source", "sourcetype", "index", "event"]
    );
    assert_eq!(envelope["host"], "guard-test");
    assert_eq!(envelope["source"], "ollama-guard");
    assert_eq!(envelope["sourcetype"], "ollama:api");
    assert_eq!(envelope["index"], "web");
    let e = envelope["event"].as_object().unwrap();
    let keys: Vec<&str> = e.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "time",
            "src",
            "dest",
            "action",
            "status",
            "http_method",
            "uri_path",
            "url",
            "duration",
            "response_time_ms",
            "bytes_in",
            "bytes_out"
        ]
    );
    let upstream = s.sim.url().trim_start_matches("http://").to_owned();
    assert_eq!(e["src"], "127.0.0.1");
    assert_eq!(e["dest"], upstream.as_str());
    assert_eq!(e["action"], "allowed");
    assert_eq!(e["status"], 200);
    assert_eq!(e["http_method"], "POST");
    assert_eq!(e["uri_path"], "/api/generate");
    assert_eq!(e["url"], format!("http://{upstream}/api/generate?x=1"));
    assert_eq!(e["bytes_in"], body.len());
    assert_eq!(e["bytes_out"], reply.body.len());
    let ms = e["response_time_ms"].as_u64().unwrap();
    assert_eq!(e["duration"].as_f64().unwrap(), ms as f64 / 1000.0);
    // `time`: %Y-%m-%dT%H:%M:%S.%3N%z, the same instant as the envelope's epoch time.
    let time = e["time"].as_str().unwrap();
    let parsed = chrono::DateTime::parse_from_str(time, "%Y-%m-%dT%H:%M:%S%.3f%z").unwrap();
    assert_eq!(time.len(), "2025-10-02T14:47:30.012+0000".len());
    assert!(time.ends_with("+0000"), "{time}");
    let epoch = envelope["time"].as_f64().unwrap();
    assert_eq!((epoch * 1000.0).round() as i64, parsed.timestamp_millis());
    s.server.shutdown().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_ollama-guard");

/// `check-config` on `text`, with `env` set; (exit code, stdout, stderr).
fn check_config(text: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guard.toml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["check-config", path.to_str().unwrap()])
        .env_remove("OLLAMA_GUARD_SPLUNK_HEC_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_takes_the_token_from_the_environment_and_never_prints_it() {
    let (code, out, err) = check_config(
        "[sinks.splunk_hec]\nurl = \"https://splunk.example:8088\"\nindex = \"ollama\"\nhost = \"guard-1\"",
        &[("OLLAMA_GUARD_SPLUNK_HEC_TOKEN", TOKEN)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN), "{out}{err}");
    let start = out.find("[sinks.splunk_hec]\n").unwrap();
    let section: Vec<&str> = out[start..].lines().take_while(|l| !l.is_empty()).collect();
    assert_eq!(
        section,
        [
            "[sinks.splunk_hec]",
            "url = \"https://splunk.example:8088/services/collector/event\"",
            "token = \"<redacted>\"",
            "index = \"ollama\"",
            "sourcetype = \"ollama:guard:detection\"",
            "source = \"ollama-guard\"",
            "host = \"guard-1\"",
            "tls_verify = true",
            "requests = false",
            "ack = false",
            "batch_size = 100",
            "batch_interval = \"1s\"",
            "queue = 10000",
            "request_timeout = \"10s\"",
            "retry_backoff = \"500ms\"",
            "ack_timeout = \"1m\"",
            "shutdown_timeout = \"5s\"",
        ]
    );
}

#[test]
fn a_bad_sink_key_is_one_line_naming_it_and_exit_2() {
    for (text, want) in [
        (
            "[sinks.splunk_hec]\nurl = \"https://splunk.example:8088\"",
            "config error: sinks.splunk_hec.token: required (or set OLLAMA_GUARD_SPLUNK_HEC_TOKEN)",
        ),
        (
            "[sinks.splunk_hec]\nurl = \"/services/collector/event\"\ntoken = \"t\"",
            "config error: sinks.splunk_hec.url: '/services/collector/event' has no scheme (write https://host:8088/...)",
        ),
        (
            "[sinks.splunk_hec]\nurl = \"https://s:8088\"\ntoken = \"t\"\nqueue = 0",
            "config error: sinks.splunk_hec.queue: 0 must be between 1 and 10000000",
        ),
    ] {
        let (code, _, err) = check_config(text, &[]);
        assert_eq!(code, 2, "{text}: {err}");
        assert_eq!(err.trim_end(), format!("ollama-guard: {want}"), "{text}");
    }
}
