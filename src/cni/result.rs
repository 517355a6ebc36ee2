//! What the plugin writes to stdout: CNI error objects, the ADD result and
//! the VERSION answer, as the CNI spec words them for each `cniVersion`.

use serde_json::{json, Map, Value};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    /// The IPv4 /32 (`None` on an IPv6-only network).
    pub address: Option<Ipv4Addr>,
    pub gateway: Ipv4Addr,
    /// The IPv6 /128 and its gateway, the VM's IPv6 overlay address (`None`
    /// when IPv4-only).
    pub ipv6: Option<(Ipv6Addr, Ipv6Addr)>,
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
        let entry = |address: String, gateway: String, family: &str| {
            let mut ip = json!({
                "address": address,
                "gateway": gateway,
                "interface": 1,
            });
            if !at_least(version, "1.0.0") {
                ip["version"] = json!(family);
            }
            ip
        };
        let mut ips = Vec::new();
        let mut routes = Vec::new();
        if let Some(a) = self.address {
            ips.push(entry(format!("{a}/32"), self.gateway.to_string(), "4"));
            routes.push(json!({ "dst": "0.0.0.0/0", "gw": self.gateway.to_string() }));
        }
        if let Some((a, gw)) = self.ipv6 {
            ips.push(entry(format!("{a}/128"), gw.to_string(), "6"));
            routes.push(json!({ "dst": "::/0", "gw": gw.to_string() }));
        }
        json!({
            "cniVersion": version,
            "interfaces": [iface(&self.host_veth, &self.host_mac), container],
            "ips": ips,
            "routes": routes,
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

/// The interface (`name`, `sandbox`) a prevResult assigns `address` to, when
/// its `ips` entry names one by index; for CHECK.
pub fn prev_result_interface_of(prev: &Value, address: &str) -> Option<(String, Option<String>)> {
    let ip = prev
        .get("ips")?
        .as_array()?
        .iter()
        .find(|ip| ip.get("address").and_then(Value::as_str) == Some(address))?;
    let index = usize::try_from(ip.get("interface")?.as_u64()?).ok()?;
    let iface = prev.get("interfaces")?.as_array()?.get(index)?;
    let name = iface.get("name")?.as_str()?.to_owned();
    let sandbox = iface
        .get("sandbox")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some((name, sandbox))
}

/// Checks the shape of a `prevResult` (a CNI result: `interfaces`, `ips`,
/// `routes`, `dns`) the way the plugins chained after this one read it.
/// Anything malformed is error 7 naming the member; ADD and CHECK refuse it,
/// DEL cleans up regardless (see [`crate::cni`]).
pub fn check_prev_result(prev: &Value) -> Result<(), CniError> {
    use super::config::kind;
    fn bad(msg: String) -> CniError {
        CniError::new(code::INVALID_CONFIG, format!("\"prevResult\": {msg}"))
    }
    fn array<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], CniError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(other) => Err(bad(format!(
                "\"{key}\" must be an array, not {}",
                kind(other)
            ))),
        }
    }
    fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, CniError> {
        v.as_object()
            .ok_or_else(|| bad(format!("{what} must be an object, not {}", kind(v))))
    }
    fn string<'a>(
        obj: &'a Map<String, Value>,
        key: &str,
        what: &str,
        needed: bool,
    ) -> Result<Option<&'a str>, CniError> {
        match obj.get(key) {
            None | Some(Value::Null) if !needed => Ok(None),
            None | Some(Value::Null) => Err(bad(format!("{what} lacks \"{key}\""))),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(bad(format!(
                "{what}: \"{key}\" must be a string, not {}",
                kind(other)
            ))),
        }
    }
    fn ip(obj: &Map<String, Value>, key: &str, what: &str) -> Result<(), CniError> {
        if let Some(s) = string(obj, key, what, false)? {
            s.parse::<IpAddr>()
                .map_err(|_| bad(format!("{what}: \"{key}\" {s:?} is not an IP address")))?;
        }
        Ok(())
    }
    fn cidr(obj: &Map<String, Value>, key: &str, what: &str) -> Result<(), CniError> {
        let s = string(obj, key, what, true)?.unwrap_or_default();
        let ok = s.split_once('/').is_some_and(|(a, len)| {
            let max = match a.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return false,
            };
            len.parse::<u8>().is_ok_and(|l| l <= max) && !len.starts_with('+')
        });
        if ok {
            Ok(())
        } else {
            Err(bad(format!(
                "{what}: \"{key}\" {s:?} is not an address with a prefix length (A/N)"
            )))
        }
    }

    let obj = object(prev, "it")?;
    string(obj, "cniVersion", "it", false)?;
    let interfaces = array(obj, "interfaces")?;
    for (i, it) in interfaces.iter().enumerate() {
        let what = format!("interfaces[{i}]");
        let o = object(it, &what)?;
        if string(o, "name", &what, true)?.is_some_and(str::is_empty) {
            return Err(bad(format!("{what}: \"name\" is empty")));
        }
        string(o, "mac", &what, false)?;
        string(o, "sandbox", &what, false)?;
    }
    for (i, it) in array(obj, "ips")?.iter().enumerate() {
        let what = format!("ips[{i}]");
        let o = object(it, &what)?;
        cidr(o, "address", &what)?;
        ip(o, "gateway", &what)?;
        match o.get("interface") {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64() {
                Some(n) if (n as usize) < interfaces.len() => {}
                _ => {
                    return Err(bad(format!(
                    "{what}: \"interface\" {v} is not an index into \"interfaces\" ({} entries)",
                    interfaces.len()
                )))
                }
            },
        }
    }
    for (i, it) in array(obj, "routes")?.iter().enumerate() {
        let what = format!("routes[{i}]");
        let o = object(it, &what)?;
        cidr(o, "dst", &what)?;
        ip(o, "gw", &what)?;
    }
    match obj.get("dns") {
        None | Some(Value::Null) => {}
        Some(d) => {
            let o = object(d, "\"dns\"")?;
            for key in ["nameservers", "search", "options"] {
                for (i, v) in array(o, key)?.iter().enumerate() {
                    if !v.is_string() {
                        return Err(bad(format!(
                            "dns.{key}[{i}] must be a string, not {}",
                            kind(v)
                        )));
                    }
                }
            }
            string(o, "domain", "\"dns\"", false)?;
        }
    }
    Ok(())
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
            address: Some("241.2.0.4".parse().unwrap()),
            gateway: "241.2.0.1".parse().unwrap(),
            ipv6: None,
        }
    }

    fn dual() -> AddResult {
        AddResult {
            ipv6: Some((
                "fd6d:6573:6866:0:c0a8:1020:0:4".parse().unwrap(),
                "fd6d:6573:6866:0:c0a8:1020:0:1".parse().unwrap(),
            )),
            ..sample()
        }
    }

    #[test]
    fn add_result_dual_stack_byte_vectors() {
        assert_eq!(
            sample().to_json("1.0.0"),
            r#"{"cniVersion":"1.0.0","dns":{},"interfaces":[{"mac":"02:00:00:00:00:01","name":"mfc3"},{"mac":"02:00:00:00:00:02","name":"eth0","sandbox":"/run/netns/netns-1"}],"ips":[{"address":"241.2.0.4/32","gateway":"241.2.0.1","interface":1}],"routes":[{"dst":"0.0.0.0/0","gw":"241.2.0.1"}]}"#
        );
        assert_eq!(
            dual().to_json("1.0.0"),
            r#"{"cniVersion":"1.0.0","dns":{},"interfaces":[{"mac":"02:00:00:00:00:01","name":"mfc3"},{"mac":"02:00:00:00:00:02","name":"eth0","sandbox":"/run/netns/netns-1"}],"ips":[{"address":"241.2.0.4/32","gateway":"241.2.0.1","interface":1},{"address":"fd6d:6573:6866:0:c0a8:1020:0:4/128","gateway":"fd6d:6573:6866:0:c0a8:1020:0:1","interface":1}],"routes":[{"dst":"0.0.0.0/0","gw":"241.2.0.1"},{"dst":"::/0","gw":"fd6d:6573:6866:0:c0a8:1020:0:1"}]}"#
        );
        assert_eq!(
            dual().to_json("0.4.0"),
            r#"{"cniVersion":"0.4.0","dns":{},"interfaces":[{"mac":"02:00:00:00:00:01","name":"mfc3"},{"mac":"02:00:00:00:00:02","name":"eth0","sandbox":"/run/netns/netns-1"}],"ips":[{"address":"241.2.0.4/32","gateway":"241.2.0.1","interface":1,"version":"4"},{"address":"fd6d:6573:6866:0:c0a8:1020:0:4/128","gateway":"fd6d:6573:6866:0:c0a8:1020:0:1","interface":1,"version":"6"}],"routes":[{"dst":"0.0.0.0/0","gw":"241.2.0.1"},{"dst":"::/0","gw":"fd6d:6573:6866:0:c0a8:1020:0:1"}]}"#
        );
        let v6only = AddResult {
            address: None,
            ..dual()
        };
        assert_eq!(
            v6only.to_json("1.1.0"),
            r#"{"cniVersion":"1.1.0","dns":{},"interfaces":[{"mac":"02:00:00:00:00:01","name":"mfc3"},{"mac":"02:00:00:00:00:02","name":"eth0","sandbox":"/run/netns/netns-1"}],"ips":[{"address":"fd6d:6573:6866:0:c0a8:1020:0:4/128","gateway":"fd6d:6573:6866:0:c0a8:1020:0:1","interface":1}],"routes":[{"dst":"::/0","gw":"fd6d:6573:6866:0:c0a8:1020:0:1"}]}"#
        );
        // what the chained plugins and CHECK read back
        let v = dual().to_value("1.0.0");
        assert!(check_prev_result(&v).is_ok());
        assert_eq!(
            prev_result_interface_of(&v, "fd6d:6573:6866:0:c0a8:1020:0:4/128"),
            Some(("eth0".to_string(), Some("/run/netns/netns-1".to_string())))
        );
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
        assert_eq!(
            prev_result_interface_of(&v, "241.2.0.4/32"),
            Some(("eth0".to_string(), Some("/run/netns/netns-1".to_string())))
        );
        assert_eq!(prev_result_interface_of(&v, "241.2.0.5/32"), None);
        assert_eq!(
            prev_result_interface_of(&json!({"ips": [{"address": "a", "interface": 9}]}), "a"),
            None
        );
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

    #[test]
    fn prev_results_are_checked() {
        let good = sample().to_value("1.0.0");
        assert_eq!(check_prev_result(&good), Ok(()));
        // what bandwidth appends (an ifb interface without sandbox), DNS filled
        let mut chained = good.clone();
        chained["interfaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "bwp1234", "mac": "02:00:00:00:00:03"}));
        chained["dns"] = json!({"nameservers": ["10.0.0.53"], "search": ["svc"], "domain": "x"});
        assert_eq!(check_prev_result(&chained), Ok(()));
        assert_eq!(check_prev_result(&json!({})), Ok(()));
        let cases: &[(Value, &str)] = &[
            (json!([1]), "must be an object"),
            (json!("x"), "must be an object"),
            (json!({"cniVersion": 1}), "\"cniVersion\" must be a string"),
            (json!({"interfaces": {}}), "\"interfaces\" must be an array"),
            (
                json!({"interfaces": [3]}),
                "interfaces[0] must be an object",
            ),
            (json!({"interfaces": [{}]}), "interfaces[0] lacks \"name\""),
            (json!({"interfaces": [{"name": ""}]}), "\"name\" is empty"),
            (
                json!({"interfaces": [{"name": "a", "sandbox": 1}]}),
                "\"sandbox\" must be a string",
            ),
            (json!({"ips": "1.2.3.4/32"}), "\"ips\" must be an array"),
            (json!({"ips": [{}]}), "ips[0] lacks \"address\""),
            (json!({"ips": [{"address": "1.2.3.4"}]}), "prefix length"),
            (json!({"ips": [{"address": "1.2.3.4/33"}]}), "prefix length"),
            (json!({"ips": [{"address": "x/8"}]}), "prefix length"),
            (
                json!({"ips": [{"address": "1.2.3.4/32", "gateway": "y"}]}),
                "not an IP address",
            ),
            (
                json!({"ips": [{"address": "1.2.3.4/32", "interface": 0}]}),
                "not an index",
            ),
            (
                json!({"interfaces": [{"name": "a"}], "ips": [{"address": "1.2.3.4/32", "interface": -1}]}),
                "not an index",
            ),
            (
                json!({"routes": [{"gw": "1.2.3.4"}]}),
                "routes[0] lacks \"dst\"",
            ),
            (
                json!({"routes": [{"dst": "0.0.0.0/0", "gw": 5}]}),
                "\"gw\" must be a string",
            ),
            (json!({"dns": []}), "\"dns\" must be an object"),
            (json!({"dns": {"nameservers": [1]}}), "dns.nameservers[0]"),
        ];
        for (prev, want) in cases {
            let e = check_prev_result(prev).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{prev}");
            assert!(e.msg.starts_with("\"prevResult\": "), "{}", e.msg);
            assert!(e.msg.contains(want), "{prev}: {}", e.msg);
        }
    }
}
