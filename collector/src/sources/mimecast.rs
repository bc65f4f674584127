//! Mimecast URL Protect click logs (`/api/ttp/url/get-logs`), detected per chunk:
//! - a response, one per line or one (pretty-printed) per file:
//!   `{"meta":{"pagination":{"pageSize","next"},"status"},"data":[{"clickLogs":[...]}],"fail":[...]}`;
//! - NDJSON: one click-log object per line.
//!
//! Mapping:
//! - Only `creationMethod` "User Click" rows are clicks (a row without `creationMethod` is one
//!   too); any other value ("Entry Scan") is a delivery-time scan: skipped.
//! - `clicked_through` = `userAwarenessAction` is "Continue", or `userOverride` is neither
//!   "None", "N/A" nor empty (case-insensitive, trimmed).
//! - `action_type` from `action` (or, when that is absent or empty, the first item of
//!   `actions`): "allow" → `ClickAllowed`, "block" → `ClickBlocked`, "warn" → `ClickAllowed` when
//!   clicked through, else `ClickBlocked`; anything else is kept verbatim. `source_action` is the
//!   raw value used.
//! - `event_id` = content hash of the row's text; `account` = `userEmailAddress`; `ip` =
//!   `sendingIp`; `network_message_id` = `messageId`; `threat_types` = the non-empty ones of
//!   `scanResult`, `category`.
//! - Each non-empty `fail` entry is one invalid record: "mimecast reported a failure: ...".
//!
//! A bad row is dead-lettered with its own text and never stops the others.

use crate::record::{content_id, FieldLimits, Record};
use crate::time::{check_range, parse_time_ms};
use clicktally_proto::v1::ClickEvent;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;

/// The source name on every event this module makes.
pub const SOURCE: &str = "mimecast";

/// One chunk: a click-log row, or a response (`meta` / `data` / `fail`). The response keys are
/// raw so that reading them cannot fail (and present even when null); a row never has them.
#[derive(Deserialize)]
struct Row<'a> {
    #[serde(borrow, default)]
    url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    date: Option<Cow<'a, str>>,
    #[serde(rename = "creationMethod", borrow, default)]
    creation_method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    action: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    actions: Option<Cow<'a, str>>,
    #[serde(rename = "userAwarenessAction", borrow, default)]
    user_awareness_action: Option<Cow<'a, str>>,
    #[serde(rename = "userOverride", borrow, default)]
    user_override: Option<Cow<'a, str>>,
    #[serde(rename = "userEmailAddress", borrow, default)]
    user_email_address: Option<Cow<'a, str>>,
    #[serde(rename = "sendingIp", borrow, default)]
    sending_ip: Option<Cow<'a, str>>,
    #[serde(rename = "messageId", borrow, default)]
    message_id: Option<Cow<'a, str>>,
    #[serde(rename = "scanResult", borrow, default)]
    scan_result: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    category: Option<Cow<'a, str>>,
    /// Response: pagination and status.
    #[serde(borrow, default, deserialize_with = "present")]
    meta: Option<&'a RawValue>,
    /// Response: `[{"clickLogs":[...]}]`.
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    /// Response: what Mimecast could not do.
    #[serde(borrow, default, deserialize_with = "present")]
    fail: Option<&'a RawValue>,
}

/// A key that is there, even when its value is `null` (which `Option` would read as absent).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// One entry of a response's `data`.
#[derive(Deserialize)]
struct DataItem<'a> {
    #[serde(rename = "clickLogs", borrow, default)]
    click_logs: Option<Vec<&'a RawValue>>,
}

/// Parses one chunk (a line, or a whole file): a get-logs response or one click-log row.
pub fn parse(chunk: &[u8], limits: &FieldLimits, out: &mut Vec<Record>) {
    if !chunk.trim_ascii_start().starts_with(b"{") {
        let reason = match serde_json::from_slice::<IgnoredAny>(chunk) {
            Ok(_) => "not a Mimecast click log or get-logs response: not a JSON object".to_owned(),
            Err(e) => format!("malformed JSON: {e}"),
        };
        return out.push(Record::invalid(reason));
    }
    let row: Row = match serde_json::from_slice(chunk) {
        Ok(r) => r,
        Err(e) if e.is_data() => {
            return out.push(Record::invalid(format!("malformed click log: {e}")))
        }
        Err(e) => return out.push(Record::invalid(format!("malformed JSON: {e}"))),
    };
    if row.meta.is_some() || row.data.is_some() || row.fail.is_some() {
        return response(&row, limits, out);
    }
    // `from_slice` succeeded, so the chunk is UTF-8.
    let text = std::str::from_utf8(chunk).unwrap_or_default().trim();
    out.push(match record(row, text, limits) {
        Ok(r) => r,
        Err(reason) => Record::invalid(reason),
    });
}

/// The response's `meta.pagination.next`: the token for the next page. `None` when the chunk is
/// not a readable response or has no (or an empty) token.
pub fn next_page_token(chunk: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow, default)]
        meta: Option<Meta<'a>>,
    }
    #[derive(Deserialize)]
    struct Meta<'a> {
        #[serde(borrow, default)]
        pagination: Option<Pagination<'a>>,
    }
    #[derive(Deserialize)]
    struct Pagination<'a> {
        #[serde(borrow, default)]
        next: Option<Cow<'a, str>>,
    }
    if !chunk.trim_ascii_start().starts_with(b"{") {
        return None;
    }
    let probe: Probe = serde_json::from_slice(chunk).ok()?;
    probe
        .meta?
        .pagination?
        .next
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

