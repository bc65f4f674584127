//! Microsoft Defender for Office 365 `UrlClickEvents`, in the three shapes they are exported in,
//! detected per record:
//! - Event Hub messages: `{"records":[{"time","tenantId","category":"AdvancedHunting-UrlClickEvents","properties":{...}}]}`;
//! - storage-blob JSON Lines: one such record per line (CRLF allowed);
//! - bare Advanced Hunting / Sentinel rows: `{"Timestamp"|"TimeGenerated","Url","ActionType","IsClickedThrough",...}`.
//!
//! Records of another `category` (or Sentinel rows of another `Type`) are skipped, not errors.
//! `event_id` is a content hash of the row (`ReportId` is not unique: the rows of one
//! click-through share it).

use crate::record::{content_id, FieldLimits, Record};
use crate::time::{check_range, parse_time_ms};
use clicktally_proto::v1::ClickEvent;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;

/// The source name on every event this module makes.
pub const SOURCE: &str = "defender";
/// The Event Hub / blob category of URL click records.
pub const CATEGORY: &str = "AdvancedHunting-UrlClickEvents";

/// One record as exported: either an envelope (with `properties`) or a bare row.
#[derive(Deserialize)]
struct Row<'a> {
    #[serde(rename = "Timestamp", borrow, default)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(rename = "TimeGenerated", borrow, default)]
    time_generated: Option<Cow<'a, str>>,
    #[serde(rename = "Url", borrow, default)]
    url: Option<Cow<'a, str>>,
    #[serde(rename = "ActionType", borrow, default)]
    action_type: Option<Cow<'a, str>>,
    #[serde(rename = "IsClickedThrough", default)]
    is_clicked_through: Option<Value>,
    #[serde(rename = "AccountUpn", borrow, default)]
    account_upn: Option<Cow<'a, str>>,
    #[serde(rename = "NetworkMessageId", borrow, default)]
    network_message_id: Option<Cow<'a, str>>,
    #[serde(rename = "IPAddress", borrow, default)]
    ip_address: Option<Cow<'a, str>>,
    #[serde(rename = "ThreatTypes", default)]
    threat_types: Option<Value>,
    #[serde(rename = "Workload", borrow, default)]
    workload: Option<Cow<'a, str>>,
    #[serde(rename = "TenantId", borrow, default)]
    tenant_id: Option<Cow<'a, str>>,
    /// Sentinel's table name, on exported rows.
    #[serde(rename = "Type", borrow, default)]
    table: Option<Cow<'a, str>>,
    /// Envelope: the tenant.
    #[serde(rename = "tenantId", borrow, default)]
    envelope_tenant: Option<Cow<'a, str>>,
    /// Envelope: which Advanced Hunting table.
    #[serde(borrow, default)]
    category: Option<Cow<'a, str>>,
    /// Envelope: the row itself.
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
}

/// A document that holds records: an Event Hub message.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    records: Vec<&'a RawValue>,
}

/// Parses one JSON value (a line, or a whole file) holding Defender records.
pub fn parse(chunk: &[u8], limits: &FieldLimits, out: &mut Vec<Record>) {
    let value: &RawValue = match serde_json::from_slice(chunk) {
        Ok(v) => v,
        Err(e) => return out.push(Record::invalid(format!("malformed JSON: {e}"))),
    };
    let text = value.get().trim_start();
    if text.starts_with('[') {
        match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(items) => {
                let many = items.len() > 1;
                for item in items {
                    push_record(item, many, limits, out);
                }
            }
            Err(e) => out.push(Record::invalid(format!("malformed JSON array: {e}"))),
        }
    } else if text.starts_with('{') && text.contains("\"records\"") && has_records_key(text) {
        match serde_json::from_str::<Envelope>(text) {
            Ok(env) => {
                for item in env.records {
                    push_record(item, true, limits, out);
                }
            }
            Err(e) => out.push(Record::invalid(format!("malformed Event Hub message: {e}"))),
        }
    } else {
        push_record(value, false, limits, out);
    }
}

/// Cheap check for the Event Hub shape before a full parse.
fn has_records_key(text: &str) -> bool {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow, default)]
        records: Option<&'a RawValue>,
    }
    serde_json::from_str::<Probe>(text).is_ok_and(|p| p.records.is_some())
}

fn push_record(raw: &RawValue, one_of_many: bool, limits: &FieldLimits, out: &mut Vec<Record>) {
    let record = match record(raw, limits) {
        Ok(r) => r,
        Err(reason) => Record::Invalid {
            reason,
            raw: one_of_many.then(|| raw.get().to_owned()),
        },
    };
    out.push(record);
}

fn record(raw: &RawValue, limits: &FieldLimits) -> Result<Record, String> {
    let outer: Row =
        serde_json::from_str(raw.get()).map_err(|e| format!("malformed record: {e}"))?;
    let (row, row_text, envelope_tenant) = match outer.properties {
        Some(props) => {
            if let Some(cat) = &outer.category {
                if !cat.eq_ignore_ascii_case(CATEGORY) {
                    return Ok(Record::Skipped("another Advanced Hunting category"));
                }
            }
            let row: Row = serde_json::from_str(props.get())
                .map_err(|e| format!("malformed properties: {e}"))?;
            (row, props.get(), outer.envelope_tenant)
        }
        None => (outer, raw.get(), None),
    };
    if let Some(table) = &row.table {
        if !table.eq_ignore_ascii_case("UrlClickEvents") {
            return Ok(Record::Skipped("a row of another table"));
        }
    }
    let time = row
        .timestamp
        .as_deref()
        .or(row.time_generated.as_deref())
        .ok_or("missing Timestamp (or TimeGenerated)")?;
    let time_ms = check_range(parse_time_ms(time)?, limits.now_ms)?;
    let url = row.url.ok_or("missing Url")?;
    limits.check_url(&url)?;
    let action_type = row.action_type.ok_or("missing ActionType")?;
    let clicked_through = flexible_bool(row.is_clicked_through.as_ref())?;
    Ok(Record::Click(ClickEvent {
        event_id: content_id(row_text.as_bytes()),
        time_unix_ms: time_ms,
        url: url.into_owned(),
        action_type: action_type.clone().into_owned(),
        source_action: action_type.into_owned(),
        clicked_through,
        source: SOURCE.to_owned(),
        tenant: row
            .tenant_id
            .or(envelope_tenant)
            .map(Cow::into_owned)
            .unwrap_or_default(),
        account: row.account_upn.map(Cow::into_owned).unwrap_or_default(),
        network_message_id: row
            .network_message_id
            .map(Cow::into_owned)
            .unwrap_or_default(),
        ip: row.ip_address.map(Cow::into_owned).unwrap_or_default(),
        threat_types: threat_types(row.threat_types.as_ref()),
        workload: row.workload.map(Cow::into_owned).unwrap_or_default(),
    }))
}

/// `IsClickedThrough` as Defender and Sentinel write it: a JSON bool, `0`/`1`,
/// `"true"`/`"false"`/`"0"`/`"1"`, or null (false).
fn flexible_bool(v: Option<&Value>) -> Result<bool, String> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(false),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(true),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" | "" => Ok(false),
            _ => Err(format!("IsClickedThrough {s:?} is not a boolean")),
        },
        Some(other) => Err(format!("IsClickedThrough {other} is not a boolean")),
    }
}

/// `ThreatTypes`: a comma-separated string, or an array of strings.
fn threat_types(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
#[path = "defender_tests.rs"]
mod tests;
