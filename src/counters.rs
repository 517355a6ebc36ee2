//! Per-worker counters: plain `u64`s on the hot path, published to atomics once
//! per loop iteration so readers (stats file, logs) never touch a worker's cache
//! lines while it is counting.

use crate::datapath::DropReason;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! io_errors {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, )*) => {
        /// I/O outcomes that are not datapath decisions. Transient ones are counted,
        /// never fatal.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u8)]
        pub enum IoError { $( $(#[$doc])* $variant, )* }

        impl IoError {
            pub const ALL: &'static [IoError] = &[$(IoError::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();
            pub const fn name(self) -> &'static str {
                match self { $(IoError::$variant => $name,)* }
            }
        }
    };
}

io_errors! {
    /// sendmmsg: ENOBUFS (queue full under pressure).
    SendNoBufs => "send_enobufs",
    /// sendmmsg: EAGAIN, the socket send buffer is full.
    SendWouldBlock => "send_eagain",
    /// sendmmsg: EHOSTUNREACH / ENETUNREACH / EHOSTDOWN / ECONNREFUSED: peer VM unreachable.
    SendUnreachable => "send_unreachable",
    /// sendmmsg: EMSGSIZE, larger than the underlay path allows.
    SendMsgSize => "send_emsgsize",
    /// sendmmsg: EACCES / EPERM (broadcast destination, firewall).
    SendDenied => "send_denied",
    /// sendmmsg: anything else.
    SendOther => "send_other",
    /// recvmmsg failed with something other than EAGAIN.
    Recv => "recv",
    /// Datagrams the kernel dropped because a receive socket's buffer was full
    /// (SO_RXQ_OVFL).
    RxOverflow => "rx_overflow",
    /// ICMP host/net unreachable about a GRE packet we sent (peer VM down: ARP
    /// failed, or a router said so).
    IcmpUnreachable => "icmp_unreachable",
    /// ICMP port unreachable from a peer (a kernel GRE tunnel refused our key).
    IcmpPortUnreachable => "icmp_port_unreachable",
    /// ICMP protocol unreachable from a peer (nothing there receives GRE).
    IcmpProtoUnreachable => "icmp_proto_unreachable",
    /// ICMP fragmentation needed from the underlay path.
    IcmpFragNeeded => "icmp_frag_needed",
    /// Any other ICMP error about our packets.
    IcmpOther => "icmp_other",
    /// write to the TUN failed.
    TunWrite => "tun_write",
    /// Packets queued on a receive socket before its shard filter was attached.
    StartupFlush => "startup_flush",
}

impl IoError {
    pub fn from_send_errno(errno: i32) -> IoError {
        match errno {
            libc::ENOBUFS => IoError::SendNoBufs,
            libc::EAGAIN => IoError::SendWouldBlock,
            libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ECONNREFUSED => {
                IoError::SendUnreachable
            }
            libc::EMSGSIZE => IoError::SendMsgSize,
            libc::EACCES | libc::EPERM => IoError::SendDenied,
            _ => IoError::SendOther,
        }
    }
}

/// The counters one worker keeps while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub tun_rx_packets: u64,
    pub tun_rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tun_tx_packets: u64,
    pub tun_tx_bytes: u64,
    /// ICMP "fragmentation needed" messages written to the TUN (PMTU discovery).
    pub icmp_tx: u64,
    /// ICMP replies not sent because of the rate limit.
    pub icmp_rate_limited: u64,
    /// GRE packets carrying fragments of an inner packet (without DF) that was
    /// too big for the underlay; each is also counted in `tx_packets`.
    pub tx_fragmented: u64,
    pub drops: [u64; DropReason::COUNT],
    pub errors: [u64; IoError::COUNT],
}

