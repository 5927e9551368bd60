//! PC legacy devices on port I/O: COM1, i8042 (reset line), the 8254 PIT, CMOS RTC, ACPI PM1
//! registers, and the boot-marker port of our test guest.

pub mod boot_marker;
pub mod i8042;
pub mod pit;
pub mod pm;
pub mod rtc;
pub mod serial;
pub mod serial_log;
