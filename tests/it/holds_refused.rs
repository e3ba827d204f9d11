//! `hold` and `release` against a store that refuses legal holds (403 AccessDenied, as when
//! the credentials lack `s3:PutObjectLegalHold`): each stops at the refusal, records only
//! what the bucket did, and the binary exits 2. Against moto (which keeps S3 legal holds)
//! behind the fault-injecting proxy.

use callvault::domain::CallUuid;
use callvault::ledger::{CallQuery, HoldId, ObjectHold};
use callvault::retention::{Actor, Selection, place_hold, release};
use callvault::store::{Store, StoreConfig};
use chrono::Utc;

use crate::cli::{assert_exit, callvault, output};
use crate::moto::Moto;
use crate::s3proxy::{Fault, S3Op, S3Proxy};
use crate::world::{TEST_PART, World, cu};

const BUCKET: &str = "refusing";

/// Two calls archived in moto (`r-a` before `r-b` in the selection's order), and a proxy in
/// front of moto.
struct Refusing {
    world: World,
    moto: Moto,
    proxy: S3Proxy,
}

impl Refusing {
    async fn start() -> Self {
        let world = World::new().await;
        let moto = Moto::start().await;
        moto.create_bucket(BUCKET, true).await;
        let proxy = S3Proxy::start(&moto.endpoint).await;
        let this = Self { world, moto, proxy };
        for uuid in ["r-a", "r-b"] {
            this.world
                .import_call(uuid, &format!("{uuid}.wav"), 10_000)
                .await;
        }
        let deps = this
            .world
            .deps_with(this.world.ledger.clone(), this.store(&this.moto.endpoint));
        let result = callvault::archive::run_pass(&deps, &this.world.options())
            .await
            .expect("ledger");
        assert_eq!(result.report.archived, 2, "{:?}", result.report);
        this
    }

    fn store(&self, endpoint: &str) -> Store {
        let s3 = self
            .moto
            .options()
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "aws_endpoint" => (k, endpoint.to_owned()),
                _ => (k, v),
            })
            .collect();
        Store::open(&StoreConfig {
            s3,
            part_size: TEST_PART,
            ..StoreConfig::new(format!("s3://{BUCKET}/calls"))
        })
        .expect("store")
    }

    /// The binary, its store reached through the proxy.
    fn callvault(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = callvault(&self.world, args);
        for (k, v) in self.moto.env() {
            cmd.env(k, v);
        }
        cmd.env("AWS_ENDPOINT", &self.proxy.endpoint)
            .env("CALLVAULT_STORE", format!("s3://{BUCKET}/calls"))
            .env("CALLVAULT_ACTOR", "legal");
        cmd
    }

    /// The holds that keep `uuid` now, as the ledger says.
    async fn holds_of(&self, uuid: &str) -> Vec<HoldId> {
        let facts = self.world.ledger.call_facts(&[cu(uuid)]).await.unwrap();
        facts[0].holds.clone()
    }

    /// Whether the bucket holds `uuid`'s recording under a legal hold.
    async fn bucket_holds(&self, uuid: &str) -> bool {
        let facts = self.world.ledger.call_facts(&[cu(uuid)]).await.unwrap();
        let key = &facts[0].object.as_ref().expect("archived").key;
        self.store(&self.moto.endpoint)
            .version_lock(key, None)
            .await
            .unwrap()
            .expect("the object exists")
            .legal_hold
    }
}

fn both() -> Selection {
    Selection::new(CallQuery {
        uuids: vec![cu("r-a"), cu("r-b")],
        ..CallQuery::default()
    })
}

fn actor() -> Actor {
    Actor::new("legal").unwrap()
}

