//! A fault-injecting HTTP proxy in front of the in-process S3 server (or moto). It forwards
//! every request as it came (the `Host` header too, so the client's SigV4 signatures stay
//! valid) and, per rule, answers an error status, drops the connection or holds the request
//! for the first N requests of one kind: part uploads, multipart completions, single PUTs,
//! retention. An error status comes with the S3 error code a server would give it (403
//! `AccessDenied`, 400 `InvalidRequest`, 503 `SlowDown`, else `InternalError`). It records
//! each request's kind, path and `x-amz-*` headers, for tests that check what reached the
//! server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The kind of an S3 request, as far as faults care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum S3Op {
    /// `POST /bucket/key?uploads`
    CreateMultipart,
    /// `PUT /bucket/key?partNumber=N&uploadId=U`
    UploadPart,
    /// `POST /bucket/key?uploadId=U`
    CompleteMultipart,
    /// `DELETE /bucket/key?uploadId=U`
    AbortMultipart,
    /// `PUT /bucket/key` with `x-amz-copy-source` (the metadata rewrite after a multipart upload)
    CopyObject,
    /// `PUT /bucket/key`, a recording in one request
    PutObject,
    /// `PUT /bucket/key.json` or `.jsonl`: a sidecar or a manifest; `.checkpoint`, `.tsr`,
    /// `.pub`: the Merkle log's checkpoint, a time-stamp token, a signer's public key
    PutMetadata,
    /// `PUT /bucket/key?retention`: an Object Lock retention
    PutRetention,
    /// `PUT /bucket/key?legal-hold`: setting or clearing an S3 legal hold
    PutLegalHold,
    /// `HEAD /bucket/key`: reading an object's size back
    Head,
    /// Anything else: GET, listings, DELETE of an object.
    Other,
}

impl S3Op {
    fn of<B>(req: &Request<B>) -> Self {
        let query = req.uri().query().unwrap_or("");
        let has = |name: &str| {
            query
                .split('&')
                .any(|pair| pair.split('=').next() == Some(name))
        };
        match *req.method() {
            Method::POST if has("uploads") => Self::CreateMultipart,
            Method::POST if has("uploadId") => Self::CompleteMultipart,
            Method::PUT if has("partNumber") && has("uploadId") => Self::UploadPart,
            Method::PUT if has("retention") => Self::PutRetention,
            Method::PUT if has("legal-hold") => Self::PutLegalHold,
            Method::PUT if req.headers().contains_key("x-amz-copy-source") => Self::CopyObject,
            Method::PUT if req.uri().path().ends_with(".json") => Self::PutMetadata,
            Method::PUT if req.uri().path().ends_with(".jsonl") => Self::PutMetadata,
            Method::PUT
                if [".checkpoint", ".tsr", ".pub"]
                    .iter()
                    .any(|s| req.uri().path().ends_with(s)) =>
            {
                Self::PutMetadata
            }
            Method::PUT => Self::PutObject,
            Method::DELETE if has("uploadId") => Self::AbortMultipart,
            Method::HEAD => Self::Head,
            _ => Self::Other,
        }
    }
}

/// What the proxy does instead of (or after) forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Reads the request, then answers this status with an S3 error document.
    Status(u16),
    /// Reads the request, then closes the connection without an answer.
    Drop,
    /// Forwards the request (the store does the work), then closes the connection without
    /// passing the answer on: the client cannot know it succeeded.
    DropAfterForward,
    /// Holds the request, unanswered and not forwarded, for as long as its client waits.
    Stall,
    /// Forwards the request as if no rule matched: lets the first N through before the
    /// next rule's fault.
    Forward,
}

/// One request as it reached the proxy.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub op: S3Op,
    /// The path, `/bucket/key`.
    pub path: String,
    /// Its `x-amz-*` headers (names in lower case), signing headers left out.
    pub headers: std::collections::BTreeMap<String, String>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Debug)]
struct Rule {
    op: S3Op,
    fault: Fault,
    left: u32,
}

#[derive(Debug, Default)]
struct ProxyState {
    rules: Vec<Rule>,
    seen: HashMap<S3Op, u32>,
    injected: HashMap<S3Op, u32>,
    requests: Vec<SeenRequest>,
}

