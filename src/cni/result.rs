//! What the plugin writes to stdout: CNI error objects, the ADD result and
//! the VERSION answer, as the CNI spec words them for each `cniVersion`.

use serde_json::{json, Value};
use std::net::Ipv4Addr;

/// The versions this plugin speaks; results differ only in `ips[].version`
/// (present before 1.0.0). CHECK needs 0.4.0, STATUS and GC 1.1.0.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The newest supported version: used for VERSION answers and errors when the
/// configuration's own version is unknown.
pub const LATEST: &str = "1.1.0";

/// The spec's well-known error codes, and this plugin's own (100 and up).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// Wiring the namespace failed or was refused (netlink, number in use).
    pub const WIRING: u32 = 100;
    /// No free container number left in this VM's block.
    pub const BLOCK_FULL: u32 = 101;
    /// CHECK found the container's networking differs from what ADD set up.
    pub const CHECK_MISMATCH: u32 = 102;
}

/// A CNI error object (`{"cniVersion","code","msg","details"}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    pub fn to_json(&self, version: &str) -> String {
        json!({
            "cniVersion": version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
        .to_string()
    }
}

/// True when `v` is a supported version at or above `min` (both "X.Y.Z").
pub fn at_least(v: &str, min: &str) -> bool {
    fn parse(s: &str) -> Option<(u32, u32, u32)> {
        let mut it = s.split('.').map(|p| p.parse::<u32>().ok());
        let r = (it.next()??, it.next()??, it.next()??);
        it.next().is_none().then_some(r)
    }
    matches!((parse(v), parse(min)), (Some(a), Some(b)) if a >= b)
}

/// The VERSION answer: the asked-for version when supported, else the newest.
pub fn version_json(asked: Option<&str>) -> String {
    let version = asked
        .filter(|v| SUPPORTED_VERSIONS.contains(v))
        .unwrap_or(LATEST);
    json!({ "cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS }).to_string()
}

/// What ADD reports: the VM-side veth, the interface in the container and
/// its /32, with the VM's overlay address as gateway and default route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddResult {
    pub host_veth: String,
    pub host_mac: Option<String>,
    pub ifname: String,
    pub mac: Option<String>,
    /// The container's network namespace path (CNI_NETNS).
    pub sandbox: String,
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

impl AddResult {
    pub fn to_value(&self, version: &str) -> Value {
        let iface = |name: &str, mac: &Option<String>| {
            let mut o = json!({ "name": name });
            if let Some(m) = mac {
                o["mac"] = json!(m);
            }
            o
        };
        let mut container = iface(&self.ifname, &self.mac);
        container["sandbox"] = json!(self.sandbox);
        let mut ip = json!({
            "address": format!("{}/32", self.address),
            "gateway": self.gateway.to_string(),
            "interface": 1,
        });
        if !at_least(version, "1.0.0") {
            ip["version"] = json!("4");
        }
        json!({
            "cniVersion": version,
            "interfaces": [iface(&self.host_veth, &self.host_mac), container],
            "ips": [ip],
            "routes": [{ "dst": "0.0.0.0/0", "gw": self.gateway.to_string() }],
            "dns": {},
        })
    }

    pub fn to_json(&self, version: &str) -> String {
        self.to_value(version).to_string()
    }
}

/// The `address` values (`A/32`) of a prevResult's `ips`, for CHECK.
pub fn prev_result_addresses(prev: &Value) -> Vec<String> {
    prev.get("ips")
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .filter_map(|ip| ip.get("address").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AddResult {
        AddResult {
            host_veth: "mfc3".into(),
            host_mac: Some("02:00:00:00:00:01".into()),
            ifname: "eth0".into(),
            mac: Some("02:00:00:00:00:02".into()),
            sandbox: "/run/netns/netns-1".into(),
            address: "241.2.0.4".parse().unwrap(),
            gateway: "241.2.0.1".parse().unwrap(),
        }
    }

    #[test]
    fn add_result_1_0_0() {
        let v: Value = serde_json::from_str(&sample().to_json("1.0.0")).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["interfaces"][0]["name"], "mfc3");
        assert!(v["interfaces"][0].get("sandbox").is_none());
        assert_eq!(v["interfaces"][1]["name"], "eth0");
        assert_eq!(v["interfaces"][1]["mac"], "02:00:00:00:00:02");
        assert_eq!(v["interfaces"][1]["sandbox"], "/run/netns/netns-1");
        assert_eq!(v["ips"][0]["address"], "241.2.0.4/32");
        assert_eq!(v["ips"][0]["gateway"], "241.2.0.1");
        assert_eq!(v["ips"][0]["interface"], 1);
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(v["routes"][0]["gw"], "241.2.0.1");
        assert_eq!(v["dns"], json!({}));
        assert_eq!(prev_result_addresses(&v), vec!["241.2.0.4/32".to_string()]);
    }

    #[test]
    fn add_result_0_4_0_has_ip_versions() {
        let v = sample().to_value("0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
        let mut no_mac = sample();
        no_mac.mac = None;
        assert!(no_mac.to_value("1.1.0")["interfaces"][1]
            .get("mac")
            .is_none());
    }

    #[test]
    fn error_objects() {
        let e = CniError::new(code::INVALID_CONFIG, "bad").with_details("more");
        let v: Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion": "1.0.0", "code": 7, "msg": "bad", "details": "more"})
        );
    }

    #[test]
    fn versions() {
        assert!(at_least("1.1.0", "1.0.0"));
        assert!(at_least("0.4.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(!at_least("1.0", "0.4.0"));
        assert!(!at_least("x", "0.4.0"));
        let v: Value = serde_json::from_str(&version_json(Some("1.0.0"))).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 5);
        let v: Value = serde_json::from_str(&version_json(Some("9.9.9"))).unwrap();
        assert_eq!(v["cniVersion"], LATEST);
        assert!(prev_result_addresses(&json!({"ips": 3})).is_empty());
    }
}
