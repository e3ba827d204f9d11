//! The provider's JSON envelope (`ret`, `data.status`, `data.errors.code`, `msg`), read
//! tolerantly: numbers may come as strings, `data` may be `[]`, commas may be missing.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::error::ProviderError;

/// The most bills `App.Sip_Cdr.GetBill` returns in one page.
pub const BILLS_PER_PAGE_MAX: u32 = 1000;

/// One page of the bill list to ask for: calls that started in `[start, end]` (the
/// provider's window, in its zone, to the second).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillQuery {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// From 1.
    pub page: u32,
    /// At most [`BILLS_PER_PAGE_MAX`].
    pub per_page: u32,
}

/// One page of bills as the provider sent it.
#[derive(Debug, Clone)]
pub struct BillPage {
    /// How many bills the whole window holds, when the provider says.
    pub total_items: Option<u64>,
    /// The bills, each as the JSON object the provider sent; an element that is not an
    /// object is kept as `Err` with its text, to be reported.
    pub bills: Vec<Result<Map<String, Value>, String>>,
}

/// Reads `result` of a GetBill answer: `{"totalitems", "currentpage", "itemsperpage",
/// "bills": [...]}`, numbers possibly as strings; no `bills` (or `null`) is an empty page.
pub fn parse_bill_page(result: &Value, query: &BillQuery) -> Result<BillPage, ProviderError> {
    let unreadable = |detail: String| ProviderError::Transient {
        code: "provider_unreadable".into(),
        detail,
    };
    let list = match &result["bills"] {
        Value::Array(items) => items.as_slice(),
        Value::Null => &[],
        other => {
            return Err(unreadable(format!(
                "bill page {}: `bills` is not a list ({})",
                query.page,
                short(other)
            )));
        }
    };
    let total_items = int(&result["totalitems"]).and_then(|n| u64::try_from(n).ok());
    let bills = list
        .iter()
        .map(|item| match item {
            Value::Object(map) => Ok(map.clone()),
            other => Err(short(other)),
        })
        .collect();
    Ok(BillPage { total_items, bills })
}

