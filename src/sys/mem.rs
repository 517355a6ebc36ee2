//! Memory the datapath allocates once at start-up.

use std::sync::atomic::AtomicU32;

/// `len` atomic counters, all zero, from the zeroing allocator: pages nobody
/// touches stay unmapped, so a large table costs memory only where it is used.
pub fn zeroed_atomic_u32s(len: usize) -> Box<[AtomicU32]> {
    let zeroed: Box<[u32]> = vec![0u32; len].into_boxed_slice();
    // SAFETY: AtomicU32 has the same size, alignment and bit validity as u32
    // (documented), so a boxed slice of one is a valid boxed slice of the other.
    unsafe { Box::from_raw(Box::into_raw(zeroed) as *mut [AtomicU32]) }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    #[test]
    fn counters_start_at_zero_and_count() {
        let t = super::zeroed_atomic_u32s(1000);
        assert_eq!(t.len(), 1000);
        assert!(t.iter().all(|a| a.load(Ordering::Relaxed) == 0));
        t[999].fetch_add(3, Ordering::Relaxed);
        assert_eq!(t[999].load(Ordering::Relaxed), 3);
    }
}
