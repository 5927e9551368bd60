//! Arbitrary bytes as a SOAP request body: the decoder must answer (a request or an error)
//! without panicking, and in time linear in the input: scripts/fuzz-api.sh runs it with a
//! per-input time limit, so quadratic work on an input counts as a failure.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vireo_api::codec::decode_request(vireo_api::vim25(), data);
});
