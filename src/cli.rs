//! Command-line interface: argument definitions and their validation into
//! typed configuration. Nothing here touches the system.

use crate::layout::{Cidr, Layout, Preset};
use crate::layout6::Layout6;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::Ipv4Addr;
use std::path::PathBuf;

const RUN_EXAMPLES: &str = "\
Examples:
  meshfwd tun0                          wide layout, this host's 192.168.x.y address, all CPUs
  meshfwd --layout classic tun0         10.0.0.0/8 overlay over 192.168.0.0/16
  meshfwd --overlay 240.0.0.0/4 --underlay 192.168.0.0/17 tun0
                                        8,192 addresses per VM
  meshfwd --local 192.168.16.32 --threads 2 --key 42 tun0
  meshfwd --encap udp tun0              GRE-in-UDP (RFC 8086) on port 4754, for networks
                                        that drop IP protocol 47; every VM must agree
  meshfwd --key 42 --csum tun0          interoperate with a kernel `gre key 42 csum` peer
  meshfwd --datapath auto --key 42 mf0  kernel datapath (GRE device mf0 + eBPF) where ip_gre
                                        and BPF allow it, else the userspace TUN mf0
  meshfwd --overlay6 fd12:3456:789a:1::/64 tun0
                                        dual-stack with another IPv6 mesh prefix (the
                                        default is fd6d:6573:6866::/64); the TUN gets the
                                        VM's IPv6 address PREFIX:VM-IPV4::1 with /64
  meshfwd --overlay6 none tun0          IPv4 only
  meshfwd addr 10.16.32.91 --layout classic
                                        explain an address (see `meshfwd addr --help`)

Exit codes: 0 clean shutdown (SIGINT/SIGTERM), 1 runtime failure (e.g. TUN deleted),
2 bad configuration or usage. Must run as root (CAP_NET_ADMIN + CAP_NET_RAW; with
--encap udp, CAP_NET_ADMIN is enough; --datapath kernel: CAP_NET_ADMIN + CAP_BPF).";

const ADDR_EXAMPLES: &str = "\
Examples:
  meshfwd addr 241.2.15.253             container #4092 on VM 192.168.16.32 (wide layout)
  meshfwd addr --layout classic 10.16.32.91
  meshfwd addr 192.168.16.32            the VM's block and its own overlay address
  meshfwd addr --vm 192.168.16.32 --container 1 --json
  meshfwd addr --overlay 240.0.0.0/4 --underlay 192.168.0.0/17 --vm 192.168.1.2 --host 8191
  meshfwd addr fd6d:6573:6866:0:c0a8:1020:0:5b
                                        an IPv6 address: its VM, index and IPv4 twin
  meshfwd addr --vm 192.168.16.32 --container 5000 --ipv6-only
                                        an IPv6-only container beyond the IPv4 block

Text output: the first line is the IPv4 (or the only) answer; IPv4 answers get
a second line with their IPv6 side.";

/// meshfwd: userspace GRE mesh forwarder with stateless overlay addressing.
///
/// Reads IPv4 and IPv6 packets from a TUN device, derives the peer VM from the
/// destination overlay address, GRE-encapsulates them and sends them over raw
/// sockets; GRE received from peers is checked and written back to the TUN.
#[derive(Debug, Parser)]
#[command(
    name = "meshfwd",
    version,
    about,
    long_about = None,
    after_help = RUN_EXAMPLES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Explain an overlay (IPv4 or IPv6) or underlay address, or compose one from a VM and a container number.
    #[command(after_help = ADDR_EXAMPLES)]
    Addr(AddrArgs),
    /// Preflight: check that this host can run meshfwd, and say how to fix what is missing.
    #[command(after_help = CHECK_EXAMPLES)]
    Check(CheckArgs),
    /// Wire a container network namespace to this VM (veth, /32 routes, default route).
    #[command(after_help = ATTACH_EXAMPLES)]
    Attach(AttachArgs),
    /// Remove what `meshfwd attach` created for a container network namespace.
    #[command(after_help = DETACH_EXAMPLES)]
    Detach(DetachArgs),
}