fn response(row: &Row, limits: &FieldLimits, out: &mut Vec<Record>) {
    if let Some(data) = row.data {
        match serde_json::from_str::<Option<Vec<&RawValue>>>(data.get()) {
            Ok(items) => {
                for item in items.unwrap_or_default() {
                    data_item(item, limits, out);
                }
            }
            Err(e) => out.push(Record::invalid(format!(
                "malformed Mimecast response: data: {e}"
            ))),
        }
    }
    if let Some(fail) = row.fail {
        match serde_json::from_str::<Option<Vec<&RawValue>>>(fail.get()) {
            Ok(items) => {
                for item in items.unwrap_or_default() {
                    if let Some(reason) = failure(item) {
                        out.push(Record::Invalid {
                            reason: format!("mimecast reported a failure: {reason}"),
                            raw: Some(item.get().to_owned()),
                        });
                    }
                }
            }
            Err(e) => out.push(Record::invalid(format!(
                "malformed Mimecast response: fail: {e}"
            ))),
        }
    }
}

fn data_item(item: &RawValue, limits: &FieldLimits, out: &mut Vec<Record>) {
    let parsed = if item.get().starts_with('{') {
        serde_json::from_str::<DataItem>(item.get()).map_err(|e| e.to_string())
    } else {
        Err("not a JSON object".to_owned())
    };
    match parsed {
        Ok(d) => {
            for raw in d.click_logs.unwrap_or_default() {
                let text = raw.get();
                let record = if text.starts_with('{') {
                    serde_json::from_str::<Row>(text)
                        .map_err(|e| format!("malformed click log: {e}"))
                        .and_then(|row| record(row, text, limits))
                } else {
                    Err("malformed click log: not a JSON object".to_owned())
                };
                out.push(record.unwrap_or_else(|reason| Record::Invalid {
                    reason,
                    raw: Some(text.to_owned()),
                }));
            }
        }
        Err(e) => out.push(Record::Invalid {
            reason: format!("malformed Mimecast data entry: {e}"),
            raw: Some(item.get().to_owned()),
        }),
    }
}

/// What a `fail` entry says, or `None` when it is empty (`null`, `{}`, `[]`, `""`).
/// Mimecast's shape is `{"key":...,"errors":[{"code","message","retryable"}]}`; anything else is
/// reported as its compact JSON text.
fn failure(item: &RawValue) -> Option<String> {
    let value: Value = serde_json::from_str(item.get()).ok()?;
    let empty = match &value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    if empty {
        return None;
    }
    if let Value::String(s) = &value {
        return Some(s.trim().to_owned());
    }
    let messages: Vec<String> = value
        .get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| {
                    let code = e.get("code").and_then(Value::as_str).unwrap_or("");
                    let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                    match (code.is_empty(), message.is_empty()) {
                        (true, true) => None,
                        (false, true) => Some(code.to_owned()),
                        (true, false) => Some(message.to_owned()),
                        (false, false) => Some(format!("{code}: {message}")),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if messages.is_empty() {
        Some(value.to_string())
    } else {
        Some(messages.join("; "))
    }
}

/// Equal, ignoring ASCII case and surrounding white space.
fn is(value: &str, word: &str) -> bool {
    value.trim().eq_ignore_ascii_case(word)
}

fn record(row: Row, text: &str, limits: &FieldLimits) -> Result<Record, String> {
    if let Some(method) = &row.creation_method {
        if !method.trim().is_empty() && !is(method, "User Click") {
            return Ok(Record::Skipped("a delivery-time scan, not a click"));
        }
    }
    let time = row.date.as_deref().ok_or("missing date")?;
    let time_ms = check_range(parse_time_ms(time)?, limits.now_ms)?;
    let url = row.url.ok_or("missing url")?;
    limits.check_url(&url)?;
    let clicked_through = row
        .user_awareness_action
        .as_deref()
        .is_some_and(|a| is(a, "Continue"))
        || row
            .user_override
            .as_deref()
            .is_some_and(|o| !(is(o, "None") || is(o, "N/A") || is(o, "")));
    let (source_action, is_list) = match row.action.filter(|a| !a.trim().is_empty()) {
        Some(action) => (action, false),
        None => {
            let actions = row
                .actions
                .filter(|a| !a.trim().is_empty())
                .ok_or("missing action (and actions)")?;
            (actions, true)
        }
    };
    let verb = if is_list {
        source_action.split(',').next().unwrap_or_default()
    } else {
        &source_action
    };
    let action_type = if is(verb, "allow") {
        "ClickAllowed".to_owned()
    } else if is(verb, "block") {
        "ClickBlocked".to_owned()
    } else if is(verb, "warn") {
        if clicked_through {
            "ClickAllowed".to_owned()
        } else {
            "ClickBlocked".to_owned()
        }
    } else {
        source_action.to_string()
    };
    let threat_types = [row.scan_result, row.category]
        .into_iter()
        .flatten()
        .filter(|t| !t.trim().is_empty())
        .map(Cow::into_owned)
        .collect();
    Ok(Record::Click(ClickEvent {
        event_id: content_id(text.as_bytes()),
        time_unix_ms: time_ms,
        url: url.into_owned(),
        action_type,
        source_action: source_action.into_owned(),
        clicked_through,
        source: SOURCE.to_owned(),
        tenant: String::new(),
        account: row
            .user_email_address
            .map(Cow::into_owned)
            .unwrap_or_default(),
        network_message_id: row.message_id.map(Cow::into_owned).unwrap_or_default(),
        ip: row.sending_ip.map(Cow::into_owned).unwrap_or_default(),
        threat_types,
        workload: String::new(),
    }))
}

#[cfg(test)]
#[path = "mimecast_tests.rs"]
mod tests;
