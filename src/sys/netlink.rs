//! A small synchronous rtnetlink client (netlink-sys + netlink-packet-route).
//!
//! Just what `meshfwd attach` / `detach` need: veth pairs (the peer created
//! directly in another network namespace), link state, MTU, alias and IPv4
//! device configuration (proxy_arp), IPv4 addresses and routes, and dumps of
//! links, addresses and routes; and for the kernel datapath one
//! collect-metadata GRE device, a clsact qdisc and direct-action cls_bpf
//! filters.
//!
//! A netlink socket belongs to the network namespace of the thread that
//! created it, for its whole life. [`Netlink::open`] uses the calling thread's
//! namespace; [`Netlink::open_in`] creates the socket on a short-lived thread
//! that first `setns`es into the given namespace, so the calling thread never
//! changes namespace. Every request is acknowledged (`NLM_F_ACK`) and errors
//! come back as `io::Error` with the kernel's errno, without context: callers
//! add the "what" (and may look at `raw_os_error()` first).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{
    NetlinkBuffer, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    AfSpecInet, AfSpecUnspec, InetDevConf, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags,
    LinkInfo, LinkMessage, State,
};
use netlink_packet_route::link::{GreIOFlags, InfoGre};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::tc::{
    TcAttribute, TcBpfFlags, TcFilterBpf, TcFilterBpfOption, TcHandle, TcMessage, TcOption,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Receive buffer: larger than the 32 KiB the kernel uses for dump chunks.
const RECV_BUF: usize = 64 * 1024;

/// The facts of one network interface that the attach code looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_IFALIAS` (`ip link set DEV alias TEXT`), if set.
    pub alias: Option<String>,
    pub mtu: Option<u32>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Carrier present (`IFF_LOWER_UP`).
    pub lower_up: bool,
    /// RFC 2863 operational state is "up".
    pub oper_up: bool,
    /// The root qdisc's kind: `"noop"` until the kernel has activated the
    /// device's transmit path (packets sent before that are dropped).
    pub qdisc: Option<String>,
    /// Hardware address as `aa:bb:cc:dd:ee:ff` (`IFLA_ADDRESS`), if any.
    pub mac: Option<String>,
    /// `IFLA_INFO_KIND` (e.g. `"veth"`), if the link has one.
    pub kind: Option<String>,
    /// `IFLA_LINK`: for a veth, the peer's index (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the id, in this namespace, of the namespace
    /// the peer lives in (only when that is another namespace).
    pub peer_netnsid: Option<i32>,
}

impl Link {
    /// Up, carrier on, operationally up and the transmit queue activated:
    /// a packet sent now is not dropped for link-state reasons.
    pub fn ready(&self) -> bool {
        self.up
            && self.lower_up
            && self.oper_up
            && self.qdisc.as_deref().is_some_and(|q| q != "noop")
    }
}

#[cfg(test)]
impl Link {
    /// A veth that is up and ready (MTU 1500, no alias, no peer), for tests.
    pub(crate) fn test_veth(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            alias: None,
            mtu: Some(1500),
            up: true,
            lower_up: true,
            oper_up: true,
            qdisc: Some("noqueue".into()),
            mac: None,
            kind: Some("veth".into()),
            peer_index: None,
            peer_netnsid: None,
        }
    }
}

/// One IPv4 address of an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr4 {
    pub index: u32,
    pub addr: Ipv4Addr,
    pub prefix: u8,
    /// `IFA_LABEL` (e.g. `lo:meshfwd`); the kernel reports the interface name
    /// when no label was given.
    pub label: Option<String>,
}

/// A route of either family, as dumped or as requested: [`Route4`] or
/// [`Route6`]; the address type `A` says which ([`RouteFamily`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route<A> {
    pub dst: A,
    pub prefix: u8,
    /// Routing table id (254 = main).
    pub table: u32,
    pub oif: Option<u32>,
    pub gateway: Option<A>,
    /// Preferred source address (`ip route ... src A`).
    pub prefsrc: Option<A>,
    /// `scope link` (no gateway) instead of `scope universe`.
    pub scope_link: bool,
    /// `onlink`: use the gateway on `oif` even though no prefix covers it.
    pub onlink: bool,
}

/// An IPv4 route.
pub type Route4 = Route<Ipv4Addr>;
/// An IPv6 route.
pub type Route6 = Route<Ipv6Addr>;

/// What a route's address type brings to rtnetlink: its family and its
/// `RouteAddress` form.
pub trait RouteFamily: Copy {
    const FAMILY: AddressFamily;
    const UNSPECIFIED: Self;
    fn to_route_address(self) -> RouteAddress;
    fn from_route_address(a: &RouteAddress) -> Option<Self>;
}

