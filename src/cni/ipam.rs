//! Node-local IPAM: which container numbers of this VM's block belong to
//! which (container id, ifname). No cluster state: the block follows from
//! the VM's underlay address, so each node only has to agree with itself.
//!
//! One directory per network (like host-local): a file per lease, named by
//! its overlay address (the IPv4 one; on an IPv6-only network the IPv6 one,
//! whose number may lie beyond the IPv4 block; a dual-stack container's IPv6
//! address has the same number as its IPv4 lease) and holding `{"containerID","ifname","netns"}`, a
//! `last_reserved` file (allocation goes round-robin from there, so a
//! released address is not handed out again at once), and a `lock` file
//! whose `flock` serialises every plugin invocation that reads or changes
//! the directory. Files are written to a temporary name, synced and renamed,
//! so a crash leaves either the old or the new file, never a torn one — and
//! possibly the temporary `.NAME.tmpPID`, which the next invocation removes
//! once it holds the lock ([`sweep_temp_files`]).

use crate::layout::{Layout, Role};
use crate::layout6::{self, Layout6};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const LOCK_FILE: &str = "lock";
const LAST_RESERVED: &str = "last_reserved";
/// A temporary file whose writer may still be alive is kept this long.
const TEMP_GRACE: Duration = Duration::from_secs(60);

/// One recorded allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// IPv4, or IPv6 on an IPv6-only network.
    pub address: IpAddr,
    pub container_id: String,
    pub ifname: String,
    /// The netns key given to the wiring (the veth alias is `meshfwd:<netns>`).
    pub netns: String,
}

#[derive(Serialize, Deserialize)]
struct LeaseFile {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
    #[serde(default)]
    netns: String,
}

impl Lease {
    /// The container number of this lease on `vm`, if it lies in `vm`'s block.
    /// An IPv6 lease counts when bits 64-95 are `vm` and the index is a
    /// container's (the mesh prefix itself is the configuration's business).
    pub fn number(&self, layout: &Layout, vm: Ipv4Addr) -> Option<u32> {
        match self.address {
            IpAddr::V4(a) => match layout.decompose(a) {
                Some(d) if d.vm == vm => match Role::of_host(d.host) {
                    Role::Container(n) => Some(n),
                    _ => None,
                },
                _ => None,
            },
            IpAddr::V6(a) => {
                let raw = u128::from(a);
                let index = Layout6::index_of_raw(raw);
                (Layout6::vm_of_raw(raw) == u32::from(vm) && index >= 2).then(|| index - 1)
            }
        }
    }

    fn is(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname == ifname
    }
}

/// Allocation failures.
#[derive(Debug)]
pub enum IpamError {
    Io(String),
    /// The block has no free number: (block, numbers, recorded here, in use otherwise).
    Full(String),
}

/// The lease directory of one network.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
}

/// Proof that the caller holds the directory's lock (released on drop).
pub struct Locked<'a> {
    store: &'a Store,
    _file: File,
}

fn ctx(what: String) -> impl FnOnce(io::Error) -> String {
    move |e| format!("{what}: {e}")
}

impl Store {
    /// The store in `dir` (created, mode 0755, with its parents if missing).
    pub fn open(dir: &Path) -> Result<Store, String> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(ctx(format!("create IPAM directory {}", dir.display())))?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the directory's exclusive lock, waiting for other invocations.
    pub fn lock(&self) -> Result<Locked<'_>, String> {
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .open(&path)
            .map_err(ctx(format!("open {}", path.display())))?;
        crate::sys::fs::lock_exclusive(&file).map_err(ctx(format!("lock {}", path.display())))?;
        for removed in sweep_temp_files(&self.dir, SystemTime::now()) {
            eprintln!("meshfwd-cni: removed {removed} (left by an interrupted invocation)");
        }
        Ok(Locked {
            store: self,
            _file: file,
        })
    }
}

