#!/usr/bin/env bash
# Fuzzes the SOAP request decoder (api/fuzz, target soap_decode) with cargo-fuzz: arbitrary bytes
# are decoded as a request body; nothing may panic, and no input may take longer than the
# per-input time limit (-timeout), so quadratic work counts as a failure. The corpus starts from
# the recorded pyVmomi requests plus bodies built to be slow for a quadratic decoder (tens of
# thousands of attributes or namespace declarations on one element, deep nesting, long names),
# and is kept in .cache/fuzz/soap_decode between runs; failures land in api/fuzz/artifacts/.
# Usage: scripts/fuzz-api.sh [SECONDS]   (default 60; the test suite runs it briefly)
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-60}
corpus=$root/.cache/fuzz/soap_decode
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

make_seeds() {
    cp "$root"/api/tests/data/vim25-trace-vcsim-esx65/*.req.xml "$corpus/"
    python3 - "$corpus" <<'PY'
import sys
corpus = sys.argv[1]
envelope = ('<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
            '<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">pc</_this>'
            '<specSet{}><objectSet><obj type="Folder">f</obj>{}</objectSet></specSet><options/>'
            '</RetrievePropertiesEx></soapenv:Body></soapenv:Envelope>')
seeds = {
    "attributes": envelope.format("".join(f' a{i}="x"' for i in range(40_000)), ""),
    "xmlns": envelope.format("".join(f' xmlns:p{i}="u{i}"' for i in range(30_000)), ""),
    "deep": envelope.format("", '<selectSet xsi:type="TraversalSpec">' * 10_000 + "</selectSet>" * 10_000),
    "name": envelope.format("", "<" + "n" * 200_000 + "/>"),
}
for name, body in seeds.items():
    with open(f"{corpus}/seed-{name}", "w") as f:
        f.write(body)
PY
}

if [ ! -d "$corpus" ]; then
    mkdir -p "$corpus"
    make_seeds
fi
cd "$root/api/fuzz"
RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$root/target/fuzz cargo fuzz run soap_decode "$corpus" -- \
    -max_total_time="$seconds" -timeout=2 -max_len=524288 -rss_limit_mb=1024