impl RouteFamily for Ipv4Addr {
    const FAMILY: AddressFamily = AddressFamily::Inet;
    const UNSPECIFIED: Self = Ipv4Addr::UNSPECIFIED;
    fn to_route_address(self) -> RouteAddress {
        RouteAddress::Inet(self)
    }
    fn from_route_address(a: &RouteAddress) -> Option<Self> {
        match a {
            RouteAddress::Inet(v) => Some(*v),
            _ => None,
        }
    }
}

impl RouteFamily for Ipv6Addr {
    const FAMILY: AddressFamily = AddressFamily::Inet6;
    const UNSPECIFIED: Self = Ipv6Addr::UNSPECIFIED;
    fn to_route_address(self) -> RouteAddress {
        RouteAddress::Inet6(self)
    }
    fn from_route_address(a: &RouteAddress) -> Option<Self> {
        match a {
            RouteAddress::Inet6(v) => Some(*v),
            _ => None,
        }
    }
}

impl<A: RouteFamily> Route<A> {
    /// A route in the main table through `oif`, scope universe, no gateway.
    pub fn new(dst: A, prefix: u8, oif: u32) -> Route<A> {
        Route {
            dst,
            prefix,
            table: u32::from(RouteHeader::RT_TABLE_MAIN),
            oif: Some(oif),
            gateway: None,
            prefsrc: None,
            scope_link: false,
            onlink: false,
        }
    }
}

/// One IPv6 address of an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr6 {
    pub index: u32,
    pub addr: Ipv6Addr,
    pub prefix: u8,
    /// `IFA_F_NODAD`: duplicate address detection is skipped.
    pub nodad: bool,
    /// `IFA_F_TENTATIVE`: duplicate address detection still runs (or failed).
    pub tentative: bool,
}

/// Runs `f` on a short-lived thread that has entered the network namespace
/// `ns` (an open `/run/netns/NAME` or `/proc/PID/ns/net`); the calling
/// thread's namespace is left alone. What `f` opens in `/proc/sys/net` then
/// belongs to `ns`. Fails with `EINVAL` when `ns` is not a network namespace.
pub fn in_netns<T: Send>(
    ns: BorrowedFd<'_>,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    let fd = ns.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns only changes this (short-lived) thread's
            // network namespace; `fd` is open for the scope's duration.
            if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("network namespace thread panicked")))
    })
}

/// Whether the calling thread's network namespace has IPsec (xfrm) states
/// or policies: dumps `XFRM_MSG_GETSA` and `XFRM_MSG_GETPOLICY` over
/// `NETLINK_XFRM` and looks for any entry. `Ok(false)` when the kernel has
/// no xfrm netlink at all. Needs `CAP_NET_ADMIN`.
pub fn xfrm_in_use() -> io::Result<bool> {
    const NETLINK_XFRM: isize = 6;
    const XFRM_MSG_NEWSA: u16 = 0x10;
    const XFRM_MSG_GETSA: u16 = 0x12;
    const XFRM_MSG_NEWPOLICY: u16 = 0x13;
    const XFRM_MSG_GETPOLICY: u16 = 0x15;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    let mut sock = match Socket::new(NETLINK_XFRM) {
        Ok(s) => s,
        Err(e) if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => return Ok(false),
        Err(e) => return Err(e),
    };
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    let mut buf = Vec::with_capacity(RECV_BUF);
    for (seq, kind) in [(1u32, XFRM_MSG_GETSA), (2, XFRM_MSG_GETPOLICY)] {
        // A bare header: a dump request needs no body.
        let mut req = [0u8; 16];
        req[0..4].copy_from_slice(&16u32.to_ne_bytes());
        req[4..6].copy_from_slice(&kind.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req[8..12].copy_from_slice(&seq.to_ne_bytes());
        sock.send(&req, 0)?;
        loop {
            buf.clear();
            let n = sock.recv(&mut buf, 0)?;
            let mut off = 0;
            let mut done = false;
            while off + 16 <= n {
                let h = &buf[off..n];
                let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
                let typ = u16::from_ne_bytes([h[4], h[5]]);
                if len < 16 {
                    return Err(invalid(format!("xfrm netlink: bad reply length {len}")));
                }
                match typ {
                    XFRM_MSG_NEWSA | XFRM_MSG_NEWPOLICY => return Ok(true),
                    NLMSG_DONE => done = true,
                    NLMSG_ERROR => {
                        let errno = h
                            .get(16..20)
                            .map_or(0, |e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]));
                        if errno != 0 {
                            return Err(io::Error::from_raw_os_error(-errno));
                        }
                        done = true;
                    }
                    _ => {}
                }
                off += (len + 3) & !3;
            }
            if done || n == 0 {
                break;
            }
        }
    }
    Ok(false)
}

