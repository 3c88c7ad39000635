//! Starting the loads of a cold origin's hot cache lines at once.
//!
//! Why: a checkout+return of an origin not used lately reads the first 392
//! bytes of its `Arc` allocation (see `Origin`'s layout note): seven or
//! eight cache lines, as malloc aligns it to 16, and cold ones miss
//! (cachegrind counts ~5.7 misses there per checkout+return). Those reads
//! are spread over ~1,000 instructions, further apart than the CPU looks
//! ahead, so without help each miss waits for the one before it.
//! Prefetching all of them as soon as the origin's address is known lets
//! them load side by side. Only the path that looked the origin up in the
//! shared map does this (the per-thread memo of the last origin returns
//! before it): an origin met there was usually not the last one used.
//!
//! Measured (`cargo bench -p freshpool --bench scaling`, 10,000 origins
//! rotating, six alternating runs each, 2026-11-25): median 938 → 826 ns
//! per checkout+return. Also prefetching the idle record the checkout
//! would take (its address kept in the origin as a hint, written on every
//! return) measured no further gain, and cost 9 instructions per return:
//! not kept.

use std::sync::Arc;

use super::Origin;

/// Bytes of an `Origin`'s allocation that a request reads: the `Arc`
/// counts, everything before the statistics (checkout and return), and the
/// request-duration handle at their start (a line's worth covers it).
const HOT_BYTES: usize = ARC_COUNTS + std::mem::offset_of!(Origin, counters) + LINE;

/// `Arc`'s two counts, before the data. (std does not promise this layout;
/// it holds while `Origin`'s alignment is at most theirs, checked here. Were
/// it wrong, the prefetches would miss their lines: slower, never unsound.)
const ARC_COUNTS: usize = 2 * std::mem::size_of::<usize>();
const _: () = assert!(std::mem::align_of::<Origin>() <= ARC_COUNTS);
// Every line prefetched lies within the allocation (see `line`).
const _: () = assert!(HOT_BYTES + LINE <= ARC_COUNTS + std::mem::size_of::<Origin>());

const LINE: usize = 64;

/// Hints the CPU to load the origin's hot lines (no effect on correctness;
/// a no-op on targets other than x86_64).
#[inline]
pub(super) fn origin(origin: &Arc<Origin>) {
    // The allocation starts with the two counts, before the data pointer.
    let start = Arc::as_ptr(origin).cast::<u8>().wrapping_sub(ARC_COUNTS);
    // (One line more: the allocation need not start on a line boundary.)
    let mut offset = 0;
    while offset < HOT_BYTES + LINE {
        line(start.wrapping_add(offset));
        offset += LINE;
    }
}

#[inline(always)]
fn line(_at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing into the program and
    // never faults, whatever the address (and these all fall within the
    // live `Arc` allocation, asserted above). SSE is part of the x86_64
    // baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(_at.cast::<i8>());
    }
}