/// `hold` and `release` through the binary while every legal-hold request is refused:
/// exit 2 naming the refusal, and the ledger unchanged (no hold recorded; then, the hold
/// placed once the store takes it, no release recorded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_release_exit_2_on_a_refusing_store_and_record_nothing() {
    let s = Refusing::start().await;
    s.proxy
        .inject(S3Op::PutLegalHold, Fault::Status(403), u32::MAX);

    let hold = output(s.callvault(&[
        "hold", "--uuid", "r-a", "--uuid", "r-b", "--reason", "CASE-1",
    ]))
    .await;

    assert_exit(&hold, 2);
    let stderr = String::from_utf8_lossy(&hold.stderr);
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(
        s.world.ledger.holds(true).await.unwrap().is_empty(),
        "no hold recorded"
    );
    assert!(s.holds_of("r-a").await.is_empty());

    s.proxy.clear();
    assert_exit(
        &output(s.callvault(&[
            "hold", "--uuid", "r-a", "--uuid", "r-b", "--reason", "CASE-1",
        ]))
        .await,
        0,
    );
    assert!(s.bucket_holds("r-a").await && s.bucket_holds("r-b").await);
    s.proxy
        .inject(S3Op::PutLegalHold, Fault::Status(403), u32::MAX);

    let released = output(s.callvault(&[
        "release", "--uuid", "r-a", "--uuid", "r-b", "--reason", "closed",
    ]))
    .await;

    assert_exit(&released, 2);
    let stderr = String::from_utf8_lossy(&released.stderr);
    assert!(stderr.contains("refused"), "{stderr}");
    for uuid in ["r-a", "r-b"] {
        assert_eq!(s.holds_of(uuid).await.len(), 1, "{uuid} still held");
        assert!(s.bucket_holds(uuid).await, "{uuid}: its bucket hold stays");
    }

    s.proxy.clear();
    assert_exit(
        &output(s.callvault(&[
            "release", "--uuid", "r-a", "--uuid", "r-b", "--reason", "closed",
        ]))
        .await,
        0,
    );
    assert!(s.holds_of("r-a").await.is_empty() && s.holds_of("r-b").await.is_empty());
    assert!(!s.bucket_holds("r-a").await && !s.bucket_holds("r-b").await);
}

/// The store takes the first call's legal holds (recording and sidecar) and refuses the
/// second's: `hold` records the hold with the first call alone and says where it stopped;
/// `release` likewise releases the first call alone, the second staying held in the ledger
/// and in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_part_way_records_the_calls_before_it_and_none_after() {
    let s = Refusing::start().await;
    let store = s.store(&s.proxy.endpoint);
    s.proxy.inject(S3Op::PutLegalHold, Fault::Forward, 2);
    s.proxy
        .inject(S3Op::PutLegalHold, Fault::Status(403), u32::MAX);

    let held = place_hold(
        &s.world.ledger,
        &store,
        &both(),
        "CASE-2",
        &actor(),
        Utc::now(),
    )
    .await
    .unwrap();

    let stopped = held.stopped.clone().expect("stopped at the refusal");
    assert_eq!(stopped.call, cu("r-b"));
    assert!(stopped.error.contains("AccessDenied"), "{stopped}");
    assert_eq!(held.calls, vec![(cu("r-a"), ObjectHold::Set)]);
    let hold = held.hold.clone().expect("the hold, with the call held");
    assert_eq!(s.holds_of("r-a").await, vec![hold.clone()]);
    assert!(
        s.holds_of("r-b").await.is_empty(),
        "the refused call is not recorded"
    );
    assert!(s.bucket_holds("r-a").await && !s.bucket_holds("r-b").await);

    // Hold r-b too, then release both with the second clear refused.
    s.proxy.clear();
    let rest = Selection::new(CallQuery {
        uuids: vec![cu("r-b")],
        ..CallQuery::default()
    });
    let second = place_hold(
        &s.world.ledger,
        &store,
        &rest,
        "CASE-2",
        &actor(),
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(second.stopped.is_none() && second.problems.is_empty());
    s.proxy.inject(S3Op::PutLegalHold, Fault::Forward, 2);
    s.proxy
        .inject(S3Op::PutLegalHold, Fault::Status(403), u32::MAX);

    let report = release(
        &s.world.ledger,
        &store,
        &both(),
        None,
        "closed",
        &actor(),
        Utc::now(),
    )
    .await
    .unwrap();

    assert_eq!(report.stopped.as_ref().map(|r| &r.call), Some(&cu("r-b")));
    let released: Vec<&CallUuid> = report.released.iter().map(|(u, _)| u).collect();
    assert_eq!(released, vec![&cu("r-a")]);
    assert_eq!(report.objects_cleared, 1);
    assert!(s.holds_of("r-a").await.is_empty() && !s.bucket_holds("r-a").await);
    assert_eq!(
        s.holds_of("r-b").await.len(),
        1,
        "r-b still held in the ledger"
    );
    assert!(s.bucket_holds("r-b").await, "and in the bucket");
}