/// A synchronous rtnetlink socket bound to one network namespace.
pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// A socket in the network namespace `ns` (an open `/run/netns/NAME` or
    /// `/proc/PID/ns/net`). A dedicated thread enters the namespace and
    /// creates the socket; the calling thread's namespace is left alone.
    /// Fails with `EINVAL` when `ns` is not a network namespace.
    pub fn open_in(ns: BorrowedFd<'_>) -> io::Result<Netlink> {
        in_netns(ns, Netlink::open)
    }

    // --- links -------------------------------------------------------------

    /// Every interface of the namespace.
    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let replies = self.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })
            .collect())
    }

    /// The interface named `name`, or `None`.
    pub fn link_by_name(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        self.get_link(msg)
    }

    /// The interface with index `index`, or `None`.
    pub fn link_by_index(&mut self, index: u32) -> io::Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.get_link(msg)
    }

    fn get_link(&mut self, msg: LinkMessage) -> io::Result<Option<Link>> {
        match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The id this namespace uses for the network namespace `ns` (what
    /// [`Link::peer_netnsid`] reports for a veth whose peer lives there), or
    /// `None` if this namespace has not assigned it one. `RTM_GETNSID`.
    pub fn nsid_of(&mut self, ns: BorrowedFd<'_>) -> io::Result<Option<i32>> {
        let fd = u32::try_from(ns.as_raw_fd()).map_err(|_| invalid("negative fd".into()))?;
        let replies = self.request(RouteNetlinkMessage::GetNsId(nsid_request(fd)), 0)?;
        Ok(replies
            .iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewNsId(n) => n.attributes.iter().find_map(|a| match a {
                    NsidAttribute::Id(id) => Some(*id),
                    _ => None,
                }),
                _ => None,
            })
            .filter(|id| *id >= 0))
    }

    /// Creates the veth pair `name` (here) ⇄ `peer` (created directly inside
    /// the namespace `peer_ns`), both with `mtu`, both down.
    pub fn add_veth(
        &mut self,
        name: &str,
        peer: &str,
        mtu: u32,
        peer_ns: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let msg = veth_request(name, peer, mtu, peer_ns.as_raw_fd());
        self.ack(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Deletes interface `index` (for a veth, both ends).
    pub fn del_link(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.ack(RouteNetlinkMessage::DelLink(msg), 0)
    }

    /// Sets (or with `""` clears) the interface alias.
    pub fn set_alias(&mut self, index: u32, alias: &str) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes
            .push(LinkAttribute::IfAlias(alias.to_owned()));
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Brings the interface up or down.
    pub fn set_up(&mut self, index: u32, up: bool) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.change_mask = LinkFlags::Up;
        if up {
            msg.header.flags = LinkFlags::Up;
        }
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Sets the interface MTU.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Sets `net.ipv4.conf.<dev>.proxy_arp=1` through netlink, so it acts in
    /// the socket's namespace whatever /proc the caller sees.
    pub fn enable_proxy_arp(&mut self, index: u32) -> io::Result<()> {
        self.ack(RouteNetlinkMessage::SetLink(proxy_arp_request(index)), 0)
    }

    /// Creates the collect-metadata ("external") L3 GRE device `name`
    /// (`ip link add NAME type gre external [icsum ocsum]`), down. `EEXIST`
    /// when the name is taken or the namespace already has one such device.
    pub fn add_gre_collect_md(&mut self, name: &str, mtu: u32, csum: bool) -> io::Result<()> {
        self.ack(
            RouteNetlinkMessage::NewLink(gre_collect_md_request(name, mtu, csum)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Adds a clsact qdisc to interface `index` (`tc qdisc add dev D clsact`).
    pub fn add_clsact(&mut self, index: u32) -> io::Result<()> {
        self.ack(
            RouteNetlinkMessage::NewQueueDiscipline(clsact_request(index)?),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Attaches the loaded tc program `prog_fd` to the clsact hook of
    /// interface `index` (`tc filter add dev D ingress|egress bpf da fd N`).
    pub fn add_bpf_filter(
        &mut self,
        index: u32,
        ingress: bool,
        prog_fd: u32,
        name: &str,
    ) -> io::Result<()> {
        self.ack(
            RouteNetlinkMessage::NewTrafficFilter(bpf_filter_request(
                index, ingress, prog_fd, name,
            )?),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    // --- addresses ---------------------------------------------------------

    /// Every IPv4 address of the namespace.
    pub fn addrs(&mut self) -> io::Result<Vec<Addr4>> {
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Inet;
        let replies = self.dump(RouteNetlinkMessage::GetAddress(req))?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => parse_addr(a),
                _ => None,
            })
            .collect())
    }

    /// Adds `addr/prefix` (scope global) to interface `index`, with an
    /// optional label (which must start with the interface name).
    pub fn add_addr(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
        label: Option<&str>,
    ) -> io::Result<()> {
        let msg = addr_request(index, addr, prefix, label);
        self.ack(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Removes `addr/prefix` from interface `index`.
    pub fn del_addr(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let msg = addr_request(index, addr, prefix, None);
        self.ack(RouteNetlinkMessage::DelAddress(msg), 0)
    }

    /// Every IPv6 address of the namespace (none when the kernel has no IPv6).
    pub fn addrs6(&mut self) -> io::Result<Vec<Addr6>> {
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Inet6;
        let replies = self.dump(RouteNetlinkMessage::GetAddress(req))?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => parse_addr6(a),
                _ => None,
            })
            .collect())
    }

    /// Adds `addr/prefix` (scope global, `nodad`; with `noprefixroute`, no
    /// kernel route for the prefix) to interface `index`.
    pub fn add_addr6(
        &mut self,
        index: u32,
        addr: Ipv6Addr,
        prefix: u8,
        noprefixroute: bool,
    ) -> io::Result<()> {
        let msg = addr6_request(index, addr, prefix, noprefixroute);
        self.ack(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Removes the IPv6 `addr/prefix` from interface `index`.
    pub fn del_addr6(&mut self, index: u32, addr: Ipv6Addr, prefix: u8) -> io::Result<()> {
        let msg = addr6_request(index, addr, prefix, false);
        self.ack(RouteNetlinkMessage::DelAddress(msg), 0)
    }

    /// Adds the IPv6 `addr/prefix` (scope global, `nodad`) to interface
    /// `index`, replacing the same address if present.
    pub fn add_addr6_nodad(&mut self, index: u32, addr: Ipv6Addr, prefix: u8) -> io::Result<()> {
        let msg = addr6_request(index, addr, prefix, false);
        self.ack(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    // --- routes ------------------------------------------------------------

    /// Every IPv4 unicast route of every table (the local and broadcast
    /// routes the kernel derives from addresses are left out).
    pub fn routes(&mut self) -> io::Result<Vec<Route4>> {
        self.unicast_routes()
    }

    /// Every IPv6 unicast route of every table (none when the kernel has no IPv6).
    pub fn routes6(&mut self) -> io::Result<Vec<Route6>> {
        self.unicast_routes()
    }

    /// The unicast routes of one address family.
    fn unicast_routes<A: RouteFamily>(&mut self) -> io::Result<Vec<Route<A>>> {
        let mut req = RouteMessage::default();
        req.header.address_family = A::FAMILY;
        let replies = self.dump(RouteNetlinkMessage::GetRoute(req))?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) if r.header.kind == RouteType::Unicast => {
                    parse_route(r)
                }
                _ => None,
            })
            .collect())
    }

    /// Adds a unicast route of either family (fails with `EEXIST` if the
    /// same one exists).
    pub fn add_route<A: RouteFamily>(&mut self, route: &Route<A>) -> io::Result<()> {
        self.ack(
            RouteNetlinkMessage::NewRoute(route_request(route)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Deletes a route of either family (`ESRCH` when there is none).
    pub fn del_route<A: RouteFamily>(&mut self, route: &Route<A>) -> io::Result<()> {
        self.ack(RouteNetlinkMessage::DelRoute(route_request(route)), 0)
    }

    // --- transport ---------------------------------------------------------

    fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.request(msg, flags).map(drop)
    }

    fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.request(msg, NLM_F_DUMP)
    }

    /// Sends one request and collects the replies until the ACK (or, for a
    /// dump, `NLMSG_DONE`). A negative ACK becomes an `io::Error` with its errno.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut nl = NetlinkMessage::from(msg);
        nl.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        nl.header.sequence_number = seq;
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        let sent = self.sock.send(&out, 0)?;
        if sent != out.len() {
            return Err(io::Error::other(format!(
                "netlink: short send ({sent} of {} bytes)",
                out.len()
            )));
        }
        let mut replies = Vec::new();
        loop {
            self.buf.clear();
            let n = self.sock.recv(&mut self.buf, libc::MSG_TRUNC)?;
            if n > self.buf.len() {
                return Err(io::Error::other(format!(
                    "netlink: reply of {n} bytes truncated to {}",
                    self.buf.len()
                )));
            }
            let mut off = 0;
            while off < n {
                let data = &self.buf[off..n];
                let len = NetlinkBuffer::new_checked(data)
                    .map_err(|e| invalid(format!("netlink: bad reply header: {e}")))?
                    .length() as usize;
                if len < 16 || len > data.len() {
                    return Err(invalid(format!("netlink: bad reply length {len}")));
                }
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[..len])
                    .map_err(|e| invalid(format!("netlink: cannot parse reply: {e}")))?;
                off += (len + 3) & !3;
                if reply.header.sequence_number != seq {
                    continue; // a stale reply to an earlier request
                }
                match reply.payload {
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    // The ACK: for a dump it comes after NLMSG_DONE, if at all.
                    NetlinkPayload::Error(_) if !dump => return Ok(replies),
                    NetlinkPayload::Done(d) => {
                        if d.code < 0 {
                            return Err(io::Error::from_raw_os_error(-d.code));
                        }
                        return Ok(replies);
                    }
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    _ => {}
                }
            }
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

// --- request building (pure) ---------------------------------------------------

/// `ip link add NAME mtu MTU type veth peer name PEER mtu MTU netns FD`.
pub fn veth_request(name: &str, peer: &str, mtu: u32, peer_ns_fd: i32) -> LinkMessage {
    let mut peer_msg = LinkMessage::default();
    peer_msg.attributes = vec![
        LinkAttribute::IfName(peer.to_owned()),
        LinkAttribute::Mtu(mtu),
        LinkAttribute::NetNsFd(peer_ns_fd),
    ];
    let mut msg = LinkMessage::default();
    msg.attributes = vec![
        LinkAttribute::IfName(name.to_owned()),
        LinkAttribute::Mtu(mtu),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]),
    ];
    msg
}

/// `ip link add NAME mtu MTU type gre external [icsum ocsum]`. The
/// checksum flags matter even though the programs choose per packet: the
/// kernel drops received packets whose C bit differs from `icsum`
/// (`rx_crc_errors`), and since 6.10 takes the GSO checksum type from
/// `ocsum`.
pub fn gre_collect_md_request(name: &str, mtu: u32, csum: bool) -> LinkMessage {
    let flags = if csum {
        GreIOFlags::Checksum
    } else {
        GreIOFlags::empty()
    };
    let mut msg = LinkMessage::default();
    msg.attributes = vec![
        LinkAttribute::IfName(name.to_owned()),
        LinkAttribute::Mtu(mtu),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::GreTun),
            LinkInfo::Data(InfoData::GreTun(vec![
                InfoGre::CollectMetadata,
                InfoGre::IFlags(flags),
                InfoGre::OFlags(flags),
            ])),
        ]),
    ];
    msg
}

fn tc_index(index: u32) -> io::Result<i32> {
    i32::try_from(index).map_err(|_| invalid(format!("interface index {index} out of range")))
}

/// `tc qdisc add dev INDEX clsact`: handle ffff:, parent ffff:fff1.
pub fn clsact_request(index: u32) -> io::Result<TcMessage> {
    let mut msg = TcMessage::with_index(tc_index(index)?);
    msg.header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    msg.header.parent = TcHandle::CLSACT;
    msg.attributes.push(TcAttribute::Kind("clsact".into()));
    Ok(msg)
}

/// Preference of our filters (the only ones on the device).
const FILTER_PRIO: u32 = 1;
/// `ETH_P_ALL` in network byte order, as the filter's protocol.
const ETH_P_ALL_BE: u32 = (libc::ETH_P_ALL as u16).to_be() as u32;

/// `tc filter add dev INDEX ingress|egress prio 1 handle 1 bpf da fd FD
/// name NAME`.
pub fn bpf_filter_request(
    index: u32,
    ingress: bool,
    prog_fd: u32,
    name: &str,
) -> io::Result<TcMessage> {
    let mut msg = TcMessage::with_index(tc_index(index)?);
    msg.header.parent = TcHandle {
        major: 0xffff,
        minor: if ingress {
            TcHandle::MIN_INGRESS
        } else {
            TcHandle::MIN_EGRESS
        },
    };
    msg.header.handle = TcHandle { major: 0, minor: 1 };
    msg.header.info = (FILTER_PRIO << 16) | ETH_P_ALL_BE;
    msg.attributes
        .push(TcAttribute::Kind(TcFilterBpf::KIND.to_owned()));
    msg.attributes.push(TcAttribute::Options(vec![
        TcOption::Bpf(TcFilterBpfOption::ProgFd(prog_fd)),
        TcOption::Bpf(TcFilterBpfOption::ProgName(name.to_owned())),
        TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
    ]));
    Ok(msg)
}

/// `ip netns id`-style query: the nsid of the namespace open as `fd`.
pub fn nsid_request(fd: u32) -> NsidMessage {
    let mut msg = NsidMessage::default();
    msg.attributes.push(NsidAttribute::Fd(fd));
    msg
}

/// `sysctl -w net.ipv4.conf.DEV.proxy_arp=1` as an `RTM_SETLINK` carrying
/// only that one setting (`IFLA_AF_SPEC` → `AF_INET` → `IFLA_INET_CONF`).
pub fn proxy_arp_request(index: u32) -> LinkMessage {
    let mut conf = InetDevConf::default();
    conf.proxy_arp = 1; // zero fields are not sent, so nothing else changes
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes
        .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
            AfSpecInet::DevConfRequest(conf),
        ])]));
    msg
}