const CHECK_EXAMPLES: &str = "\
Examples:
  meshfwd check                         wide layout, local address auto-detected
  meshfwd check --layout classic --local 192.168.16.32
  meshfwd check --json                  one JSON object for machines
  meshfwd check --encap udp             for GRE-in-UDP: also checks that UDP port 4754 is free
  meshfwd check --key 42                the datapath_auto line for a keyed grid (kernel datapath below 6.3)
  meshfwd check --overlay6 none         for a VM that will run IPv4 only (the ipv6 line says so)

Exit status: 0 when nothing failed (warnings allowed), 1 when a check failed, 2 on bad usage.";

const DETACH_EXAMPLES: &str = "\
Examples:
  meshfwd detach web1                   remove web1's veth pair and routes
  meshfwd detach web1                   again: a note, exit 0 (idempotent)

Exit status: 0 when detached or nothing was attached, 1 on failure, 2 on bad usage.";

const ATTACH_EXAMPLES: &str = "\
Examples:
  ip netns add web1 && meshfwd attach web1 --container 1
                                        241.2.0.2/32 and fd6d:6573:6866:0:c0a8:1020:0:2/128
  meshfwd attach web2 --container 2 --layout classic --local 192.168.16.32
  meshfwd attach web3 --container 3 --ipv4-only
  meshfwd attach web4 --container 5000 --ipv6-only
                                        an IPv6-only container beyond the IPv4 block
  meshfwd detach web1

Dual-stack is the default: when IPv6 is disabled on the VM or in NETNS (or the
MTU is below 1280) attach warns and wires IPv4 only; with --ipv6-only or
--overlay6 that is an error instead.";

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// This VM's underlay address [default: auto-detect, as `meshfwd TUN` does].
    #[arg(long, value_name = "IPV4")]
    pub local: Option<Ipv4Addr>,
    /// TUN device name meshfwd will use (for the MTU and route checks).
    #[arg(long, value_name = "TUN", default_value = "tun0")]
    pub tun: String,
    /// Encapsulation meshfwd will use, as `meshfwd --encap`: with udp, CAP_NET_RAW
    /// and the raw socket are optional, the MTU overhead is 32 bytes, and the
    /// UDP port must be free.
    #[arg(long, value_enum, default_value_t = EncapName::Gre)]
    pub encap: EncapName,
    /// UDP port of GRE-in-UDP, as `meshfwd --udp-port` (with --encap udp).
    #[arg(long, value_name = "PORT", default_value_t = crate::datapath::GRE_UDP_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub udp_port: u16,
    /// GRE key meshfwd will use, as `meshfwd --key` (below Linux 6.3 the
    /// kernel datapath needs one: see the datapath_auto check).
    #[arg(long, value_name = "N")]
    pub key: Option<u32>,
    /// IPv6 overlay meshfwd will use, as `meshfwd --overlay6` (`none`: IPv4
    /// only): the ipv6 check says whether this host runs it dual-stack.
    #[arg(long, value_name = "PREFIX/64|none", default_value = crate::layout6::DEFAULT_OVERLAY6)]
    pub overlay6: String,
    /// Print one JSON object instead of a report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct AttachArgs {
    /// Container network namespace (a name under /run/netns, or a path such as /proc/PID/ns/net).
    #[arg(value_name = "NETNS")]
    pub netns: String,
    /// Container number on this VM (1 = host part 2).
    #[arg(long, value_name = "N")]
    pub container: u32,
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// This VM's underlay address [default: auto-detect].
    #[arg(long, value_name = "IPV4")]
    pub local: Option<Ipv4Addr>,
    /// Interface name inside the container.
    #[arg(long, value_name = "NAME", default_value = "eth0")]
    pub ifname: String,
    /// MTU of the veth pair [default: the MTU of --tun if it exists, else the underlay MTU minus 24].
    #[arg(long, value_name = "N")]
    pub mtu: Option<u32>,
    /// meshfwd's TUN device on this VM (its MTU is the default veth MTU).
    #[arg(long, value_name = "TUN", default_value = "tun0")]
    pub tun: String,
    /// IPv6 mesh prefix, as `meshfwd addr --overlay6` [default: fd6d:6573:6866::/64].
    /// Giving it makes IPv6 required: attach fails instead of falling back to IPv4.
    #[arg(long, value_name = "PREFIX/64")]
    pub overlay6: Option<String>,
    /// Only the IPv4 /32: no IPv6 address or routes.
    #[arg(long, conflicts_with_all = ["ipv6_only", "overlay6"])]
    pub ipv4_only: bool,
    /// Only the IPv6 /128 (no IPv4); --container may then go up to 4294967294,
    /// beyond the IPv4 block.
    #[arg(long)]
    pub ipv6_only: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

