//! Arbitrary bytes as a virtio-blk queue (descriptor table, avail ring, buffers): the device
//! must never panic or hang, whatever the guest wrote.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vireo_vmm::devices::virtio::fuzzing::serve_block_queue_from_bytes(data);
});