/// `ip addr add ADDR/PREFIX dev INDEX [label LABEL]` (scope global).
pub fn addr_request(index: u32, addr: Ipv4Addr, prefix: u8, label: Option<&str>) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix;
    msg.header.scope = AddressScope::Universe;
    msg.header.index = index;
    msg.attributes
        .push(AddressAttribute::Local(IpAddr::V4(addr)));
    msg.attributes
        .push(AddressAttribute::Address(IpAddr::V4(addr)));
    if let Some(l) = label {
        msg.attributes.push(AddressAttribute::Label(l.to_owned()));
    }
    msg
}

/// `ip -6 addr add ADDR/PREFIX dev INDEX nodad [noprefixroute]` (scope global).
pub fn addr6_request(
    index: u32,
    addr: Ipv6Addr,
    prefix: u8,
    noprefixroute: bool,
) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet6;
    msg.header.prefix_len = prefix;
    msg.header.scope = AddressScope::Universe;
    msg.header.index = index;
    msg.header.flags = AddressHeaderFlags::Nodad;
    msg.attributes
        .push(AddressAttribute::Local(IpAddr::V6(addr)));
    let mut flags = AddressFlags::Nodad;
    if noprefixroute {
        flags |= AddressFlags::Noprefixroute;
    }
    msg.attributes.push(AddressAttribute::Flags(flags));
    msg
}

