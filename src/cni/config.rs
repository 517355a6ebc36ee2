//! The network configuration a runtime pipes to the plugin (JSON on stdin),
//! checked key by key into a [`NetConf`]; every refusal names the key and
//! says what to write instead.
//!
//! Keys: `cniVersion`, `name`, `type` (standard); `layout` ("wide" or
//! "classic") or `overlay` + `underlay` (CIDRs); `local` (this VM's underlay
//! address, default: detected as `meshfwd` does); `mtu` (default: the TUN's);
//! `tun` (default "tun0"); `dataDir` (IPAM records, default
//! /var/lib/meshfwd-cni; the network name is appended); `overlay6` (the
//! IPv6 mesh prefix, a ULA /64, default fd6d:6573:6866::/64, as `meshfwd
//! addr --overlay6`; giving it makes IPv6 required), `ipv4Only` / `ipv6Only`
//! (booleans; default: dual-stack, IPv4 only with a warning when IPv6 is
//! disabled in the container or on the VM). Runtime-supplied:
//! `prevResult`, `cni.dev/valid-attachments` (GC). Unknown keys are ignored,
//! as the spec asks; an `ipam` section is refused (addresses come from the
//! plugin's own IPAM).

use super::result::{code, CniError, SUPPORTED_VERSIONS};
use crate::layout::{Cidr, Layout, Preset};
use crate::layout6::Layout6;
use crate::netns::check_ifname;
use crate::netns::Families;
use serde_json::{Map, Value};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Where IPAM records live unless `dataDir` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/meshfwd-cni";
/// Largest configuration accepted on stdin.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// A validated network configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub layout: Layout,
    /// "wide", "classic" or "custom", for messages.
    pub layout_name: &'static str,
    pub local: Option<Ipv4Addr>,
    pub mtu: Option<u32>,
    pub tun: String,
    /// The IPv6 mesh prefix (`overlay6`).
    pub layout6: Layout6,
    /// `ipv4Only` / `ipv6Only`, else dual-stack.
    pub families: Families,
    /// `overlay6` or `ipv6Only` was given: no IPv6 is an error, not a fallback.
    pub ipv6_required: bool,
    /// The IPAM directory of this network: `dataDir` + `/` + `name`.
    pub data_dir: PathBuf,
    pub prev_result: Option<Value>,
    /// GC: the attachments (container id, ifname) that are still valid.
    pub valid_attachments: Option<Vec<(String, String)>>,
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg)
}

fn string_key<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(format!("\"{key}\" must be a string, not {other}"))),
    }
}

/// Network names as the spec allows them (they also name the IPAM directory).
pub fn check_network_name(name: &str) -> Result<(), CniError> {
    let ok = name.len() <= 255
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "\"name\" {name:?} is not a valid network name (letters, digits, '_', '.', '-'; starting with a letter or digit)"
        )))
    }
}

