//! Device status: the statuses a device may report, the flat object
//! monitors parse (`{"device_id":…,"status":…,…}`, no envelope), and the
//! events that carry it to `devices` and `device:{id}` monitors.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use simd_json::OwnedValue;

use crate::fanout::broadcast::{Content, Draft};
use crate::fanout::topic;
use crate::proto::frame::{self, Data, OpCode};
use crate::proto::json::{self, JsonError};

/// Statuses a device may report.
pub const STATUSES: &[&str] = &["success", "fail", "error", "online", "offline"];

/// Why a status report is refused (nothing is published).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("invalid JSON body: {0}")]
    BadJson(JsonError),
    /// The encoded status exceeds `max_status_bytes`.
    #[error("status of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("'status' must be one of success, fail, error, online, offline (got '{0}')")]
    BadStatus(String),
    #[error("missing 'status' (one of success, fail, error, online, offline)")]
    MissingStatus,
    #[error("invalid device id: {0}")]
    BadDeviceId(topic::TopicError),
    /// A field the flat status object cannot carry.
    #[error(
        "unknown field '{0}' (a status has mac_address, serial_number, status, time_start, time_end, result)"
    )]
    UnknownField(String),
    /// `result` must stay flat: monitors read it as a string.
    #[error("'result' must be a string or null (monitors read a flat object)")]
    NestedResult,
}

impl StatusError {
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            StatusError::BadJson(_) => (400, "bad_json"),
            StatusError::TooLarge { .. } => (413, "status_too_large"),
            _ => (400, "bad_status"),
        }
    }
}

/// A status report as a device or backend sends it; every field optional
/// but `status`.
#[derive(Debug, Deserialize, Default)]
pub struct StatusIn {
    mac_address: Option<String>,
    serial_number: Option<String>,
    status: Option<String>,
    time_start: Option<String>,
    time_end: Option<String>,
    #[serde(default)]
    result: OwnedValue,
}

/// The object monitors receive. Missing ids are "unknown"; missing times
/// and result are null; `updated_at` is the server's time of acceptance.
#[derive(Serialize)]
struct StatusOut<'a> {
    device_id: &'a str,
    mac_address: &'a str,
    serial_number: &'a str,
    status: &'a str,
    time_start: Option<&'a str>,
    time_end: Option<&'a str>,
    updated_at: &'a str,
    result: &'a OwnedValue,
}

impl StatusIn {
    /// The reported status, if any.
    pub fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }
}

/// The fields of a status report (every other key of a body is refused).
pub const FIELDS: &[&str] = &[
    "mac_address",
    "serial_number",
    "status",
    "time_start",
    "time_end",
    "result",
];

/// Parses a JSON status report body, nesting at most `max_depth` deep;
/// a key outside [`FIELDS`] is refused by name.
pub fn parse(body: &mut [u8], max_depth: usize) -> Result<StatusIn, StatusError> {
    json::check_object(body, max_depth).map_err(StatusError::BadJson)?;
    let mut copy = body.to_vec();
    let keys: std::collections::BTreeMap<String, serde::de::IgnoredAny> =
        simd_json::serde::from_slice(&mut copy).map_err(|e| StatusError::BadJson(json::describe(&e)))?;
    if let Some(extra) = keys.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(StatusError::UnknownField(extra.chars().take(64).collect()));
    }
    simd_json::serde::from_slice(body).map_err(|e| StatusError::BadJson(json::describe(&e)))
}

/// A presence status (`online`/`offline`) that keeps the device's last
/// reported identity, read from its last status frame, if any.
pub fn presence(status: &str, last: Option<&[u8]>) -> StatusIn {
    #[derive(Deserialize)]
    struct Identity {
        mac_address: Option<String>,
        serial_number: Option<String>,
    }
    let known = last
        .map(|frame| frame::payload(frame).to_vec())
        .and_then(|mut json| simd_json::serde::from_slice::<Identity>(&mut json).ok());
    let keep = |v: Option<String>| v.filter(|v| v != "unknown");
    StatusIn {
        status: Some(status.to_string()),
        mac_address: known.as_ref().and_then(|k| keep(k.mac_address.clone())),
        serial_number: known.and_then(|k| keep(k.serial_number)),
        ..StatusIn::default()
    }
}

/// A bare status (`online`/`offline` on connect and disconnect).
pub fn bare(status: &str) -> StatusIn {
    StatusIn {
        status: Some(status.to_string()),
        ..StatusIn::default()
    }
}