/// An `RTM_NEWROUTE`/`RTM_DELROUTE` body as `ip route` / `ip -6 route`
/// builds it (protocol boot, type unicast).
pub fn route_request<A: RouteFamily>(r: &Route<A>) -> RouteMessage {
    let mut msg = RouteMessage::default();
    let h = &mut msg.header;
    h.address_family = A::FAMILY;
    h.destination_prefix_length = r.prefix;
    h.table = u8::try_from(r.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    h.protocol = RouteProtocol::Boot;
    h.scope = if r.scope_link {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    h.kind = RouteType::Unicast;
    if r.onlink {
        h.flags = RouteFlags::Onlink;
    }
    let mut push = |a: RouteAttribute| msg.attributes.push(a);
    if r.prefix > 0 {
        push(RouteAttribute::Destination(r.dst.to_route_address()));
    }
    if r.table > 255 {
        push(RouteAttribute::Table(r.table));
    }
    if let Some(gw) = r.gateway {
        push(RouteAttribute::Gateway(gw.to_route_address()));
    }
    if let Some(src) = r.prefsrc {
        push(RouteAttribute::PrefSource(src.to_route_address()));
    }
    if let Some(oif) = r.oif {
        push(RouteAttribute::Oif(oif));
    }
    msg
}

// --- reply parsing (pure) ------------------------------------------------------

fn parse_link(l: &LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        alias: None,
        mtu: None,
        up: l.header.flags.contains(LinkFlags::Up),
        lower_up: l.header.flags.contains(LinkFlags::LowerUp),
        oper_up: false,
        qdisc: None,
        mac: None,
        kind: None,
        peer_index: None,
        peer_netnsid: None,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(hw) if !hw.is_empty() => link.mac = Some(format_mac(hw)),
            LinkAttribute::IfAlias(s) => link.alias = Some(s.clone()),
            LinkAttribute::Mtu(m) => link.mtu = Some(*m),
            LinkAttribute::OperState(s) => link.oper_up = *s == State::Up,
            LinkAttribute::Qdisc(q) => link.qdisc = Some(q.clone()),
            LinkAttribute::Link(i) => link.peer_index = Some(*i),
            LinkAttribute::LinkNetNsId(id) => link.peer_netnsid = Some(*id),
            LinkAttribute::LinkInfo(info) => {
                link.kind = info.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    link
}

/// `aa:bb:cc:dd:ee:ff` (lower case, as `ip link` prints it).
pub fn format_mac(hw: &[u8]) -> String {
    hw.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_addr(a: &AddressMessage) -> Option<Addr4> {
    if a.header.family != AddressFamily::Inet {
        return None;
    }
    let mut local = None;
    let mut address = None;
    let mut label = None;
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(IpAddr::V4(v)) => local = Some(*v),
            AddressAttribute::Address(IpAddr::V4(v)) => address = Some(*v),
            AddressAttribute::Label(l) => label = Some(l.clone()),
            _ => {}
        }
    }
    Some(Addr4 {
        index: a.header.index,
        addr: local.or(address)?,
        prefix: a.header.prefix_len,
        label,
    })
}

fn parse_addr6(a: &AddressMessage) -> Option<Addr6> {
    if a.header.family != AddressFamily::Inet6 {
        return None;
    }
    let mut addr = None;
    let mut flags = AddressFlags::from_bits_retain(u32::from(a.header.flags.bits()));
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Address(IpAddr::V6(v)) => addr = addr.or(Some(*v)),
            AddressAttribute::Local(IpAddr::V6(v)) => addr = Some(*v),
            AddressAttribute::Flags(f) => flags = *f,
            _ => {}
        }
    }
    Some(Addr6 {
        index: a.header.index,
        addr: addr?,
        prefix: a.header.prefix_len,
        nodad: flags.contains(AddressFlags::Nodad),
        tentative: flags.contains(AddressFlags::Tentative),
    })
}

