//! The C memory primitives the compiler and `core` call (there is no libc). Written with
//! string instructions so the compiler cannot turn them back into calls to themselves.

use core::arch::asm;

/// Copies `n` bytes forward.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid and do not overlap.
    unsafe {
        asm!("rep movsb", inout("rdi") dest => _, inout("rsi") src => _, inout("rcx") n => _,
            options(nostack, preserves_flags));
    }
    dest
}

/// Copies `n` bytes between ranges that may overlap.
#[no_mangle]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // SAFETY: forward copying is safe when dest is below src or past its end.
        return unsafe { memcpy(dest, src, n) };
    }
    // SAFETY: copy backwards from the last byte; the direction flag is restored.
    unsafe {
        asm!("std", "rep movsb", "cld",
            inout("rdi") dest.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
            inout("rcx") n => _, options(nostack));
    }
    dest
}

/// Fills `n` bytes with `c`.
#[no_mangle]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range is valid.
    unsafe {
        asm!("rep stosb", inout("rdi") dest => _, inout("rcx") n => _, in("al") c as u8,
            options(nostack, preserves_flags));
    }
    dest
}

/// Compares `n` bytes; returns the difference of the first unequal pair.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller guarantees both ranges hold `n` bytes.
        let (x, y) = unsafe { (a.add(i).read_volatile(), b.add(i).read_volatile()) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// Compares `n` bytes for equality (zero when equal).
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}