/// Validates `report` for `device_id` and encodes its frame once, as the two
/// events that carry it (`devices`, `device:{id}`); an encoding over
/// `max_bytes` is refused (every monitor is sent each device's last status).
pub fn events(
    device_id: &str,
    report: &StatusIn,
    now: &str,
    max_bytes: usize,
) -> Result<Vec<Draft>, StatusError> {
    topic::check_name(device_id).map_err(StatusError::BadDeviceId)?;
    let status = report.status.as_deref().ok_or(StatusError::MissingStatus)?;
    if !STATUSES.contains(&status) {
        return Err(StatusError::BadStatus(status.chars().take(32).collect()));
    }
    {
        use simd_json::prelude::*;
        if !(report.result.is_null() || report.result.is_str()) {
            return Err(StatusError::NestedResult);
        }
    }
    let out = StatusOut {
        device_id,
        mac_address: report.mac_address.as_deref().unwrap_or("unknown"),
        serial_number: report.serial_number.as_deref().unwrap_or("unknown"),
        status,
        time_start: report.time_start.as_deref(),
        time_end: report.time_end.as_deref(),
        updated_at: now,
        result: &report.result,
    };
    let json = simd_json::to_vec(&out).unwrap_or_default();
    if json.len() > max_bytes {
        return Err(StatusError::TooLarge {
            size: json.len(),
            max: max_bytes,
        });
    }
    let frame: Arc<[u8]> = frame::encode_shared(OpCode::Data(Data::Text), &json);
    let device: Arc<str> = Arc::from(device_id);
    Ok(vec![
        Draft {
            topic: "devices".into(),
            content: Content::Frame(frame.clone()),
            device: Some(device.clone()),
        },
        Draft {
            topic: format!("device:{device_id}").into(),
            content: Content::Frame(frame),
            device: Some(device),
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(d: &Draft) -> &Arc<[u8]> {
        match &d.content {
            Content::Frame(frame) => frame,
            Content::Envelope(_) => panic!("a status is a flat frame"),
        }
    }

    fn text(frame: &[u8]) -> String {
        let start = if frame[1] & 0x7f == 126 { 4 } else { 2 };
        String::from_utf8(frame[start..].to_vec()).unwrap()
    }

    #[test]
    fn missing_fields_become_unknown_or_null() {
        let events = events("dev-1", &bare("online"), "T", 4096).unwrap();
        assert_eq!(
            text(f(&events[0])),
            r#"{"device_id":"dev-1","mac_address":"unknown","serial_number":"unknown","status":"online","time_start":null,"time_end":null,"updated_at":"T","result":null}"#
        );
        assert_eq!(&*events[1].topic, "device:dev-1");
        assert!(
            Arc::ptr_eq(f(&events[0]), f(&events[1])),
            "one frame for both topics"
        );
    }

    #[test]
    fn full_report_keeps_its_fields() {
        let mut body = br#"{"mac_address":"aa:bb","serial_number":"SN1","status":"success","time_start":"t0","time_end":"t1","result":"ok"}"#.to_vec();
        let report = parse(&mut body, 128).unwrap();
        let events = events("d", &report, "T", 4096).unwrap();
        assert!(text(f(&events[0])).contains(r#""mac_address":"aa:bb","serial_number":"SN1","status":"success","time_start":"t0","time_end":"t1","updated_at":"T","result":"ok""#));
    }

    #[test]
    fn only_flat_reports_are_accepted() {
        let mut b = br#"{"status":"fail","extra":"x"}"#.to_vec();
        assert_eq!(
            parse(&mut b, 8).unwrap_err(),
            StatusError::UnknownField("extra".into())
        );
        let mut b = br#"{"status":"fail","result":{"a":1}}"#.to_vec();
        let report = parse(&mut b, 8).unwrap();
        assert_eq!(
            events("d", &report, "T", 4096).unwrap_err(),
            StatusError::NestedResult
        );
    }

    #[test]
    fn presence_keeps_the_last_reported_identity() {
        let mut body = br#"{"mac_address":"aa:bb","serial_number":"SN1","status":"success"}"#.to_vec();
        let last = events("d", &parse(&mut body, 8).unwrap(), "T", 4096).unwrap();
        let offline = events("d", &presence("offline", Some(f(&last[0]))), "T2", 4096).unwrap();
        assert!(text(f(&offline[0]))
            .contains(r#""mac_address":"aa:bb","serial_number":"SN1","status":"offline""#));
        let fresh = events("d", &presence("online", None), "T", 4096).unwrap();
        assert!(text(f(&fresh[0])).contains(r#""mac_address":"unknown""#));
    }

    #[test]
    fn unknown_or_missing_status_is_refused() {
        assert_eq!(
            events("d", &bare("exploded"), "T", 4096).unwrap_err(),
            StatusError::BadStatus("exploded".into())
        );
        assert_eq!(
            events("d", &StatusIn::default(), "T", 4096).unwrap_err(),
            StatusError::MissingStatus
        );
        assert!(matches!(
            events("a b", &bare("online"), "T", 4096),
            Err(StatusError::BadDeviceId(_))
        ));
        assert!(matches!(
            parse(&mut b"nope".to_vec(), 128),
            Err(StatusError::BadJson(_))
        ));
    }
}