/// A dumped route of family `A` (`None` for the other family).
fn parse_route<A: RouteFamily>(r: &RouteMessage) -> Option<Route<A>> {
    if r.header.address_family != A::FAMILY {
        return None;
    }
    let mut route = Route {
        dst: A::UNSPECIFIED,
        prefix: r.header.destination_prefix_length,
        table: u32::from(r.header.table),
        oif: None,
        gateway: None,
        prefsrc: None,
        scope_link: r.header.scope == RouteScope::Link,
        onlink: r.header.flags.contains(RouteFlags::Onlink),
    };
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => {
                if let Some(d) = A::from_route_address(d) {
                    route.dst = d;
                }
            }
            RouteAttribute::Table(t) => route.table = *t,
            RouteAttribute::Oif(i) => route.oif = Some(*i),
            RouteAttribute::Gateway(g) => route.gateway = A::from_route_address(g),
            RouteAttribute::PrefSource(s) => route.prefsrc = A::from_route_address(s),
            _ => {}
        }
    }
    Some(route)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// Serializes and parses back a request, as the kernel would see it.
    fn roundtrip(m: RouteNetlinkMessage) -> RouteNetlinkMessage {
        let mut nl = NetlinkMessage::from(m);
        nl.header.flags = NLM_F_REQUEST;
        nl.finalize();
        let mut buf = vec![0; nl.buffer_len()];
        nl.serialize(&mut buf);
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf)
            .unwrap()
            .payload
        {
            NetlinkPayload::InnerMessage(m) => m,
            p => panic!("unexpected payload {p:?}"),
        }
    }

    #[test]
    fn veth_request_carries_both_ends() {
        let m = veth_request("mfc7", "eth0", 1476, 9);
        let RouteNetlinkMessage::NewLink(back) = roundtrip(RouteNetlinkMessage::NewLink(m)) else {
            panic!()
        };
        assert!(back
            .attributes
            .contains(&LinkAttribute::IfName("mfc7".into())));
        assert!(back.attributes.contains(&LinkAttribute::Mtu(1476)));
        let info = back
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i),
                _ => None,
            })
            .unwrap();
        assert!(info.contains(&LinkInfo::Kind(InfoKind::Veth)));
        // (the peer's attributes are nested inside LinkInfo::Data)
        let mut raw = vec![0u8; LinkAttribute::LinkInfo(info.clone()).buffer_len()];
        LinkAttribute::LinkInfo(info.clone()).emit(&mut raw);
        assert!(raw.windows(5).any(|w| w == b"eth0\0"));
    }

    #[test]
    fn route_request_matches_ip_route() {
        let mut r = Route4::new(ip("241.2.0.2"), 32, 5);
        r.scope_link = true;
        r.prefsrc = Some(ip("241.2.0.1"));
        let m = route_request(&r);
        assert_eq!(m.header.scope, RouteScope::Link);
        assert_eq!(m.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(m.header.kind, RouteType::Unicast);
        assert_eq!(m.header.protocol, RouteProtocol::Boot);
        assert!(!m.header.flags.contains(RouteFlags::Onlink));
        assert_eq!(parse_route(&m), Some(r.clone()));

        let mut d = Route4::new(Ipv4Addr::UNSPECIFIED, 0, 2);
        d.gateway = Some(ip("241.2.0.1"));
        d.onlink = true;
        let m = route_request(&d);
        assert!(m.header.flags.contains(RouteFlags::Onlink));
        assert!(!m
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Destination(_))));
        assert_eq!(parse_route(&m), Some(d));
        let RouteNetlinkMessage::NewRoute(back) =
            roundtrip(RouteNetlinkMessage::NewRoute(route_request(&r)))
        else {
            panic!()
        };
        assert_eq!(parse_route(&back), Some(r));
    }

    #[test]
    fn gre_and_tc_requests() {
        let m = gre_collect_md_request("mf0", 1456, true);
        let RouteNetlinkMessage::NewLink(back) = roundtrip(RouteNetlinkMessage::NewLink(m)) else {
            panic!()
        };
        assert!(back.attributes.contains(&LinkAttribute::Mtu(1456)));
        let info = back
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i),
                _ => None,
            })
            .unwrap();
        assert!(info.contains(&LinkInfo::Kind(InfoKind::GreTun)));
        assert!(info.contains(&LinkInfo::Data(InfoData::GreTun(vec![
            InfoGre::CollectMetadata,
            InfoGre::IFlags(GreIOFlags::Checksum),
            InfoGre::OFlags(GreIOFlags::Checksum),
        ]))));
        let q = clsact_request(3).unwrap();
        assert_eq!(u32::from(q.header.parent), 0xffff_fff1);
        assert_eq!(u32::from(q.header.handle), 0xffff_0000);
        let f = bpf_filter_request(3, true, 9, "meshfwd_in").unwrap();
        assert_eq!(u32::from(f.header.parent), 0xffff_fff2);
        assert_eq!(f.header.info, 0x0001_0300);
        let RouteNetlinkMessage::NewTrafficFilter(back) =
            roundtrip(RouteNetlinkMessage::NewTrafficFilter(f))
        else {
            panic!()
        };
        assert!(back.attributes.contains(&TcAttribute::Kind("bpf".into())));
        let e = bpf_filter_request(3, false, 9, "x").unwrap();
        assert_eq!(u32::from(e.header.parent), 0xffff_fff3);
        assert!(clsact_request(u32::MAX).is_err());
    }

    #[test]
    fn nsid_request_carries_the_fd() {
        let RouteNetlinkMessage::GetNsId(back) =
            roundtrip(RouteNetlinkMessage::GetNsId(nsid_request(7)))
        else {
            panic!()
        };
        assert_eq!(back.attributes, vec![NsidAttribute::Fd(7)]);
    }

    #[test]
    fn ipv6_requests_round_trip() {
        let a: Ipv6Addr = "fd6d:6573:6866:0:c0a8:1020:0:2".parse().unwrap();
        let v: Ipv6Addr = "fd6d:6573:6866:0:c0a8:1020:0:1".parse().unwrap();
        let RouteNetlinkMessage::NewAddress(back) = roundtrip(RouteNetlinkMessage::NewAddress(
            addr6_request(7, a, 128, true),
        )) else {
            panic!()
        };
        let got = parse_addr6(&back).unwrap();
        assert_eq!(
            got,
            Addr6 {
                index: 7,
                addr: a,
                prefix: 128,
                nodad: true,
                tentative: false
            }
        );
        assert!(back.attributes.contains(&AddressAttribute::Flags(
            AddressFlags::Nodad | AddressFlags::Noprefixroute
        )));
        assert!(parse_addr(&back).is_none(), "not an IPv4 address");
        let mut r = Route6::new(Ipv6Addr::UNSPECIFIED, 0, 9);
        r.gateway = Some(v);
        let RouteNetlinkMessage::NewRoute(back) =
            roundtrip(RouteNetlinkMessage::NewRoute(route_request(&r)))
        else {
            panic!()
        };
        assert_eq!(back.header.address_family, AddressFamily::Inet6);
        assert_eq!(parse_route::<Ipv6Addr>(&back), Some(r));
        let mut r = Route6::new(a, 128, 3);
        r.prefsrc = Some(v);
        let m = route_request(&r);
        assert_eq!(parse_route::<Ipv6Addr>(&m), Some(r));
        assert!(parse_route::<Ipv4Addr>(&m).is_none());
    }

    #[test]
    fn addr_request_has_label() {
        let m = addr_request(1, ip("241.2.0.1"), 32, Some("lo:meshfwd"));
        let got = parse_addr(&m).unwrap();
        assert_eq!(
            got,
            Addr4 {
                index: 1,
                addr: ip("241.2.0.1"),
                prefix: 32,
                label: Some("lo:meshfwd".into())
            }
        );
    }

    #[test]
    fn proxy_arp_request_sets_only_proxy_arp() {
        let m = proxy_arp_request(4);
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        // header (16) + IFLA_AF_SPEC { AF_INET { IFLA_INET_CONF { 3: u32 } } }
        assert_eq!(buf.len(), 16 + 4 + 4 + 4 + 8);
        let u16_at = |i: usize| u16::from_ne_bytes([buf[i], buf[i + 1]]);
        assert_eq!(u16_at(16 + 2), 26); // IFLA_AF_SPEC
        assert_eq!(u16_at(16 + 4 + 2), libc::AF_INET as u16);
        assert_eq!(u16_at(16 + 8 + 2) & 0x3fff, 1); // IFLA_INET_CONF (nested)
        assert_eq!(u16_at(16 + 12), 8); // nla len
        assert_eq!(u16_at(16 + 14), 3); // IPV4_DEVCONF_PROXY_ARP
        assert_eq!(&buf[16 + 16..], &1u32.to_ne_bytes());
        let _ = LinkMessage::parse(&buf[..]).unwrap();
    }

    #[test]
    fn link_readiness() {
        let mut l = Link {
            mtu: Some(1476),
            qdisc: Some("noop".into()),
            ..Link::test_veth(3, "mfc1")
        };
        assert_eq!(format_mac(&[0x0a, 0, 0xff, 1, 2, 3]), "0a:00:ff:01:02:03");
        assert!(!l.ready());
        l.qdisc = Some("noqueue".into());
        assert!(l.ready());
        l.oper_up = false;
        assert!(!l.ready());
    }

    #[test]
    fn dumps_work_without_privileges() {
        // Read-only requests are allowed to anyone, in this thread's namespace.
        let mut nl = Netlink::open().unwrap();
        let links = nl.links().unwrap();
        let lo = links.iter().find(|l| l.name == "lo").expect("lo listed");
        assert_eq!(nl.link_by_name("lo").unwrap().as_ref(), Some(lo));
        assert_eq!(nl.link_by_index(lo.index).unwrap().unwrap().name, "lo");
        assert_eq!(nl.link_by_name("nosuchif0").unwrap(), None);
        let addrs = nl.addrs().unwrap();
        assert!(addrs
            .iter()
            .any(|a| a.index == lo.index && a.addr == Ipv4Addr::LOCALHOST && a.prefix == 8));
        nl.routes().unwrap();
    }
}