impl ProxyState {
    /// Counts the request and consumes the first rule that matches it.
    fn on_request(&mut self, op: S3Op) -> Option<Fault> {
        *self.seen.entry(op).or_default() += 1;
        let rule = self.rules.iter_mut().find(|r| r.op == op && r.left > 0)?;
        rule.left -= 1;
        if rule.fault != Fault::Forward {
            *self.injected.entry(op).or_default() += 1;
        }
        Some(rule.fault)
    }
}

/// A running proxy; dropped, it stops accepting.
pub struct S3Proxy {
    pub endpoint: String,
    state: Arc<Mutex<ProxyState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for S3Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl S3Proxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> Self {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .expect("upstream address");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&shared);
                let service = hyper::service::service_fn(move |req| {
                    handle(Arc::clone(&state), upstream, req)
                });
                tokio::spawn(async move {
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Self {
            endpoint: format!("http://{addr}"),
            state,
            task,
        }
    }

    /// The next `times` requests of kind `op` meet `fault`. Rules queue in order.
    pub fn inject(&self, op: S3Op, fault: Fault, times: u32) {
        self.lock().rules.push(Rule {
            op,
            fault,
            left: times,
        });
    }

    /// Forgets the rules not yet used up: from now on every request is forwarded.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// Requests of kind `op` that reached the proxy.
    pub fn seen(&self, op: S3Op) -> u32 {
        self.lock().seen.get(&op).copied().unwrap_or(0)
    }

    /// Every request of kind `op` that reached the proxy, in order.
    pub fn requests(&self, op: S3Op) -> Vec<SeenRequest> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.op == op)
            .cloned()
            .collect()
    }

    /// Requests of kind `op` that met a fault.
    pub fn injected(&self, op: S3Op) -> u32 {
        self.lock().injected.get(&op).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProxyState> {
        self.state.lock().expect("proxy state")
    }
}

async fn handle(
    state: Arc<Mutex<ProxyState>>,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, BoxError> {
    let op = S3Op::of(&req);
    let seen = SeenRequest {
        op,
        path: req.uri().path().to_owned(),
        headers: req
            .headers()
            .iter()
            .filter(|(name, _)| {
                let name = name.as_str();
                name.starts_with("x-amz-") && !matches!(name, "x-amz-date" | "x-amz-content-sha256")
            })
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    let fault = {
        let mut state = state.lock().expect("proxy state");
        state.requests.push(seen);
        state.on_request(op)
    };
    match fault {
        None | Some(Fault::Forward) => forward(upstream, req).await,
        Some(Fault::Status(code)) => {
            drain(req).await;
            Ok(s3_error(code))
        }
        Some(Fault::Drop) => {
            drain(req).await;
            Err(format!("dropping a {op:?} request").into())
        }
        Some(Fault::Stall) => {
            drain(req).await;
            std::future::pending().await
        }
        Some(Fault::DropAfterForward) => {
            let answer = forward(upstream, req).await?;
            drain_body(answer.into_body()).await;
            Err(format!("dropping the answer to a {op:?} request").into())
        }
    }
}

/// Sends the request, unchanged, over a fresh connection to `upstream`.
async fn forward(upstream: SocketAddr, req: Request<Incoming>) -> Result<Response<Body>, BoxError> {
    let stream = tokio::net::TcpStream::connect(upstream).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let answer = sender.send_request(req).await?;
    Ok(answer.map(Body::new))
}

async fn drain(req: Request<Incoming>) {
    drain_body(Body::new(req.into_body())).await;
}

async fn drain_body(body: Body) {
    let _ = axum::body::to_bytes(body, usize::MAX).await;
}

fn s3_error(code: u16) -> Response<Body> {
    let status = StatusCode::from_u16(code).expect("a status code");
    let name = match code {
        400 => "InvalidRequest",
        403 => "AccessDenied",
        503 => "SlowDown",
        _ => "InternalError",
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{name}</Code>\
         <Message>injected by the test proxy</Message></Error>"
    );
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(Body::from(body))
        .expect("a response")
}