/// The `cniVersion` of a configuration, checked against the supported list.
pub fn version_of(obj: &Map<String, Value>) -> Result<String, CniError> {
    let v = string_key(obj, "cniVersion")?.ok_or_else(|| {
        invalid("\"cniVersion\" is missing; use \"1.0.0\" (supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0)")
    })?;
    if !SUPPORTED_VERSIONS.contains(&v) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {v:?} is not supported by meshfwd-cni; use one of {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    Ok(v.to_owned())
}

/// Decodes stdin: anything but a JSON object is a decode failure (code 6).
pub fn decode(stdin: &[u8]) -> Result<Map<String, Value>, CniError> {
    if stdin.len() > MAX_CONFIG_BYTES {
        return Err(CniError::new(
            code::DECODE,
            format!("network configuration on stdin is larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    match serde_json::from_slice::<Value>(stdin) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(CniError::new(
            code::DECODE,
            format!(
                "network configuration on stdin must be a JSON object, got {}",
                kind(&other)
            ),
        )),
        Err(e) => Err(CniError::new(
            code::DECODE,
            format!("network configuration on stdin is not valid JSON: {e}"),
        )),
    }
}

/// "a string", "an array", …: what a JSON value is, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        NetConf::from_map(&decode(stdin)?)
    }

    pub fn from_map(obj: &Map<String, Value>) -> Result<NetConf, CniError> {
        let cni_version = version_of(obj)?;
        let name = string_key(obj, "name")?
            .ok_or_else(|| invalid("\"name\" (the network name) is missing"))?
            .to_owned();
        check_network_name(&name)?;
        if obj.get("ipam").is_some_and(|v| !v.is_null()) {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "\"ipam\" is not supported: meshfwd-cni allocates addresses itself, inside this VM's block; remove the \"ipam\" section",
            ));
        }

        let preset = string_key(obj, "layout")?;
        let overlay = string_key(obj, "overlay")?;
        let underlay = string_key(obj, "underlay")?;
        let (layout, layout_name) = match (preset, overlay, underlay) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(invalid(
                    "give either \"layout\" or \"overlay\" + \"underlay\", not both",
                ))
            }
            (_, Some(o), Some(u)) => {
                let o: Cidr = o.parse().map_err(|e| invalid(format!("\"overlay\": {e}")))?;
                let u: Cidr = u
                    .parse()
                    .map_err(|e| invalid(format!("\"underlay\": {e}")))?;
                let l = Layout::new(o, u).map_err(|e| invalid(format!("layout: {e}")))?;
                (l, "custom")
            }
            (_, Some(_), None) | (_, None, Some(_)) => {
                return Err(invalid(
                    "\"overlay\" and \"underlay\" go together; give both (CIDRs, as meshfwd --overlay/--underlay)",
                ))
            }
            (None | Some("wide"), None, None) => (Layout::preset(Preset::Wide), "wide"),
            (Some("classic"), None, None) => (Layout::preset(Preset::Classic), "classic"),
            (Some(other), None, None) => {
                return Err(invalid(format!(
                    "\"layout\" {other:?} is unknown; use \"wide\" or \"classic\", or \"overlay\" + \"underlay\""
                )))
            }
        };

        let local = match string_key(obj, "local")? {
            None => None,
            Some(s) => {
                let a: Ipv4Addr = s
                    .parse()
                    .map_err(|_| invalid(format!("\"local\" {s:?} is not an IPv4 address")))?;
                layout
                    .check_local(a)
                    .map_err(|e| invalid(format!("\"local\": {e}")))?;
                Some(a)
            }
        };

        let mtu = match obj.get("mtu") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(m @ 68..=65535) => Some(m as u32),
                _ => {
                    return Err(invalid(format!(
                        "\"mtu\" {v} is out of range; give an integer 68-65535 or leave it out (default: the TUN's MTU)"
                    )))
                }
            },
        };

        let tun = string_key(obj, "tun")?.unwrap_or("tun0").to_owned();
        check_ifname(&tun).map_err(|_| {
            invalid(format!(
                "\"tun\" {tun:?} is not a valid interface name (meshfwd's TUN, e.g. \"tun0\")"
            ))
        })?;

        let overlay6 = string_key(obj, "overlay6")?;
        let layout6 = match overlay6 {
            None => Layout6::default(),
            Some(p) => p.parse::<Layout6>().map_err(|e| {
                invalid(format!(
                    "\"overlay6\": {e}; or leave it out (default {})",
                    crate::layout6::DEFAULT_OVERLAY6
                ))
            })?,
        };
        let flag = |key: &str| match obj.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(invalid(format!(
                "\"{key}\" must be true or false, not {}",
                kind(other)
            ))),
        };
        let families = match (flag("ipv4Only")?, flag("ipv6Only")?) {
            (true, true) => {
                return Err(invalid(
                    "\"ipv4Only\" and \"ipv6Only\" exclude each other; leave both out for dual-stack",
                ))
            }
            (true, false) if overlay6.is_some() => {
                return Err(invalid(
                    "\"overlay6\" with \"ipv4Only\": an IPv4-only network has no IPv6 prefix; remove one of them",
                ))
            }
            (true, false) => Families::Ipv4Only,
            (false, true) => Families::Ipv6Only,
            (false, false) => Families::Dual,
        };
        let ipv6_required = families == Families::Ipv6Only || overlay6.is_some();

        let root = match string_key(obj, "dataDir")? {
            None => PathBuf::from(DEFAULT_DATA_DIR),
            Some(d) if d.starts_with('/') && !d.contains('\0') => PathBuf::from(d),
            Some(d) => {
                return Err(invalid(format!(
                    "\"dataDir\" {d:?} must be an absolute path"
                )))
            }
        };

        let prev_result = obj.get("prevResult").filter(|v| !v.is_null()).cloned();
        let valid_attachments = match obj.get("cni.dev/valid-attachments") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for it in items {
                    let id = it.get("containerID").and_then(Value::as_str);
                    let ifname = it.get("ifname").and_then(Value::as_str);
                    match (id, ifname) {
                        (Some(id), Some(ifname)) => out.push((id.to_owned(), ifname.to_owned())),
                        _ => {
                            return Err(invalid(format!(
                                "\"cni.dev/valid-attachments\": {it} lacks \"containerID\" or \"ifname\""
                            )))
                        }
                    }
                }
                Some(out)
            }
            Some(other) => {
                return Err(invalid(format!(
                    "\"cni.dev/valid-attachments\" must be an array, not {}",
                    kind(other)
                )))
            }
        };

        Ok(NetConf {
            cni_version,
            data_dir: root.join(&name),
            name,
            layout,
            layout_name,
            local,
            mtu,
            tun,
            layout6,
            families,
            ipv6_required,
            prev_result,
            valid_attachments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConf, CniError> {
        NetConf::parse(s.as_bytes())
    }

    #[test]
    fn minimal_config_uses_the_defaults() {
        let c = parse(r#"{"cniVersion":"1.0.0","name":"mesh","type":"meshfwd-cni"}"#).unwrap();
        assert_eq!(c.layout, Layout::wide());
        assert_eq!(c.layout_name, "wide");
        assert_eq!(c.tun, "tun0");
        assert_eq!(c.mtu, None);
        assert_eq!(c.local, None);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/meshfwd-cni/mesh"));
        assert!(c.prev_result.is_none() && c.valid_attachments.is_none());
    }

    #[test]
    fn full_config() {
        let c = parse(
            r#"{"cniVersion":"1.1.0","name":"m-1.x","type":"meshfwd-cni","overlay":"10.0.0.0/8",
                "underlay":"192.168.0.0/16","local":"192.168.16.32","mtu":1400,"tun":"mesh0",
                "dataDir":"/tmp/x","prevResult":{"ips":[]},"unknownKey":[1,2],
                "cni.dev/valid-attachments":[{"containerID":"abc","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(c.layout, Layout::classic());
        assert_eq!(c.layout_name, "custom");
        assert_eq!(c.local, Some("192.168.16.32".parse().unwrap()));
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.tun, "mesh0");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x/m-1.x"));
        assert!(c.prev_result.is_some());
        assert_eq!(
            c.valid_attachments,
            Some(vec![("abc".to_string(), "eth0".to_string())])
        );
        let c = parse(r#"{"cniVersion":"0.4.0","name":"m","layout":"classic"}"#).unwrap();
        assert_eq!(c.layout, Layout::classic());
    }

    #[test]
    fn ipv6_keys() {
        let c = parse(r#"{"cniVersion":"1.0.0","name":"m"}"#).unwrap();
        assert_eq!(
            (c.families, c.ipv6_required, c.layout6),
            (Families::Dual, false, Layout6::default())
        );
        let c = parse(r#"{"cniVersion":"1.0.0","name":"m","overlay6":"fd12:3456:789a:1::/64"}"#)
            .unwrap();
        assert_eq!((c.families, c.ipv6_required), (Families::Dual, true));
        assert_eq!(c.layout6.prefix().to_string(), "fd12:3456:789a:1::/64");
        let c =
            parse(r#"{"cniVersion":"1.0.0","name":"m","ipv6Only":true,"ipv4Only":false}"#).unwrap();
        assert_eq!((c.families, c.ipv6_required), (Families::Ipv6Only, true));
        let c = parse(r#"{"cniVersion":"1.0.0","name":"m","ipv4Only":true}"#).unwrap();
        assert_eq!((c.families, c.ipv6_required), (Families::Ipv4Only, false));
        for (conf, what) in [
            (r#""overlay6":"fd00::/48""#, "must be a /64"),
            (r#""overlay6":"fc00::/64""#, "fd00::/8"),
            (r#""overlay6":"2001:db8::/64""#, "fd00::/8"),
            (r#""overlay6":"10.0.0.0/8""#, "\"overlay6\""),
            (r#""overlay6":64"#, "must be a string"),
            (r#""ipv6Only":"yes""#, "must be true or false"),
            (r#""ipv4Only":true,"ipv6Only":true"#, "exclude each other"),
            (
                r#""ipv4Only":true,"overlay6":"fd00::/64""#,
                "remove one of them",
            ),
        ] {
            let e = parse(&format!(r#"{{"cniVersion":"1.0.0","name":"m",{conf}}}"#)).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{conf}: {}", e.msg);
            assert!(e.msg.contains(what), "{conf}: {}", e.msg);
        }
    }

    #[test]
    fn refusals_carry_codes_and_say_what_to_fix() {
        let cases: &[(&str, u32, &str)] = &[
            ("", code::DECODE, "not valid JSON"),
            ("[1]", code::DECODE, "must be a JSON object"),
            ("{\"cniVersion\":", code::DECODE, "not valid JSON"),
            (
                r#"{"name":"m"}"#,
                code::INVALID_CONFIG,
                "\"cniVersion\" is missing",
            ),
            (
                r#"{"cniVersion":"2.0.0","name":"m"}"#,
                code::INCOMPATIBLE_VERSION,
                "use one of",
            ),
            (
                r#"{"cniVersion":1,"name":"m"}"#,
                code::INVALID_CONFIG,
                "must be a string",
            ),
            (
                r#"{"cniVersion":"1.0.0"}"#,
                code::INVALID_CONFIG,
                "\"name\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"../x"}"#,
                code::INVALID_CONFIG,
                "network name",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"m","ipam":{"type":"host-local"}}"#,
                code::UNSUPPORTED_FIELD,
                "remove the \"ipam\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"m","layout":"big"}"#,
                code::INVALID_CONFIG,
                "\"wide\" or \"classic\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"m","layout":"wide","overlay":"10.0.0.0/8"}"#,
                code::INVALID_CONFIG,
                "not both",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"m","overlay":"10.0.0.0/8"}"#,
                code::INVALID_CONFIG,
                "give both",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"m","overlay":"10.0.0.0/16","underlay":"192.168.0.0/16"}"#,
                code::INVALID_CONFIG,
                "host bits",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"m","overlay":"10.1.0.0/8","underlay":"192.168.0.0/16"}"#,
                code::INVALID_CONFIG,
                "\"overlay\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"m","local":"10.0.0.1"}"#,
                code::INVALID_CONFIG,
                "outside the underlay",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"m","local":"x"}"#,
                code::INVALID_CONFIG,
                "not an IPv4",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"m","mtu":20}"#,
                code::INVALID_CONFIG,
                "68-65535",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"m","mtu":"1400"}"#,
                code::INVALID_CONFIG,
                "68-65535",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"m","mtu":1e3}"#,
                code::INVALID_CONFIG,
                "68-65535",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"m","tun":"a/b"}"#,
                code::INVALID_CONFIG,
                "\"tun\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"m","dataDir":"rel"}"#,
                code::INVALID_CONFIG,
                "absolute",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"m","cni.dev/valid-attachments":[{}]}"#,
                code::INVALID_CONFIG,
                "containerID",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"m","cni.dev/valid-attachments":{}}"#,
                code::INVALID_CONFIG,
                "must be an array",
            ),
        ];
        for (input, want_code, want_msg) in cases {
            let e = parse(input).unwrap_err();
            assert_eq!(e.code, *want_code, "{input}: {e:?}");
            assert!(e.msg.contains(want_msg), "{input}: {}", e.msg);
        }
        let big = vec![b' '; MAX_CONFIG_BYTES + 1];
        assert_eq!(NetConf::parse(&big).unwrap_err().code, code::DECODE);
    }

    /// The examples in docs/cni/ are valid: each plugin entry of a conflist,
    /// with the list's name and cniVersion, as a runtime hands it over.
    #[test]
    fn documented_examples_parse() {
        for (file, text) in [
            (
                "meshfwd.conflist",
                include_str!("../../docs/cni/meshfwd.conflist"),
            ),
            (
                "meshfwd-custom.conflist",
                include_str!("../../docs/cni/meshfwd-custom.conflist"),
            ),
            (
                "meshfwd-chained.conflist",
                include_str!("../../docs/cni/meshfwd-chained.conflist"),
            ),
            (
                "meshfwd-dualstack.conflist",
                include_str!("../../docs/cni/meshfwd-dualstack.conflist"),
            ),
        ] {
            let list: Value = serde_json::from_str(text).expect(file);
            let plugins = list["plugins"].as_array().expect(file);
            for p in plugins.iter().filter(|p| p["type"] == "meshfwd-cni") {
                let mut conf = p.as_object().unwrap().clone();
                conf.insert("name".into(), list["name"].clone());
                conf.insert("cniVersion".into(), list["cniVersion"].clone());
                let c = NetConf::from_map(&conf).unwrap_or_else(|e| panic!("{file}: {e:?}"));
                assert_eq!(c.name, "meshfwd");
            }
        }
    }

    fn arb_scalar() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "[a-z0-9./:-]{0,20}".prop_map(Value::from),
            prop_oneof![
                Just("1.0.0"),
                Just("1.1.0"),
                Just("0.4.0"),
                Just("wide"),
                Just("classic"),
                Just("10.0.0.0/8"),
                Just("192.168.0.0/16"),
                Just("240.0.0.0/4"),
                Just("192.168.1.2"),
                Just("/tmp/x"),
                Just("tun0"),
                Just("mesh")
            ]
            .prop_map(Value::from),
            Just(serde_json::json!([{"containerID": "a", "ifname": "eth0"}, {}])),
            Just(serde_json::json!({"type": "host-local"})),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// Any bytes: a config or an error with a spec code, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            if let Err(e) = NetConf::parse(&bytes) {
                proptest::prop_assert!([1, 2, 6, 7].contains(&e.code), "{e:?}");
            }
        }

        /// Objects made of the known keys with arbitrary values.
        #[test]
        fn arbitrary_key_values_never_panic(
            entries in proptest::collection::vec(
                (proptest::sample::select(vec![
                    "cniVersion", "name", "type", "layout", "overlay", "underlay", "local",
                    "mtu", "tun", "dataDir", "ipam", "prevResult", "cni.dev/valid-attachments",
                ]), arb_scalar()),
                0..12,
            )
        ) {
            let obj: Map<String, Value> =
                entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            match NetConf::from_map(&obj) {
                Ok(c) => {
                    proptest::prop_assert!(c.data_dir.is_absolute());
                    proptest::prop_assert!(c.mtu.map_or(true, |m| (68..=65535).contains(&m)));
                }
                Err(e) => proptest::prop_assert!([1, 2, 7].contains(&e.code), "{e:?}"),
            }
        }
    }

    #[test]
    fn network_names() {
        for ok in ["a", "mesh", "m-1_x.y", "9"] {
            assert!(check_network_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "-a", "a/b", "a b", "é"] {
            assert!(check_network_name(bad).is_err(), "{bad}");
        }
    }
}