fn short(v: &Value) -> String {
    let mut text = v.to_string();
    if text.len() > 80 {
        let cut = (0..=80)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// What a provider answer boils down to.
#[derive(Debug)]
pub struct Envelope {
    pub ret: i64,
    pub msg: String,
    /// `data.status` (0 = success) when `data` is an object.
    pub status: Option<i64>,
    pub desc: String,
    pub error_code: Option<i64>,
    pub error_msg: String,
    pub result: Value,
}

/// Parses an answer body. An unreadable body is a passing problem (a proxy's error page).
pub fn parse_envelope(body: &str) -> Result<Envelope, ProviderError> {
    let value: Value = serde_json::from_str(body)
        .or_else(|_| serde_json::from_str(&crate::callback::repair(body)))
        .map_err(|_| ProviderError::Transient {
            code: "provider_unreadable".into(),
            detail: format!("the answer is not JSON ({} bytes)", body.len()),
        })?;
    let ret = int(&value["ret"]).ok_or_else(|| ProviderError::Transient {
        code: "provider_unreadable".into(),
        detail: "the answer has no `ret`".into(),
    })?;
    let data = &value["data"];
    Ok(Envelope {
        ret,
        msg: text(&value["msg"]),
        status: int(&data["status"]),
        desc: text(&data["desc"]),
        error_code: int(&data["errors"]["code"]),
        error_msg: text(&data["errors"]["codemsg"]),
        result: data["result"].clone(),
    })
}

/// A number sent as a number or as a numeric string.
pub fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A text field sent as a string or a number; anything else is empty.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

impl Envelope {
    /// Turns a non-success answer into the error that says what to do; `Ok` on success.
    pub fn check(self, during_login: bool) -> Result<Envelope, ProviderError> {
        let detail = |e: &Envelope| {
            let mut parts: Vec<String> = vec![format!("ret {}", e.ret)];
            if let Some(code) = e.error_code {
                parts.push(format!("code {code}"));
            }
            parts.extend(
                [&e.msg, &e.desc, &e.error_msg]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .cloned(),
            );
            parts.join(", ")
        };
        match self.ret {
            200 => {}
            600 => {
                return Err(ProviderError::TokenRejected {
                    detail: detail(&self),
                });
            }
            601..=604 => {
                return Err(ProviderError::CredentialsRefused {
                    detail: detail(&self),
                });
            }
            500..=599 => {
                return Err(ProviderError::Transient {
                    code: format!("provider_ret_{}", self.ret),
                    detail: detail(&self),
                });
            }
            400 => {
                return Err(ProviderError::Rejected {
                    code: "provider_ret_400".into(),
                    detail: detail(&self),
                });
            }
            other => {
                return Err(ProviderError::Unexpected {
                    code: format!("provider_ret_{other}"),
                    detail: detail(&self),
                });
            }
        }
        if self.status.unwrap_or(0) == 0 {
            return Ok(self);
        }
        let code = self.error_code.unwrap_or(0);
        let code_text = format!("provider_code_{code}");
        Err(match code {
            1010 => ProviderError::TokenRejected {
                detail: detail(&self),
            },
            _ if during_login => ProviderError::CredentialsRefused {
                detail: detail(&self),
            },
            1001 => ProviderError::Transient {
                code: code_text,
                detail: detail(&self),
            },
            1002 => ProviderError::FileNotFound {
                code: code_text,
                detail: detail(&self),
            },
            _ => ProviderError::Unexpected {
                code: code_text,
                detail: detail(&self),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::error::Action;

    fn action(body: &str) -> Action {
        parse_envelope(body)
            .unwrap()
            .check(false)
            .unwrap_err()
            .action()
    }

    #[test]
    fn classifies_the_documented_answers() {
        assert_eq!(
            action(r#"{"ret":600,"data":[],"msg":"The token is invalid"}"#),
            Action::Relogin
        );
        assert_eq!(
            action(r#"{"ret":"601","data":[],"msg":"appid is not authorized"}"#),
            Action::StopRun
        );
        assert_eq!(
            action(r#"{"ret":604,"data":[],"msg":"IP is not authorized"}"#),
            Action::StopRun
        );
        assert_eq!(
            action(r#"{"ret":500,"data":[],"msg":"Server Error"}"#),
            Action::Retry
        );
        assert_eq!(
            action(
                r#"{"ret":400, // status code
            "data":[],"msg":"Illegal request: invalid parameter"}"#
                    .replace("// status code", "")
                    .as_str()
            ),
            Action::GiveUp
        );
        let status = |code: &str| {
            format!(
                r#"{{"ret":200,"data":{{"status":1,"desc":"x","errors":{{"code":"{code}","codemsg":"m"}}}},"msg":""}}"#
            )
        };
        assert_eq!(action(&status("1010")), Action::Relogin);
        assert_eq!(action(&status("1001")), Action::Retry);
        assert_eq!(action(&status("1002")), Action::GiveUp);
        assert_eq!(action(&status("1024")), Action::Retry);
    }

    #[test]
    fn a_bill_page_tolerates_strings_and_missing_lists() {
        let query = BillQuery {
            start: DateTime::from_timestamp(0, 0).unwrap_or_default(),
            end: DateTime::from_timestamp(60, 0).unwrap_or_default(),
            page: 2,
            per_page: 1000,
        };
        let page = parse_bill_page(
            &serde_json::json!({"totalitems": "1234", "bills": [{"id": "1"}, 7]}),
            &query,
        )
        .unwrap();
        assert_eq!(page.total_items, Some(1234));
        assert_eq!(page.bills.len(), 2);
        assert!(page.bills[0].is_ok() && page.bills[1].is_err());
        let empty = parse_bill_page(&serde_json::json!({"totalitems": 0}), &query).unwrap();
        assert!(empty.bills.is_empty());
        assert!(parse_bill_page(&serde_json::json!({"bills": "x"}), &query).is_err());
    }

    #[test]
    fn a_refused_login_stops_the_run() {
        let body = r#"{"ret":200,"data":{"status":1,"desc":"fail","errors":{"code":"1003","codemsg":"Authorization failed"}},"msg":""}"#;
        assert_eq!(
            parse_envelope(body)
                .unwrap()
                .check(true)
                .unwrap_err()
                .action(),
            Action::StopRun
        );
    }

    #[test]
    fn success_keeps_the_result_and_tolerates_sloppy_json() {
        let body = "{\"ret\": \"200\"\n\"data\": {\"status\": \"0\", \"result\": {\"token\": \"t\"}}, \"msg\": \"\"}";
        let env = parse_envelope(body).unwrap().check(true).unwrap();
        assert_eq!(text(&env.result["token"]), "t");
        assert!(matches!(
            parse_envelope("<html>502</html>"),
            Err(ProviderError::Transient { .. })
        ));
    }
}