/// The writer's PID of a temporary file name `.NAME.tmpPID` ([`write_atomic`]).
fn temp_file_pid(name: &str) -> Option<u32> {
    let (base, pid) = name.strip_prefix('.')?.rsplit_once(".tmp")?;
    if base.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the temporary files of interrupted writers from `dir` and returns
/// their paths. Called with the lock held: every writer writes under the
/// lock, so a temporary file seen now belongs to a writer that died; as a
/// second guard (a PID namespace that hides the writer, a PID reused since)
/// a file is kept while its PID is alive here and it is younger than
/// [`TEMP_GRACE`]. Files of other shapes are never touched.
pub fn sweep_temp_files(dir: &Path, now: SystemTime) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(temp_file_pid) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let alive = Path::new("/proc").join(pid.to_string()).exists();
        let young = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .map_or(true, |age| age < TEMP_GRACE);
        if alive && young {
            continue;
        }
        let path = entry.path();
        if fs::remove_file(&path).is_ok() {
            removed.push(path.display().to_string());
        }
    }
    removed
}

/// Writes `bytes` to `dir/name` crash-safely: temporary file, fsync, rename.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let dst = dir.join(name);
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &dst)?;
        // Persist the rename itself.
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("write {}: {e}", dst.display())
    })
}

impl Locked<'_> {
    /// Every lease of the directory (files named by an IPv4 address; other
    /// names, such as leftover temporary files, are ignored).
    pub fn leases(&self) -> Result<Vec<Lease>, String> {
        let dir = &self.store.dir;
        let mut out = Vec::new();
        let entries = fs::read_dir(dir).map_err(ctx(format!("read {}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(ctx(format!("read {}", dir.display())))?;
            let Some(address) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let bytes = fs::read(&path).map_err(ctx(format!("read {}", path.display())))?;
            let f: LeaseFile = serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{} is not a meshfwd-cni lease ({e}); remove it if no container uses {address}",
                    path.display()
                )
            })?;
            out.push(Lease {
                address,
                container_id: f.container_id,
                ifname: f.ifname,
                netns: f.netns,
            });
        }
        out.sort_by_key(|l| match l.address {
            IpAddr::V4(a) => (false, u128::from(u32::from(a))),
            IpAddr::V6(a) => (true, u128::from(a)),
        });
        Ok(out)
    }

    /// The lease of (container id, ifname), if any.
    pub fn find(&self, container_id: &str, ifname: &str) -> Result<Option<Lease>, String> {
        Ok(self
            .leases()?
            .into_iter()
            .find(|l| l.is(container_id, ifname)))
    }

    fn last_reserved(&self) -> Option<IpAddr> {
        fs::read_to_string(self.store.dir.join(LAST_RESERVED))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The lease of (container id, ifname): the existing one (a repeated ADD
    /// gets the same address), else a new one for the next number of `vm`'s
    /// block after the last one handed out that is neither leased nor in
    /// `in_use` (taken on the VM by other means).
    pub fn allocate(
        &self,
        layout: &Layout,
        vm: Ipv4Addr,
        container_id: &str,
        ifname: &str,
        netns: &str,
        in_use: &BTreeSet<u32>,
    ) -> Result<(Lease, bool), IpamError> {
        self.allocate_for(layout, None, vm, container_id, ifname, netns, in_use)
    }

    /// [`Locked::allocate`]; with `ipv6_only`, the lease is the IPv6 address
    /// of the number and the numbers run up to 2^32 − 2, beyond the IPv4 block.
    #[allow(clippy::too_many_arguments)]
    pub fn allocate_for(
        &self,
        layout: &Layout,
        ipv6_only: Option<&Layout6>,
        vm: Ipv4Addr,
        container_id: &str,
        ifname: &str,
        netns: &str,
        in_use: &BTreeSet<u32>,
    ) -> Result<(Lease, bool), IpamError> {
        let leases = self.leases().map_err(IpamError::Io)?;
        if let Some(l) = leases.iter().find(|l| l.is(container_id, ifname)) {
            return Ok((l.clone(), false));
        }
        let leased: BTreeSet<u32> = leases.iter().filter_map(|l| l.number(layout, vm)).collect();
        let max = match ipv6_only {
            Some(_) => layout6::MAX_CONTAINER,
            None => layout.max_container(),
        };
        let start = self
            .last_reserved()
            .and_then(|a| {
                Lease {
                    address: a,
                    container_id: String::new(),
                    ifname: String::new(),
                    netns: String::new(),
                }
                .number(layout, vm)
            })
            .unwrap_or(0);
        let free = (start + 1..=max)
            .chain(1..=start.min(max))
            .find(|n| !leased.contains(n) && !in_use.contains(n));
        let Some(n) = free else {
            let block = layout
                .block(vm)
                .map_or_else(|| "?".to_owned(), |b| b.to_string());
            let others = in_use.difference(&leased).count();
            return Err(IpamError::Full(format!(
                "no free container address left in this VM's block {block}: {max} container numbers, {} leased by meshfwd-cni in {}, {others} in use otherwise on this VM; delete unused containers, or use a layout with more host bits",
                leased.len(),
                self.store.dir.display()
            )));
        };
        let address = match ipv6_only {
            Some(l6) => IpAddr::V6(l6.container_addr(vm, n).unwrap_or(Ipv6Addr::UNSPECIFIED)),
            None => IpAddr::V4(layout.container_addr(vm, n).ok_or_else(|| {
                IpamError::Io(format!("VM address {vm} is outside the underlay"))
            })?),
        };
        let lease = Lease {
            address,
            container_id: container_id.to_owned(),
            ifname: ifname.to_owned(),
            netns: netns.to_owned(),
        };
        self.record(&lease).map_err(IpamError::Io)?;
        // Only a hint for the next allocation: a failure here is harmless.
        let _ = write_atomic(
            &self.store.dir,
            LAST_RESERVED,
            address.to_string().as_bytes(),
        );
        Ok((lease, true))
    }

    /// Writes (or rewrites) the lease file of `l`.
    pub fn record(&self, l: &Lease) -> Result<(), String> {
        let body = serde_json::to_vec(&LeaseFile {
            container_id: l.container_id.clone(),
            ifname: l.ifname.clone(),
            netns: l.netns.clone(),
        })
        .map_err(|e| format!("encode lease: {e}"))?;
        write_atomic(&self.store.dir, &l.address.to_string(), &body)
    }

    /// Removes one lease file (absent is fine).
    pub fn remove(&self, l: &Lease) -> Result<(), String> {
        let path = self.store.dir.join(l.address.to_string());
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("remove {}: {e}", path.display())),
        }
    }

    /// Releases the lease of (container id, ifname); `None` if there was none.
    pub fn release(&self, container_id: &str, ifname: &str) -> Result<Option<Lease>, String> {
        let Some(l) = self.find(container_id, ifname)? else {
            return Ok(None);
        };
        self.remove(&l)?;
        Ok(Some(l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "meshfwd-ipam-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// 3 host bits: reserved, VM, containers 1..=6.
    fn tiny() -> Layout {
        Layout::new(
            "10.0.0.0/13".parse().unwrap(),
            "192.168.0.0/16".parse().unwrap(),
        )
        .unwrap()
    }

    const VM: &str = "192.168.0.5";

    #[test]
    fn allocates_in_order_and_never_the_vm_or_host_part_0() {
        let d = TempDir::new();
        let s = Store::open(&d.0).unwrap();
        let l = tiny();
        assert_eq!(l.max_container(), 6);
        let lock = s.lock().unwrap();
        let none = BTreeSet::new();
        let mut got = Vec::new();
        for i in 0..6 {
            let (lease, new) = lock
                .allocate(&l, ip(VM), &format!("c{i}"), "eth0", "ns", &none)
                .unwrap();
            assert!(new);
            got.push(lease.number(&l, ip(VM)).unwrap());
            let IpAddr::V4(a) = lease.address else {
                panic!("IPv4 lease expected")
            };
            let host = l.decompose(a).unwrap().host;
            assert!(host >= 2, "host part {host}");
        }
        assert_eq!(got, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(l.vm_overlay_addr(ip(VM)), Some(ip("10.0.0.41")));
        assert_eq!(
            lock.leases().unwrap()[0].address,
            IpAddr::V4(ip("10.0.0.42"))
        );
        // full: a clear error naming the block
        let IpamError::Full(msg) = lock
            .allocate(&l, ip(VM), "c7", "eth0", "ns", &none)
            .unwrap_err()
        else {
            panic!("expected Full")
        };
        assert!(msg.contains("10.0.0.40/29"), "{msg}");
        assert!(msg.contains("6 leased"), "{msg}");
    }

    #[test]
    fn ipv6_only_leases_go_beyond_the_ipv4_block() {
        let d = TempDir::new();
        let s = Store::open(&d.0).unwrap();
        let l = tiny();
        let l6 = Layout6::default();
        let lock = s.lock().unwrap();
        let none = BTreeSet::new();
        let (a, _) = lock
            .allocate_for(&l, Some(&l6), ip(VM), "a", "eth0", "ns", &none)
            .unwrap();
        assert_eq!(a.address, IpAddr::V6(l6.container_addr(ip(VM), 1).unwrap()));
        assert_eq!(a.number(&l, ip(VM)), Some(1));
        // round robin from the last one handed out, past the IPv4 block (6)
        std::fs::write(
            s.dir().join(LAST_RESERVED),
            l6.container_addr(ip(VM), 4999).unwrap().to_string(),
        )
        .unwrap();
        let used: BTreeSet<u32> = [5000].into();
        let (b, new) = lock
            .allocate_for(&l, Some(&l6), ip(VM), "b", "eth0", "ns", &used)
            .unwrap();
        assert!(new);
        assert_eq!(b.number(&l, ip(VM)), Some(5001));
        assert!(s.dir().join(b.address.to_string()).exists());
        // both come back from the directory, IPv6 after IPv4, and one lease
        // per container: a repeated ADD gets the same number
        let (c, _) = lock.allocate(&l, ip(VM), "c", "eth0", "ns", &none).unwrap();
        let all: Vec<IpAddr> = lock.leases().unwrap().iter().map(|l| l.address).collect();
        assert_eq!(all, vec![c.address, a.address, b.address]);
        let (again, new) = lock
            .allocate_for(&l, Some(&l6), ip(VM), "b", "eth0", "ns", &none)
            .unwrap();
        assert_eq!((again, new), (b.clone(), false));
        lock.remove(&b).unwrap();
        assert_eq!(lock.leases().unwrap().len(), 2);
        // another VM's IPv6 lease has no number here
        assert_eq!(b.number(&l, ip("192.168.0.9")), None);
    }

    #[test]
    fn release_reuse_round_robin_and_idempotent_add() {
        let d = TempDir::new();
        let s = Store::open(&d.0).unwrap();
        let l = tiny();
        let lock = s.lock().unwrap();
        let none = BTreeSet::new();
        let (a, _) = lock
            .allocate(&l, ip(VM), "a", "eth0", "nsa", &none)
            .unwrap();
        let (b, _) = lock
            .allocate(&l, ip(VM), "b", "eth0", "nsb", &none)
            .unwrap();
        // the same (container, ifname) again: same lease, not new
        let (a2, new) = lock
            .allocate(&l, ip(VM), "a", "eth0", "nsa", &none)
            .unwrap();
        assert_eq!((a2.clone(), new), (a.clone(), false));
        // another ifname of the same container is another lease
        let (a_net1, _) = lock
            .allocate(&l, ip(VM), "a", "net1", "nsa", &none)
            .unwrap();
        assert_ne!(a_net1.address, a.address);
        assert_eq!(lock.release("a", "eth0").unwrap(), Some(a.clone()));
        assert_eq!(lock.release("a", "eth0").unwrap(), None);
        assert_eq!(lock.find("b", "eth0").unwrap(), Some(b));
        // round-robin: the released #1 is not handed out next
        let (c, _) = lock
            .allocate(&l, ip(VM), "c", "eth0", "nsc", &none)
            .unwrap();
        assert_eq!(c.number(&l, ip(VM)), Some(4));
        assert_eq!(c.netns, "nsc");
    }

    #[test]
    fn skips_numbers_in_use_on_the_vm() {
        let d = TempDir::new();
        let s = Store::open(&d.0).unwrap();
        let l = tiny();
        let lock = s.lock().unwrap();
        let in_use: BTreeSet<u32> = [1, 2, 4].into_iter().collect();
        let n = |id: &str| {
            lock.allocate(&l, ip(VM), id, "eth0", "ns", &in_use)
                .unwrap()
                .0
                .number(&l, ip(VM))
                .unwrap()
        };
        assert_eq!([n("a"), n("b"), n("c")], [3, 5, 6]);
        let IpamError::Full(msg) = lock
            .allocate(&l, ip(VM), "d", "eth0", "ns", &in_use)
            .unwrap_err()
        else {
            panic!("expected Full")
        };
        assert!(msg.contains("3 in use otherwise"), "{msg}");
    }

    #[test]
    fn leases_of_another_block_do_not_count_and_junk_is_ignored() {
        let d = TempDir::new();
        let s = Store::open(&d.0).unwrap();
        let l = tiny();
        fs::write(d.0.join(".10.0.0.42.tmp99"), b"torn").unwrap();
        fs::write(d.0.join("last_reserved"), b"garbage").unwrap();
        let lock = s.lock().unwrap();
        let none = BTreeSet::new();
        // a lease of VM .6's block
        lock.allocate(&l, ip("192.168.0.6"), "x", "eth0", "ns", &none)
            .unwrap();
        let (a, _) = lock.allocate(&l, ip(VM), "a", "eth0", "ns", &none).unwrap();
        assert_eq!(a.number(&l, ip(VM)), Some(1));
        assert_eq!(lock.leases().unwrap().len(), 2);
        // a corrupt lease file is an error that says what to do
        fs::write(d.0.join("10.0.0.50"), b"{").unwrap();
        let e = lock.leases().unwrap_err();
        assert!(
            e.contains("remove it if no container uses 10.0.0.50"),
            "{e}"
        );
    }

    #[test]
    fn temp_file_names() {
        assert_eq!(temp_file_pid(".10.0.0.42.tmp123"), Some(123));
        assert_eq!(temp_file_pid(".last_reserved.tmp7"), Some(7));
        for not in [
            "10.0.0.42",
            "lock",
            "last_reserved",
            ".tmp5",
            ".x.tmp",
            ".x.tmp12a",
            "x.tmp12",
            ".x.tmp-1",
        ] {
            assert_eq!(temp_file_pid(not), None, "{not}");
        }
    }

    #[test]
    fn lock_sweeps_temp_files_of_dead_writers() {
        let d = TempDir::new();
        let s = Store::open(&d.0).unwrap();
        let l = tiny();
        let none = BTreeSet::new();
        s.lock()
            .unwrap()
            .allocate(&l, ip(VM), "a", "eth0", "ns", &none)
            .unwrap();
        // a dead writer (no such PID: above any pid_max), an alive one (us),
        // and names that are not temporary files
        let dead = d.0.join(".10.0.0.43.tmp4294967295");
        let dead2 = d.0.join(".last_reserved.tmp4294967294");
        let alive = d.0.join(format!(".10.0.0.44.tmp{}", std::process::id()));
        for p in [&dead, &dead2, &alive] {
            fs::write(p, b"torn").unwrap();
        }
        fs::write(d.0.join(".keep"), b"").unwrap();
        fs::write(d.0.join("notes.tmp1"), b"").unwrap();
        let lock = s.lock().unwrap();
        assert!(!dead.exists() && !dead2.exists());
        assert!(alive.exists(), "a live writer's fresh file is kept");
        assert!(d.0.join(".keep").exists() && d.0.join("notes.tmp1").exists());
        assert!(d.0.join("10.0.0.42").exists() && d.0.join("last_reserved").exists());
        assert_eq!(lock.leases().unwrap().len(), 1);
        drop(lock);
        // ... until it is older than the grace period
        let later = SystemTime::now() + TEMP_GRACE + Duration::from_secs(1);
        let removed = sweep_temp_files(&d.0, later);
        assert_eq!(removed, vec![alive.display().to_string()]);
        assert!(!alive.exists());
    }

    #[test]
    fn parallel_allocations_never_collide() {
        // Threads contend for the flock through their own open file
        // descriptions, exactly like separate plugin processes.
        let d = TempDir::new();
        let l = Layout::classic();
        let threads = 8;
        let per = 10;
        let results = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|sc| {
            for t in 0..threads {
                let (dir, results) = (&d.0, &results);
                sc.spawn(move || {
                    for i in 0..per {
                        let s = Store::open(dir).unwrap();
                        let lock = s.lock().unwrap();
                        let (lease, _) = lock
                            .allocate(
                                &l,
                                ip(VM),
                                &format!("t{t}-{i}"),
                                "eth0",
                                "ns",
                                &BTreeSet::new(),
                            )
                            .unwrap();
                        results.lock().unwrap().push(lease.address);
                    }
                });
            }
        });
        let all = results.into_inner().unwrap();
        let unique: BTreeSet<_> = all.iter().collect();
        assert_eq!(all.len(), threads * per);
        assert_eq!(unique.len(), all.len(), "duplicate addresses: {all:?}");
        let s = Store::open(&d.0).unwrap();
        assert_eq!(s.lock().unwrap().leases().unwrap().len(), threads * per);
    }
}
