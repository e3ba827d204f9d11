//! The provider's JSON envelope, which every service answers in (`api` for login and
//! recording links, `bills` for the bill list): `ret` for the request, `data.status` for
//! the service, and times on the provider's clock.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// The provider's clock: UTC+8, printed without a zone.
pub(super) use crate::timefmt::PROVIDER_TZ;

/// A time as the provider prints it: on its clock, without a zone.
pub(super) fn provider_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&PROVIDER_TZ)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A refusal of the request itself (`ret` other than 200).
pub(super) fn failure(ret: u16, msg: &str) -> Value {
    json!({ "ret": ret, "data": [], "msg": msg })
}

/// An answer with `data.status` 0 and, when there is one, its `result`.
pub(super) fn success(desc: &str, result: Option<Value>, reqtime: DateTime<Utc>) -> Value {
    let mut data = json!({
        "status": 0,
        "desc": desc,
        "reqtime": reqtime.timestamp(),
        "rsptime": Utc::now().timestamp(),
    });
    if let Some(result) = result {
        data["result"] = result;
    }
    json!({ "ret": 200, "data": data, "msg": "" })
}

/// An answer with `data.status` 1: the service ran and refused, saying why in `errors`.
pub(super) fn status_error(desc: &str, code: &str, codemsg: &str, reqtime: DateTime<Utc>) -> Value {
    json!({
        "ret": 200,
        "data": {
            "status": 1,
            "desc": desc,
            "errors": { "code": code, "codemsg": codemsg },
            "reqtime": reqtime.timestamp(),
            "rsptime": Utc::now().timestamp(),
        },
        "msg": "",
    })
}
