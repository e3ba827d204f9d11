//! What each part checksum costs, and whether each server checks it (issue 20, point 2):
//! the small set as single PUTs and the large set as multipart uploads, from memory, with
//! `x-amz-checksum-crc64nvme`, `-crc32c`, `-sha256` (unsigned payload), or none (the SigV4
//! payload hash covers the bytes), on s3s-fs and Garage; the client's CPU (the benchmark
//! process, s3s-fs included) and Garage's process CPU. Raw requests signed with object_store's
//! `AwsAuthorizer`, since object_store's own client has no CRC32C: the same client for every
//! algorithm. Then one wrong checksum per algorithm, on a PUT and on an UploadPart: does the
//! server refuse it?

use std::fmt::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::{HttpRequest, HttpRequestBody};

use crate::rig::{Endpoint, Rig, Server};
use crate::transfers::Meters;

/// How the bytes of a PUT or a part are covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    /// No checksum header: the signature's payload hash (SHA-256) covers the bytes.
    Signed,
    Sha256,
    Crc64Nvme,
    Crc32c,
}

pub const ALGOS: [Algo; 4] = [Algo::Signed, Algo::Sha256, Algo::Crc64Nvme, Algo::Crc32c];

impl Algo {
    pub fn name(self) -> &'static str {
        match self {
            Algo::Signed => "none (SigV4 payload hash)",
            Algo::Sha256 => "SHA-256",
            Algo::Crc64Nvme => "CRC64NVME",
            Algo::Crc32c => "CRC32C",
        }
    }

    /// The header name's algorithm part and the XML element's suffix.
    fn wire(self) -> Option<(&'static str, &'static str)> {
        match self {
            Algo::Signed => None,
            Algo::Sha256 => Some(("sha256", "SHA256")),
            Algo::Crc64Nvme => Some(("crc64nvme", "CRC64NVME")),
            Algo::Crc32c => Some(("crc32c", "CRC32C")),
        }
    }

    /// The base64 checksum of `body` (empty for `Signed`).
    fn value(self, body: &[u8]) -> String {
        use sha2::Digest;
        let raw: Vec<u8> = match self {
            Algo::Signed => return String::new(),
            Algo::Sha256 => sha2::Sha256::digest(body).to_vec(),
            Algo::Crc64Nvme => crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, body)
                .to_be_bytes()
                .to_vec(),
            Algo::Crc32c => (crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, body) as u32)
                .to_be_bytes()
                .to_vec(),
        };
        base64::engine::general_purpose::STANDARD.encode(raw)
    }
}

/// One set put with one algorithm against one server (medians over rounds).
#[derive(Debug, Clone)]
pub struct Row {
    pub server: &'static str,
    pub set: &'static str,
    pub algo: Algo,
    pub concurrency: usize,
    pub bytes: u64,
    pub walls: Vec<Duration>,
    /// The benchmark process (the client, and s3s-fs when it is the server), all rounds.
    pub client_cpu: Duration,
    /// Garage's process, all rounds.
    pub server_cpu: Option<Duration>,
}

impl Row {
    fn wall(&self) -> Duration {
        let mut w = self.walls.clone();
        w.sort();
        w[w.len() / 2]
    }
    fn gb(&self) -> f64 {
        self.bytes as f64 * self.walls.len() as f64 / 1e9
    }
    pub fn mb_per_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.wall().as_secs_f64()
    }
    pub fn cpu_per_gb(&self) -> f64 {
        (self.client_cpu + self.server_cpu.unwrap_or_default()).as_secs_f64() / self.gb()
    }
}

/// Whether a server refused one wrong checksum of each kind.
#[derive(Debug, Clone)]
pub struct Check {
    pub server: &'static str,
    pub algo: Algo,
    /// The status a single PUT with a wrong checksum got.
    pub put: u16,
    /// The status an UploadPart with a wrong checksum got.
    pub part: u16,
}

#[derive(Debug, Clone, Default)]
pub struct ChecksumBench {
    pub rows: Vec<Row>,
    pub checks: Vec<Check>,
    pub small: (usize, u64),
    pub large: (usize, u64),
}

