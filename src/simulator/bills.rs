//! The provider's bill list (`App.Sip_Cdr.GetBill`, as `provider-api/bill-list-and-callback-
//! notes.md` describes it) and the delivery of call-record callbacks to a receiver, with a
//! share of them dropped: together, the calls a receiver never heard of and the list that
//! still names them.
//!
//! Every call the simulator knows is a bill: its callback's fields under the bill's names,
//! as sloppy as the provider's (ids and seconds as strings every other call), without
//! `uuid` unless [`super::Faults::bills_with_uuid`] says so, and without `companycode`.
//! Bills are listed by call start (to the second, both ends inclusive), ordered by id, in
//! pages of `itemsperpage` (default 10, at most 1,000). `syncflag` 1 (the default) lists
//! only bills not fetched before and marks those it returns fetched, as the provider's
//! cursor does; 2 lists only fetched ones; 3 all.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::SimState;
use super::accounts::AccountIndex;
use super::envelope::{PROVIDER_TZ, failure, success};
use crate::timefmt::parse_provider_time;

/// The most bills one page holds, whatever `itemsperpage` asks.
pub const MAX_ITEMS_PER_PAGE: usize = 1000;
const DEFAULT_ITEMS_PER_PAGE: usize = 10;

/// A call the provider knows.
#[derive(Debug, Clone)]
pub(super) struct SimCall {
    /// When the call started: what the bill list's window selects on (a bill's own
    /// `starttime` may be empty).
    pub started: DateTime<Utc>,
    pub id: u64,
    pub uuid: String,
    /// The bill without `uuid`.
    pub bill: Map<String, Value>,
    /// Returned once with `syncflag` 1 (or 2 and 3 after that).
    pub fetched: bool,
}

impl SimCall {
    /// The bill of the call `callback` describes; `None` when it has no usable `id`.
    pub fn from_callback(callback: &Value, fallback_start: DateTime<Utc>) -> Option<Self> {
        let cb = callback.as_object()?;
        let id = match cb.get("id")? {
            Value::Number(n) => n.as_u64()?,
            Value::String(s) => s.trim().parse().ok()?,
            _ => return None,
        };
        let started = cb
            .get("starttime")
            .and_then(Value::as_str)
            .and_then(|s| parse_provider_time(s, PROVIDER_TZ).ok().flatten())
            .unwrap_or(fallback_start);
        // Sloppy as the provider: every other bill has its numbers as strings.
        let sloppy = id % 2 == 1;
        let number = |v: Option<&Value>| match (v, sloppy) {
            (Some(Value::Number(n)), true) => json!(n.to_string()),
            (Some(v), _) => v.clone(),
            (None, _) => json!(""),
        };
        let copy = |name: &str| cb.get(name).cloned().unwrap_or_else(|| json!(""));
        let mut bill = Map::new();
        bill.insert(
            "id".into(),
            if sloppy {
                json!(id.to_string())
            } else {
                json!(id)
            },
        );
        for name in ["extnumber", "destnumber"] {
            bill.insert(name.into(), copy(name));
        }
        bill.insert("displaynumber".into(), copy("disnumber"));
        for name in ["starttime", "answertime", "endtime"] {
            bill.insert(name.into(), copy(name));
        }
        bill.insert("duration".into(), number(cb.get("duration")));
        bill.insert("billsec".into(), number(cb.get("billsec")));
        bill.insert("direction".into(), copy("type"));
        for name in [
            "callmethod",
            "memberid",
            "chengshudu",
            "customuuid",
            "recordfilename",
            "downloadip",
            "hangupdirection",
            "hangupcause",
        ] {
            bill.insert(name.into(), copy(name));
        }
        bill.insert("userid".into(), json!(""));
        Some(Self {
            started,
            id,
            uuid: cb
                .get("uuid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            bill,
            fetched: false,
        })
    }
}

/// `App.Sip_Cdr.GetBill` for the token's `account` (the token already checked): its calls
/// only.
pub(super) fn get_bill(
    state: &mut SimState,
    account: AccountIndex,
    fields: &HashMap<String, String>,
    reqtime: DateTime<Utc>,
) -> Value {
    state.stats.bill_requests += 1;
    let time = |name: &str| {
        fields
            .get(name)
            .and_then(|s| parse_provider_time(s, PROVIDER_TZ).ok().flatten())
    };
    let (Some(start), Some(end)) = (time("starttime"), time("endtime")) else {
        return failure(400, "Illegal request: starttime and endtime are required");
    };
    let number = |name: &str, default: usize| {
        fields
            .get(name)
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(default)
    };
    let syncflag = number("syncflag", 1);
    let page = number("currentpage", 1).max(1);
    let per_page = match number("itemsperpage", DEFAULT_ITEMS_PER_PAGE) {
        0 => DEFAULT_ITEMS_PER_PAGE,
        n => n.min(MAX_ITEMS_PER_PAGE),
    };
    let with_uuid = state.faults.knobs().bills_with_uuid;
    let mut matching: Vec<&mut SimCall> = state.accounts[account]
        .calls
        .iter_mut()
        .filter(|c| {
            let second = c.started.timestamp();
            second >= start.timestamp() && second <= end.timestamp()
        })
        .filter(|c| match syncflag {
            2 => c.fetched,
            3 => true,
            _ => !c.fetched,
        })
        .collect();
    matching.sort_by_key(|c| c.id);
    let total = matching.len();
    let bills: Vec<Value> = matching
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .map(|call| {
            if syncflag != 2 && syncflag != 3 {
                call.fetched = true;
            }
            let mut bill = call.bill.clone();
            if with_uuid {
                bill.insert("uuid".into(), json!(call.uuid));
            }
            Value::Object(bill)
        })
        .collect();
    state.stats.bills_listed += bills.len() as u64;
    success(
        "get success",
        Some(json!({
            "totalitems": total,
            "currentpage": page,
            "itemsperpage": per_page,
            "bills": bills,
        })),
        reqtime,
    )
}

/// What [`super::Simulator::deliver_callbacks`] did with each callback, by call uuid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Posted and answered with a 2xx.
    pub delivered: Vec<String>,
    /// Never sent: dropped by the `drop_callbacks_percent` fault.
    pub dropped: Vec<String>,
    /// Sent, but refused or not answered.
    pub failed: Vec<String>,
}