impl Counters {
    #[inline]
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r.index()] += 1;
    }

    #[inline]
    pub fn error(&mut self, e: IoError) {
        self.errors[e as usize] += 1;
    }

    pub fn add(&mut self, o: &Counters) {
        self.tun_rx_packets += o.tun_rx_packets;
        self.tun_rx_bytes += o.tun_rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tun_tx_packets += o.tun_tx_packets;
        self.tun_tx_bytes += o.tun_tx_bytes;
        self.icmp_tx += o.icmp_tx;
        self.icmp_rate_limited += o.icmp_rate_limited;
        self.tx_fragmented += o.tx_fragmented;
        for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
            *a += b;
        }
        for (a, b) in self.errors.iter_mut().zip(o.errors.iter()) {
            *a += b;
        }
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub fn total_errors(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// The flat JSON object of the stats file (every reason present, zero or not).
    pub fn to_json(&self, workers: usize) -> serde_json::Value {
        let drops: serde_json::Map<_, _> = DropReason::ALL
            .iter()
            .map(|r| (r.name().to_string(), self.drops[r.index()].into()))
            .collect();
        let errors: serde_json::Map<_, _> = IoError::ALL
            .iter()
            .map(|e| (e.name().to_string(), self.errors[*e as usize].into()))
            .collect();
        serde_json::json!({
            "workers": workers,
            "tun_rx_packets": self.tun_rx_packets,
            "tun_rx_bytes": self.tun_rx_bytes,
            "tx_packets": self.tx_packets,
            "tx_bytes": self.tx_bytes,
            "rx_packets": self.rx_packets,
            "rx_bytes": self.rx_bytes,
            "tun_tx_packets": self.tun_tx_packets,
            "tun_tx_bytes": self.tun_tx_bytes,
            "icmp_tx": self.icmp_tx,
            "icmp_rate_limited": self.icmp_rate_limited,
            "tx_fragmented": self.tx_fragmented,
            "drops": drops,
            "errors": errors,
        })
    }

    /// One log line: totals, then only the non-zero drop reasons and errors.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = format!(
            "tun->underlay {} pkts {} B sent {} pkts; underlay->tun {} pkts received {} pkts {} B delivered",
            self.tun_rx_packets, self.tun_rx_bytes, self.tx_packets, self.rx_packets, self.tun_tx_packets, self.tun_tx_bytes
        );
        if self.icmp_tx + self.icmp_rate_limited + self.tx_fragmented > 0 {
            let _ = write!(
                s,
                "; pmtu: {} icmp sent, {} rate-limited, {} fragments sent",
                self.icmp_tx, self.icmp_rate_limited, self.tx_fragmented
            );
        }
        let _ = write!(s, "; drops {}", self.total_drops());
        for r in DropReason::ALL {
            let n = self.drops[r.index()];
            if n > 0 {
                let _ = write!(s, " {}={n}", r.name());
            }
        }
        let _ = write!(s, "; errors {}", self.total_errors());
        for e in IoError::ALL {
            let n = self.errors[*e as usize];
            if n > 0 {
                let _ = write!(s, " {}={n}", e.name());
            }
        }
        s
    }
}

/// The published copy of one worker's counters, on its own cache lines.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct SharedCounters {
    fields: [AtomicU64; 11],
    drops: [AtomicU64; DropReason::COUNT],
    errors: [AtomicU64; IoError::COUNT],
}

impl SharedCounters {
    /// Called by the owning worker only: plain stores, no read-modify-write.
    pub fn publish(&self, c: &Counters) {
        let f = [
            c.tun_rx_packets,
            c.tun_rx_bytes,
            c.tx_packets,
            c.tx_bytes,
            c.rx_packets,
            c.rx_bytes,
            c.tun_tx_packets,
            c.tun_tx_bytes,
            c.icmp_tx,
            c.icmp_rate_limited,
            c.tx_fragmented,
        ];
        for (a, v) in self.fields.iter().zip(f) {
            a.store(v, Relaxed);
        }
        for (a, v) in self.drops.iter().zip(c.drops.iter()) {
            a.store(*v, Relaxed);
        }
        for (a, v) in self.errors.iter().zip(c.errors.iter()) {
            a.store(*v, Relaxed);
        }
    }

    pub fn snapshot(&self) -> Counters {
        let f: Vec<u64> = self.fields.iter().map(|a| a.load(Relaxed)).collect();
        let mut c = Counters {
            tun_rx_packets: f[0],
            tun_rx_bytes: f[1],
            tx_packets: f[2],
            tx_bytes: f[3],
            rx_packets: f[4],
            rx_bytes: f[5],
            tun_tx_packets: f[6],
            tun_tx_bytes: f[7],
            icmp_tx: f[8],
            icmp_rate_limited: f[9],
            tx_fragmented: f[10],
            ..Default::default()
        };
        for (v, a) in c.drops.iter_mut().zip(self.drops.iter()) {
            *v = a.load(Relaxed);
        }
        for (v, a) in c.errors.iter_mut().zip(self.errors.iter()) {
            *v = a.load(Relaxed);
        }
        c
    }
}

/// Sums the snapshots of all workers.
pub fn aggregate(workers: &[SharedCounters]) -> Counters {
    let mut total = Counters::default();
    for w in workers {
        total.add(&w.snapshot());
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_snapshot_aggregate() {
        let mut a = Counters {
            tx_packets: 3,
            ..Default::default()
        };
        a.drop(DropReason::SpoofedSource);
        a.error(IoError::SendNoBufs);
        let shared = [SharedCounters::default(), SharedCounters::default()];
        shared[0].publish(&a);
        shared[1].publish(&a);
        let t = aggregate(&shared);
        assert_eq!(t.tx_packets, 6);
        assert_eq!(t.drops[DropReason::SpoofedSource.index()], 2);
        let j = t.to_json(2);
        assert_eq!(j["drops"]["spoofed_source"], 2);
        assert_eq!(j["drops"]["key_mismatch"], 0);
        assert_eq!(j["errors"]["send_enobufs"], 2);
        assert!(t.summary().contains("spoofed_source=2"));
        assert_eq!(
            IoError::from_send_errno(libc::EHOSTUNREACH),
            IoError::SendUnreachable
        );
    }
}