/// The sets of one run: (contents, concurrency) for single PUTs and for multipart uploads.
pub struct Sets<'a> {
    pub small: (&'a [(String, Bytes)], usize),
    pub large: (&'a [(String, Bytes)], usize),
    pub part_size: usize,
    pub rounds: usize,
}

pub async fn measure(rig: &Rig, sets: &Sets<'_>) -> anyhow::Result<ChecksumBench> {
    let mut bench = ChecksumBench {
        small: (sets.small.0.len(), size_of(sets.small.0)),
        large: (sets.large.0.len(), size_of(sets.large.0)),
        ..ChecksumBench::default()
    };
    for server in rig.servers() {
        bench
            .checks
            .extend(checks(rig, server, sets.part_size).await?);
    }
    for round in 0..sets.rounds {
        println!("checksums, round {}", round + 1);
        for server in rig.servers() {
            for algo in ALGOS {
                for (set, (contents, c)) in [("small", sets.small), ("large", sets.large)] {
                    let row = put_set(rig, server, algo, set, contents, c, sets.part_size);
                    merge(&mut bench.rows, row.await?);
                }
            }
        }
    }
    Ok(bench)
}

fn size_of(contents: &[(String, Bytes)]) -> u64 {
    contents.first().map_or(0, |(_, b)| b.len() as u64)
}

fn merge(rows: &mut Vec<Row>, row: Row) {
    match rows
        .iter_mut()
        .find(|r| r.server == row.server && r.set == row.set && r.algo == row.algo)
    {
        Some(r) => {
            r.walls.extend(row.walls);
            r.client_cpu += row.client_cpu;
            r.server_cpu = r.server_cpu.zip(row.server_cpu).map(|(a, b)| a + b);
        }
        None => rows.push(row),
    }
}

/// Puts `contents` into a fresh bucket, `concurrency` at a time: a single PUT each below
/// `part_size`, else a multipart upload, one part at a time.
async fn put_set(
    rig: &Rig,
    server: Server,
    algo: Algo,
    set: &'static str,
    contents: &[(String, Bytes)],
    concurrency: usize,
    part_size: usize,
) -> anyhow::Result<Row> {
    let bucket = rig.bucket_on(server).await?;
    let raw = Raw::new(rig.endpoint(server), &bucket);
    let meters = Meters::start(rig, server);
    let started = Instant::now();
    futures::stream::iter(contents)
        .map(|(name, body)| {
            let raw = &raw;
            async move {
                let key = format!("sums/{name}");
                if body.len() < part_size {
                    raw.put(&key, body.clone(), algo).await
                } else {
                    raw.multipart(&key, body.clone(), algo, part_size).await
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    let wall = started.elapsed();
    let (cpu, _, server_cpu) = meters.stop(rig, server);
    rig.drop_bucket_on(server, &bucket).await?;
    let row = Row {
        server: server.name(),
        set,
        algo,
        concurrency,
        bytes: contents.iter().map(|(_, b)| b.len() as u64).sum(),
        walls: vec![wall],
        client_cpu: cpu - server_cpu.unwrap_or_default(),
        server_cpu,
    };
    println!(
        "  {:<6} {:<5} {:<26} {:>8.1} MB/s  CPU {:>5.2} s/GB",
        row.server,
        set,
        algo.name(),
        row.mb_per_second(),
        row.cpu_per_gb()
    );
    Ok(row)
}

/// One wrong checksum per algorithm on a single PUT and on an UploadPart.
async fn checks(rig: &Rig, server: Server, part_size: usize) -> anyhow::Result<Vec<Check>> {
    let bucket = rig.bucket_on(server).await?;
    let raw = Raw::new(rig.endpoint(server), &bucket);
    let body = Bytes::from(vec![7u8; part_size]);
    let mut out = Vec::new();
    for algo in ALGOS {
        let put = raw.wrong_put("wrong/put", body.clone(), algo).await?;
        let part = raw.wrong_part("wrong/part", body.clone(), algo).await?;
        println!(
            "  {:<6} wrong {:<26}: PUT answered {put}, UploadPart answered {part}",
            server.name(),
            algo.name()
        );
        out.push(Check {
            server: server.name(),
            algo,
            put,
            part,
        });
    }
    let _ = rig.drop_bucket_on(server, &bucket).await;
    Ok(out)
}

/// How a request's payload is signed: `None`: not (`UNSIGNED-PAYLOAD`); `Some(None)`: its
/// real SHA-256; `Some(Some(d))`: `d` as its SHA-256.
type Signing<'a> = Option<Option<&'a [u8]>>;

/// A SigV4-signed request's answer.
struct Answer {
    status: http::StatusCode,
    etag: Option<String>,
    body: String,
}

/// S3 requests by hand, path-style, signed as object_store signs its own.
struct Raw {
    http: reqwest::Client,
    endpoint: Endpoint,
    bucket: String,
    credential: AwsCredential,
}

impl Raw {
    fn new(endpoint: Endpoint, bucket: &str) -> Self {
        let credential = AwsCredential {
            key_id: endpoint.access_key.clone(),
            secret_key: endpoint.secret_key.clone(),
            token: None,
        };
        Self {
            http: reqwest::Client::new(),
            endpoint,
            bucket: bucket.to_owned(),
            credential,
        }
    }

    /// `method` on `key` with `query` pairs (a bare name when the value is empty).
    /// `payload_hash`: sign the payload (`Some(None)`: its real SHA-256, `Some(Some(d))`: `d`)
    /// or not (`None`: `UNSIGNED-PAYLOAD`).
    async fn send(
        &self,
        method: http::Method,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(String, String)],
        body: Bytes,
        payload_hash: Signing<'_>,
    ) -> anyhow::Result<Answer> {
        let url = self.url(key, query)?;
        let mut builder = http::Request::builder()
            .method(method.clone())
            .uri(url.as_str());
        for (name, value) in headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let mut request: HttpRequest = builder.body(HttpRequestBody::from(body.clone()))?;
        AwsAuthorizer::new(&self.credential, "s3", &self.endpoint.region)
            .with_sign_payload(payload_hash.is_some())
            .try_authorize(&mut request, payload_hash.flatten())?;
        let mut call = self.http.request(method, url.as_str()).body(body);
        for (name, value) in request.headers() {
            call = call.header(name.as_str(), value.as_bytes());
        }
        let response = call.send().await?;
        let status = response.status();
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await?;
        Ok(Answer { status, etag, body })
    }

    fn url(&self, key: &str, query: &[(&str, &str)]) -> anyhow::Result<url::Url> {
        let mut url = url::Url::parse(&self.endpoint.url)?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("endpoint cannot take a path"))?
            .pop_if_empty()
            .push(&self.bucket)
            .extend(key.split('/'));
        let query: Vec<String> = query
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    (*k).to_owned()
                } else {
                    format!("{k}={}", urlencode(v))
                }
            })
            .collect();
        url.set_query((!query.is_empty()).then(|| query.join("&")).as_deref());
        Ok(url)
    }

    /// The checksum header for `body`, and how the payload is signed (its SHA-256, or not).
    fn covering(algo: Algo, body: &[u8]) -> (Vec<(String, String)>, Signing<'static>) {
        match algo.wire() {
            None => (Vec::new(), Some(None)),
            Some((name, _)) => (
                vec![(format!("x-amz-checksum-{name}"), algo.value(body))],
                None,
            ),
        }
    }

    async fn put(&self, key: &str, body: Bytes, algo: Algo) -> anyhow::Result<()> {
        let (headers, signing) = Self::covering(algo, &body);
        let a = self
            .send(http::Method::PUT, key, &[], &headers, body.clone(), signing)
            .await?;
        ok(&a, "PUT")
    }

    /// CreateMultipartUpload (naming the algorithm), the parts one at a time with their
    /// checksums, CompleteMultipartUpload listing each part's ETag and checksum.
    async fn multipart(
        &self,
        key: &str,
        body: Bytes,
        algo: Algo,
        part_size: usize,
    ) -> anyhow::Result<()> {
        let id = self.create_upload(key, algo).await?;
        let mut listed = String::new();
        for (i, part) in body.chunks(part_size).enumerate() {
            let part = body.slice_ref(part);
            let n = (i + 1).to_string();
            let (headers, signing) = Self::covering(algo, &part);
            let query = [("partNumber", n.as_str()), ("uploadId", id.as_str())];
            let a = self
                .send(http::Method::PUT, key, &query, &headers, part, signing)
                .await?;
            ok(&a, "UploadPart")?;
            let etag = a.etag.context("UploadPart without an ETag")?;
            let _ = write!(
                listed,
                "<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag>"
            );
            if let (Some((_, element)), Some((_, value))) = (algo.wire(), headers.first()) {
                let _ = write!(listed, "<Checksum{element}>{value}</Checksum{element}>");
            }
            listed.push_str("</Part>");
        }
        let xml = format!("<CompleteMultipartUpload>{listed}</CompleteMultipartUpload>");
        let query = [("uploadId", id.as_str())];
        let a = self
            .send(
                http::Method::POST,
                key,
                &query,
                &[],
                Bytes::from(xml),
                Some(None),
            )
            .await?;
        if a.body.contains("<Error>") {
            bail!("CompleteMultipartUpload: {}", a.body);
        }
        ok(&a, "CompleteMultipartUpload")
    }

    async fn create_upload(&self, key: &str, algo: Algo) -> anyhow::Result<String> {
        let headers: Vec<(String, String)> = algo
            .wire()
            .map(|(_, element)| ("x-amz-checksum-algorithm".to_owned(), element.to_owned()))
            .into_iter()
            .collect();
        let a = self
            .send(
                http::Method::POST,
                key,
                &[("uploads", "")],
                &headers,
                Bytes::new(),
                Some(None),
            )
            .await?;
        ok(&a, "CreateMultipartUpload")?;
        xml_value(&a.body, "UploadId").context("CreateMultipartUpload without an UploadId")
    }

    /// A PUT whose checksum (or signed payload hash) is of other bytes; the status.
    async fn wrong_put(&self, key: &str, body: Bytes, algo: Algo) -> anyhow::Result<u16> {
        let (headers, digest) = wrong(algo);
        let signing = digest.as_deref().map(Some);
        let a = self
            .send(http::Method::PUT, key, &[], &headers, body, signing)
            .await?;
        Ok(a.status.as_u16())
    }

    /// An UploadPart whose checksum is of other bytes; the status (the upload is aborted).
    async fn wrong_part(&self, key: &str, body: Bytes, algo: Algo) -> anyhow::Result<u16> {
        let id = self.create_upload(key, algo).await?;
        let (headers, digest) = wrong(algo);
        let signing = digest.as_deref().map(Some);
        let query = [("partNumber", "1"), ("uploadId", id.as_str())];
        let a = self
            .send(http::Method::PUT, key, &query, &headers, body, signing)
            .await?;
        let abort = [("uploadId", id.as_str())];
        let _ = self
            .send(
                http::Method::DELETE,
                key,
                &abort,
                &[],
                Bytes::new(),
                Some(None),
            )
            .await;
        Ok(a.status.as_u16())
    }
}