impl AttachArgs {
    /// The IPv6 mesh prefix: `--overlay6`, else the default.
    pub fn layout6(&self) -> Result<Layout6, String> {
        resolve_overlay6(self.overlay6.as_deref())
    }
}

/// `--overlay6 PREFIX/64` of attach and detach, else the default prefix.
pub fn resolve_overlay6(overlay6: Option<&str>) -> Result<Layout6, String> {
    match overlay6 {
        None => Ok(Layout6::default()),
        Some(p) => p.parse().map_err(|e| format!("--overlay6: {e}")),
    }
}

#[derive(Debug, Clone, Args)]
pub struct DetachArgs {
    /// Container network namespace given to `meshfwd attach`.
    #[arg(value_name = "NETNS")]
    pub netns: String,
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// This VM's underlay address [default: auto-detect].
    #[arg(long, value_name = "IPV4")]
    pub local: Option<Ipv4Addr>,
    /// IPv6 mesh prefix (accepted for symmetry with attach and validated;
    /// detach removes both families whatever it says).
    #[arg(long, value_name = "PREFIX/64")]
    pub overlay6: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LayoutName {
    /// 240.0.0.0/4 over 192.168.0.0/16: 4,096 addresses per VM.
    Wide,
    /// 10.0.0.0/8 over 192.168.0.0/16: 256 addresses per VM.
    Classic,
}

/// `--gre-receive` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GreReceive {
    /// The fanout group where it can be set up, else shard (one log line says why).
    Auto,
    /// A packet fanout group on the underlay interface: each GRE packet goes
    /// to one worker, so per-packet kernel work does not grow with --threads.
    Fanout,
    /// One raw GRE socket per worker, each keeping its shard of every packet
    /// (the kernel clones each packet to every worker's socket).
    Shard,
}

/// `--datapath` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatapathName {
    /// A multi-queue TUN and raw GRE (or UDP) sockets: works on every kernel.
    Userspace,
    /// One collect-metadata GRE device named TUN with two tc eBPF programs:
    /// needs ip_gre, CAP_BPF + CAP_NET_ADMIN, Linux 5.1+ (6.3+ without --key).
    Kernel,
    /// kernel where the device can be created and both programs load and
    /// attach, else userspace (one log line says which and why).
    Auto,
}

/// `--encap` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EncapName {
    Gre,
    Udp,
}

