//! Proofpoint TAP SIEM API responses (`/v2/siem/clicks/blocked`, `/clicks/permitted`, `/all`,
//! `format=json`), one response per line or one (pretty-printed) response per file:
//! `{"queryEndTime", "clicksPermitted":[...], "clicksBlocked":[...], "messagesDelivered":[...], "messagesBlocked":[...]}`,
//! any array of which may be absent.
//!
//! - `clicksBlocked` → `ClickBlocked`, `clicksPermitted` → `ClickAllowed`; `source_action` is the
//!   singular of the array's name, `"clickBlocked"` or `"clickPermitted"` (Proofpoint's click
//!   objects carry no action field of their own). `clicked_through` is always false.
//! - `event_id` = the click's `id` (the event's UUID). When it is missing or empty, a content hash
//!   of the click object's text. `GUID` is NOT used: it names the message in PPS, so every click
//!   on one message shares it and would be counted once.
//! - `threat_types` = `[classification]` in lower case ("MALWARE" and "malware" → "malware").
//! - Each `messagesDelivered` / `messagesBlocked` entry is skipped: a message, not a click.
//!
//! Records come out in this order: clicks permitted, clicks blocked, messages delivered,
//! messages blocked. A bad click is dead-lettered with its own text and never stops the others.
//! Only whole responses are accepted: a bare click object is not a response.

use crate::record::{content_id, FieldLimits, Record};
use crate::time::{check_range, parse_time_ms};
use clicktally_proto::v1::ClickEvent;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The source name on every event this module makes.
pub const SOURCE: &str = "proofpoint";

/// `source_action` of a click from `clicksBlocked`.
pub const CLICK_BLOCKED: &str = "clickBlocked";
/// `source_action` of a click from `clicksPermitted`.
pub const CLICK_PERMITTED: &str = "clickPermitted";

/// A SIEM API response. The click arrays hold raw objects so that one bad click cannot spoil
/// the others; messages are only counted.
#[derive(Deserialize)]
struct Response<'a> {
    #[serde(rename = "queryEndTime", borrow, default)]
    query_end_time: Option<&'a RawValue>,
    #[serde(rename = "clicksPermitted", borrow, default)]
    clicks_permitted: Option<Vec<&'a RawValue>>,
    #[serde(rename = "clicksBlocked", borrow, default)]
    clicks_blocked: Option<Vec<&'a RawValue>>,
    #[serde(rename = "messagesDelivered", default)]
    messages_delivered: Option<Vec<IgnoredAny>>,
    #[serde(rename = "messagesBlocked", default)]
    messages_blocked: Option<Vec<IgnoredAny>>,
}

/// The fields of a click object this module reads.
#[derive(Deserialize)]
struct Click<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "clickTime", borrow, default)]
    click_time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    recipient: Option<Cow<'a, str>>,
    #[serde(rename = "clickIP", borrow, default)]
    click_ip: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    classification: Option<Cow<'a, str>>,
    #[serde(rename = "messageID", borrow, default)]
    message_id: Option<Cow<'a, str>>,
}

/// Which array a click came from.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Permitted,
    Blocked,
}

/// Parses one SIEM API response (a line, or a whole file).
pub fn parse(chunk: &[u8], limits: &FieldLimits, out: &mut Vec<Record>) {
    if let Err(reason) = check_object(chunk) {
        return out.push(Record::invalid(reason));
    }
    let response: Response = match serde_json::from_slice(chunk) {
        Ok(r) => r,
        Err(e) if e.is_data() => {
            return out.push(Record::invalid(format!(
                "malformed Proofpoint SIEM response: {e}"
            )))
        }
        Err(e) => return out.push(Record::invalid(format!("malformed JSON: {e}"))),
    };
    if response.query_end_time.is_none()
        && response.clicks_permitted.is_none()
        && response.clicks_blocked.is_none()
        && response.messages_delivered.is_none()
        && response.messages_blocked.is_none()
    {
        return out.push(Record::invalid(
            "not a Proofpoint SIEM response: none of queryEndTime, clicksPermitted, \
             clicksBlocked, messagesDelivered, messagesBlocked",
        ));
    }
    for raw in response.clicks_permitted.unwrap_or_default() {
        push_click(raw, Kind::Permitted, limits, out);
    }
    for raw in response.clicks_blocked.unwrap_or_default() {
        push_click(raw, Kind::Blocked, limits, out);
    }
    let messages = response.messages_delivered.map_or(0, |m| m.len())
        + response.messages_blocked.map_or(0, |m| m.len());
    out.extend(std::iter::repeat_n(
        Record::Skipped("a message, not a click"),
        messages,
    ));
}

/// The response's `queryEndTime`: where the next poll starts. `None` when the chunk is not a
/// readable response or has no (or an empty) `queryEndTime`.
pub fn query_end_time(chunk: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(rename = "queryEndTime", borrow, default)]
        query_end_time: Option<Cow<'a, str>>,
    }
    check_object(chunk).ok()?;
    let probe: Probe = serde_json::from_slice(chunk).ok()?;
    probe
        .query_end_time
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// A response must be a JSON object (serde would otherwise read an array positionally).
fn check_object(chunk: &[u8]) -> Result<(), String> {
    if chunk.trim_ascii_start().starts_with(b"{") {
        return Ok(());
    }
    match serde_json::from_slice::<IgnoredAny>(chunk) {
        Ok(_) => Err("not a Proofpoint SIEM response: not a JSON object".into()),
        Err(e) => Err(format!("malformed JSON: {e}")),
    }
}

fn push_click(raw: &RawValue, kind: Kind, limits: &FieldLimits, out: &mut Vec<Record>) {
    let record = match click(raw, kind, limits) {
        Ok(c) => Record::Click(c),
        Err(reason) => Record::Invalid {
            reason,
            raw: Some(raw.get().to_owned()),
        },
    };
    out.push(record);
}

fn click(raw: &RawValue, kind: Kind, limits: &FieldLimits) -> Result<ClickEvent, String> {
    let text = raw.get();
    if !text.trim_start().starts_with('{') {
        return Err("malformed click: not a JSON object".into());
    }
    let c: Click = serde_json::from_str(text).map_err(|e| format!("malformed click: {e}"))?;
    let time = c.click_time.as_deref().ok_or("missing clickTime")?;
    let time_ms = check_range(parse_time_ms(time)?, limits.now_ms)?;
    let url = c.url.ok_or("missing url")?;
    limits.check_url(&url)?;
    let (action_type, source_action) = match kind {
        Kind::Permitted => ("ClickAllowed", CLICK_PERMITTED),
        Kind::Blocked => ("ClickBlocked", CLICK_BLOCKED),
    };
    let event_id = match c.id {
        Some(id) if !id.trim().is_empty() => id.into_owned(),
        _ => content_id(text.as_bytes()),
    };
    Ok(ClickEvent {
        event_id,
        time_unix_ms: time_ms,
        url: url.into_owned(),
        action_type: action_type.to_owned(),
        source_action: source_action.to_owned(),
        clicked_through: false,
        source: SOURCE.to_owned(),
        tenant: String::new(),
        account: c.recipient.map(Cow::into_owned).unwrap_or_default(),
        network_message_id: c.message_id.map(Cow::into_owned).unwrap_or_default(),
        ip: c.click_ip.map(Cow::into_owned).unwrap_or_default(),
        threat_types: c
            .classification
            .map(|t| t.trim().to_lowercase())
            .filter(|t| !t.is_empty())
            .into_iter()
            .collect(),
        workload: String::new(),
    })
}

#[cfg(test)]
#[path = "proofpoint_tests.rs"]
mod tests;