/// The checksum header of other bytes, or (for `Signed`) the SHA-256 of other bytes to
/// sign as the payload hash.
fn wrong(algo: Algo) -> (Vec<(String, String)>, Option<Vec<u8>>) {
    use sha2::Digest;
    match algo.wire() {
        None => (
            Vec::new(),
            Some(sha2::Sha256::digest(b"other bytes").to_vec()),
        ),
        Some((name, _)) => (
            vec![(format!("x-amz-checksum-{name}"), algo.value(b"other bytes"))],
            None,
        ),
    }
}

fn ok(a: &Answer, what: &str) -> anyhow::Result<()> {
    if !a.status.is_success() {
        bail!("{what}: {}: {}", a.status, a.body);
    }
    Ok(())
}

fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].to_owned())
}

fn urlencode(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// The section: throughput and CPU per algorithm, set and server; whether each server
/// refused a wrong checksum.
pub fn section(s: &mut String, b: &ChecksumBench) {
    let _ = writeln!(s, "\n### Part checksums\n");
    let _ = writeln!(
        s,
        "The small set ({} × {} KiB) as single PUTs and the large set ({} × {} MiB) as \
         multipart uploads of 8 MiB parts (one part at a time per upload), from memory, by one \
         client of raw signed requests (object_store's `AwsAuthorizer`), the same for every \
         algorithm: a checksum header with an unsigned payload, or none (the SigV4 payload \
         hash). Client CPU: the benchmark process (s3s-fs runs in it); Garage CPU: its \
         process. Medians over {} rounds.\n",
        b.small.0,
        b.small.1 / crate::KIB,
        b.large.0,
        b.large.1 / crate::MIB,
        b.rows.first().map_or(0, |r| r.walls.len())
    );
    let _ = writeln!(
        s,
        "| server | set | checksum | concurrency | MB/s | CPU s/GB (all) | client (+ s3s-fs) s/GB | Garage s/GB |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|");
    for r in &b.rows {
        let gb = r.gb();
        let garage = r
            .server_cpu
            .map_or(String::new(), |c| format!("{:.2}", c.as_secs_f64() / gb));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} | {:.2} | {:.2} | {garage} |",
            r.server,
            r.set,
            r.algo.name(),
            r.concurrency,
            r.mb_per_second(),
            r.cpu_per_gb(),
            r.client_cpu.as_secs_f64() / gb
        );
    }
    let _ = writeln!(
        s,
        "\nA wrong checksum (of other bytes; for `none`, a signed payload hash of other \
         bytes) sent once per algorithm; \"server checks\" when the answer is a 4xx:\n"
    );
    let _ = writeln!(
        s,
        "| server | checksum | single PUT answered | UploadPart answered | server checks |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---|");
    for c in &b.checks {
        let refused = |st: u16| (400..500).contains(&st);
        let verdict = match (refused(c.put), refused(c.part)) {
            (true, true) => "yes",
            (false, false) => "**no**",
            (true, false) => "single PUT only",
            (false, true) => "UploadPart only",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {verdict} |",
            c.server,
            c.algo.name(),
            c.put,
            c.part
        );
    }
}