impl From<EncapName> for crate::datapath::Encap {
    fn from(e: EncapName) -> Self {
        match e {
            EncapName::Gre => crate::datapath::Encap::Gre,
            EncapName::Udp => crate::datapath::Encap::Udp,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct LayoutArgs {
    /// Address layout preset.
    #[arg(long, value_enum, default_value_t = LayoutName::Wide)]
    pub layout: LayoutName,
    /// Custom overlay prefix (with --underlay; overrides --layout).
    #[arg(long, value_name = "CIDR", requires = "underlay")]
    pub overlay: Option<String>,
    /// Custom underlay prefix (with --overlay; overrides --layout).
    #[arg(long, value_name = "CIDR", requires = "overlay")]
    pub underlay: Option<String>,
}

impl LayoutArgs {
    pub fn resolve(&self) -> Result<Layout, String> {
        match (&self.overlay, &self.underlay) {
            (Some(o), Some(u)) => {
                let o: Cidr = o.parse().map_err(|e| format!("--overlay: {e}"))?;
                let u: Cidr = u.parse().map_err(|e| format!("--underlay: {e}"))?;
                Layout::new(o, u).map_err(|e| format!("layout: {e}"))
            }
            _ => Ok(Layout::preset(match self.layout {
                LayoutName::Wide => Preset::Wide,
                LayoutName::Classic => Preset::Classic,
            })),
        }
    }

    /// A short name for logs: the preset name or "custom".
    pub fn name(&self) -> &'static str {
        if self.overlay.is_some() {
            "custom"
        } else {
            match self.layout {
                LayoutName::Wide => "wide",
                LayoutName::Classic => "classic",
            }
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// TUN device to create or attach to (e.g. tun0).
    #[arg(value_name = "TUN", required = true)]
    pub tun: Option<String>,
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// This VM's underlay address [default: the one address of this host inside the underlay prefix].
    #[arg(long, value_name = "IPV4")]
    pub local: Option<Ipv4Addr>,
    /// Worker threads [default: number of CPUs this process may run on, or of --cpus].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Pin workers to these CPUs, e.g. 0,1 or 0-3 [default: every allowed CPU].
    #[arg(long, value_name = "LIST", conflicts_with = "no_pin")]
    pub cpus: Option<String>,
    /// Do not pin workers to CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// GRE key (RFC 2890) to send and to require on receive [default: no key].
    #[arg(long, value_name = "N")]
    pub key: Option<u32>,
    /// Send GRE checksums and require them on receive (Linux `csum`). Without
    /// it, none are sent, and received packets carrying one are accepted only
    /// if it is valid.
    #[arg(long)]
    pub csum: bool,
    /// Send RFC 2890 sequence numbers, counted per destination VM (Linux
    /// `oseq`; needed by kernel peers configured with `iseq`). Received
    /// sequence numbers are accepted and not checked. Uses one worker, so that
    /// the packets to each VM leave in sequence order.
    #[arg(long)]
    pub seq: bool,
    /// Encapsulation: gre = IP protocol 47 through raw sockets; udp = GRE-in-UDP
    /// (RFC 8086, Linux FOU `ipproto 47`), for networks that drop protocol 47,
    /// with UDP segmentation offload. Every VM of a mesh must use the same.
    #[arg(long, value_enum, default_value_t = EncapName::Gre)]
    pub encap: EncapName,
    /// Datapath: userspace = this process forwards through a TUN; kernel =
    /// one collect-metadata GRE device named TUN whose two eBPF programs
    /// forward in the kernel (meshfwd stays resident to supervise and count);
    /// auto = kernel where possible, else userspace (GRE-in-UDP: always
    /// userspace).
    #[arg(long, value_enum, default_value_t = DatapathName::Userspace)]
    pub datapath: DatapathName,
    /// How GRE mode receives: `fanout` = one AF_PACKET fanout group on the
    /// underlay interface (each packet reaches one worker; needs CAP_NET_RAW
    /// and the interface that carries --local); `shard` = one raw GRE socket
    /// per worker, each filtering its shard out of a copy of every packet;
    /// `auto` = fanout, or shard if fanout cannot be set up.
    #[arg(long, value_enum, default_value_t = GreReceive::Auto)]
    pub gre_receive: GreReceive,
    /// UDP port of GRE-in-UDP, sent to and listened on (with --encap udp).
    #[arg(long, value_name = "PORT", default_value_t = crate::datapath::GRE_UDP_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    pub udp_port: u16,
    /// TUN MTU [default: underlay interface MTU minus encapsulation overhead (24, +4 each for --key, --csum, --seq; 32 and up with --encap udp)].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(68..))]
    pub mtu: Option<u16>,
    /// IPv6 overlay (dual-stack): the mesh prefix, an RFC 4193 unique local
    /// /64 (inside fd00::/8) that every VM of the mesh must share. Each VM owns
    /// the /96 PREFIX + its underlay IPv4 address (`meshfwd addr` composes and
    /// explains them); the TUN gets index 1 of it with /64, so the kernel
    /// routes the whole mesh prefix into the TUN. `none` = IPv4 only. Also IPv4
    /// only, with one log line: a host with IPv6 disabled, a TUN MTU below
    /// 1280, or --datapath kernel.
    #[arg(long, value_name = "PREFIX/64|none", default_value = crate::layout6::DEFAULT_OVERLAY6)]
    pub overlay6: String,
    /// Leave address, MTU and link state of the TUN to the operator.
    #[arg(long)]
    pub no_configure: bool,
    /// Disable segmentation offload: TUN TSO/USO on egress and GRO on ingress,
    /// and with --encap udp also UDP GSO/GRO (one datagram per packet).
    #[arg(long)]
    pub no_offload: bool,
    /// Testing: UDP GSO/GRO off, TUN offload on (the path of kernels without them).
    #[arg(long, hide = true)]
    pub no_udp_offload: bool,
    /// After start-up, switch to this user (name or uid). All capabilities are
    /// dropped after start-up in any case; the stats file must be writable by it.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Keep the start-up capabilities instead of dropping them (debugging only).
    #[arg(long, hide = true)]
    pub keep_privileges: bool,
    /// Write a JSON counters snapshot here once start-up is complete, every second, and at exit.
    #[arg(long, value_name = "PATH")]
    pub stats_file: Option<PathBuf>,
    /// Serve Prometheus/OpenMetrics counters at http://ADDR:PORT/metrics (e.g. 127.0.0.1:9469).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Log a one-line counter summary every SECS seconds (0 = never).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub stats_interval: u64,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less logging (-q warnings only, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
}

impl RunArgs {
    pub fn log_level(&self) -> log::LevelFilter {
        match (self.verbose, self.quiet) {
            (0, 0) => log::LevelFilter::Info,
            (1, _) => log::LevelFilter::Debug,
            (v, _) if v >= 2 => log::LevelFilter::Trace,
            (_, 1) => log::LevelFilter::Warn,
            _ => log::LevelFilter::Error,
        }
    }
}

/// The IPv6 mesh prefix (issue #17) of `meshfwd addr` (attach and detach
/// take `--overlay6` as an optional flag: giving it makes IPv6 required);
/// the daemon takes the same flag (with `none`), [`RunArgs::overlay6`].
#[derive(Debug, Clone, Args)]
pub struct Layout6Args {
    /// IPv6 mesh prefix: an RFC 4193 unique local /64 (fd00::/8). Each VM owns
    /// the /96 PREFIX + its underlay IPv4 address; the last 32 bits number its
    /// addresses like the IPv4 host part.
    #[arg(long, value_name = "PREFIX/64", default_value = crate::layout6::DEFAULT_OVERLAY6)]
    pub overlay6: String,
}

impl Layout6Args {
    pub fn resolve(&self) -> Result<Layout6, String> {
        self.overlay6
            .parse()
            .map_err(|e| format!("--overlay6: {e}"))
    }
}

/// The daemon's `--overlay6`: a mesh prefix (parsed like `meshfwd addr`'s),
/// or `None` for `none` (IPv4 only).
pub fn parse_overlay6(s: &str) -> Result<Option<Layout6>, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e| format!("--overlay6: {e} (or 'none' for IPv4 only)"))
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["address", "vm"])))]
pub struct AddrArgs {
    /// Address to explain: an IPv4 overlay or underlay address, or an IPv6
    /// address of the mesh prefix.
    #[arg(value_name = "ADDRESS")]
    pub address: Option<String>,
    #[command(flatten)]
    pub layout: LayoutArgs,
    #[command(flatten)]
    pub layout6: Layout6Args,
    /// Compose an IPv6-only address: --container up to 4294967294, --host up
    /// to 4294967295 (the IPv6 index), beyond the IPv4 block.
    #[arg(long, requires = "vm", conflicts_with = "address")]
    pub ipv6_only: bool,
    /// Compose: the VM's underlay address (with --container or --host).
    #[arg(long, value_name = "IPV4", conflicts_with = "address")]
    pub vm: Option<String>,
    /// Compose: container number (1 = host part 2).
    #[arg(long, value_name = "N", requires = "vm", conflicts_with = "host")]
    pub container: Option<u64>,
    /// Compose: raw host part (0 = reserved, 1 = the VM itself).
    #[arg(long, value_name = "N", requires = "vm")]
    pub host: Option<u64>,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

/// Parses a CPU list such as `0,2-3`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!("--cpus '{s}': empty item"));
        }
        let bad = || format!("--cpus '{s}': '{part}' is not a CPU number or range like 0-3");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad())?;
                let b: usize = b.trim().parse().map_err(|_| bad())?;
                if a > b || b - a > 4096 {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|c| seen.insert(*c));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0,1").unwrap(), vec![0, 1]);
        assert_eq!(parse_cpu_list("0-3").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_cpu_list("3,1-2,3").unwrap(), vec![3, 1, 2]);
        assert!(parse_cpu_list("a").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("1,,2").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_run_and_addr() {
        let c =
            Cli::try_parse_from(["meshfwd", "--layout", "classic", "--key", "42", "tun0"]).unwrap();
        assert!(c.command.is_none());
        assert_eq!(c.run.tun.as_deref(), Some("tun0"));
        assert_eq!(c.run.key, Some(42));
        let c = Cli::try_parse_from(["meshfwd", "addr", "--json", "10.16.32.91"]).unwrap();
        assert!(matches!(c.command, Some(Command::Addr(_))));
        assert_eq!(c.run.datapath, DatapathName::Userspace);
        let c = Cli::try_parse_from(["meshfwd", "--datapath", "auto", "mf0"]).unwrap();
        assert_eq!(c.run.datapath, DatapathName::Auto);
        assert!(Cli::try_parse_from(["meshfwd", "--datapath", "ebpf", "mf0"]).is_err());
        let c = Cli::try_parse_from([
            "meshfwd",
            "addr",
            "--overlay6",
            "fd00:1::/64",
            "--vm",
            "192.168.1.2",
            "--container",
            "5000",
            "--ipv6-only",
        ])
        .unwrap();
        let Some(Command::Addr(a)) = c.command else {
            panic!("not addr")
        };
        assert!(a.ipv6_only);
        assert_eq!(a.layout6.resolve().unwrap().to_string(), "fd00:1::/64");
        assert!(Cli::try_parse_from(["meshfwd", "addr", "--ipv6-only", "10.0.0.1"]).is_err());
        assert!(Cli::try_parse_from(["meshfwd"]).is_err());
        assert!(Cli::try_parse_from(["meshfwd", "--overlay", "10.0.0.0/8", "tun0"]).is_err());
    }

    #[test]
    fn daemon_overlay6() {
        let c = Cli::try_parse_from(["meshfwd", "tun0"]).unwrap();
        let l6 = parse_overlay6(&c.run.overlay6).unwrap().unwrap();
        assert_eq!(l6.to_string(), crate::layout6::DEFAULT_OVERLAY6);
        let c = Cli::try_parse_from(["meshfwd", "--overlay6", "none", "tun0"]).unwrap();
        assert_eq!(parse_overlay6(&c.run.overlay6).unwrap(), None);
        assert_eq!(parse_overlay6("NONE").unwrap(), None);
        let l6 = parse_overlay6("fd12:3456:789a:1::/64").unwrap().unwrap();
        assert_eq!(l6.to_string(), "fd12:3456:789a:1::/64");
        for bad in ["fd12::/48", "2001:db8::/64", "fd12::", "off"] {
            let e = parse_overlay6(bad).unwrap_err();
            assert!(
                e.starts_with("--overlay6: ") && e.contains("'none'"),
                "{bad}: {e}"
            );
        }
    }
}
