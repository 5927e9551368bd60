#!/usr/bin/env bash
# Instructions vireod executes per SOAP request, counted by valgrind's callgrind: repeatable to
# a few tenths of a percent even on a busy shared machine, where wall-clock rates (soap.sh) are
# not. One keep-alive TLS connection from a Python client; after 50 warm-up calls the counters
# are zeroed, N calls made, and the counters dumped. Calls: rpex (soap.sh's RetrievePropertiesEx
# of ha-host's summary.runtime.powerState), fetch (pyVmomi's Fetch of the same property), time
# (CurrentTime), tree (RetrievePropertiesEx of name and parent of every entity by traversal).
#   scripts/bench/soap-instructions.sh [calls-per-kind] [kind...]
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
calls=${1:-1000}
shift || true
kinds=("$@")
[ ${#kinds[@]} -gt 0 ] || kinds=(rpex fetch time tree)
target=${CARGO_TARGET_DIR:-$root/target}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
[ -x "$root/.cache/venv/bin/python" ] || scripts/setup/20-python-venv.sh
# VIREOD=path measures that binary instead (e.g. a copy of the build before a change).
vireod=${VIREOD:-}
[ -n "$vireod" ] || { cargo build --release -q -p vireo-agent --bin vireod; vireod=$target/release/vireod; }

work=$(mktemp -d /tmp/vireo-bench.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
VIREO_ROOT_PASSWORD=bench-password VIREO_LOG=warn valgrind --tool=callgrind \
    --callgrind-out-file="$work/callgrind.%p" "$vireod" --listen "127.0.0.1:$port" \
    --data-dir "$work/data" >"$work/vireod.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 600); do
    curl -skf "https://127.0.0.1:$port/sdk/vimServiceVersions.xml" >/dev/null && break
    sleep 0.5
done
for kind in "${kinds[@]}"; do
    "$root/.cache/venv/bin/python" - "$port" "$calls" "$kind" "$pid" <<'PY'
import http.client, ssl, subprocess, sys
port, calls, kind, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
def envelope(body):
    return ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>%s</soapenv:Body></soapenv:Envelope>' % body).encode()
def rpex(props, objects):
    return envelope('<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">ha-property-collector</_this>'
                    '<specSet>%s%s</specSet><options/></RetrievePropertiesEx>' % (props, objects))
traversal = ''.join('<selectSet xsi:type="TraversalSpec"><name>%s</name><type>%s</type><path>%s</path><skip>false</skip>%s</selectSet>'
                    % (name, ty, path, ''.join('<selectSet><name>%s</name></selectSet>' % n for n in then))
                    for name, ty, path, then in (("f", "Folder", "childEntity", "fdc"), ("d", "Datacenter", "hostFolder", "f"),
                                                 ("c", "ComputeResource", "host", "")))
bodies = {
    "rpex": rpex('<propSet><type>HostSystem</type><pathSet>summary.runtime.powerState</pathSet></propSet>',
                 '<objectSet><obj type="HostSystem">ha-host</obj></objectSet>'),
    "fetch": envelope('<Fetch xmlns="urn:vim25"><_this type="HostSystem">ha-host</_this><prop>summary.runtime.powerState</prop></Fetch>'),
    "time": envelope('<CurrentTime xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this></CurrentTime>'),
    "tree": rpex('<propSet><type>ManagedEntity</type><pathSet>name</pathSet><pathSet>parent</pathSet></propSet>',
                 '<objectSet><obj type="Folder">ha-folder-root</obj><skip>false</skip>%s</objectSet>' % traversal),
}
headers = {"SOAPAction": '"urn:vim25/8.0.3.0"', "Content-Type": "text/xml; charset=utf-8"}
connection = http.client.HTTPSConnection("127.0.0.1", port, context=ssl._create_unverified_context(), timeout=600)
def post(body):
    connection.request("POST", "/sdk", body, headers)
    response = connection.getresponse()
    data = response.read()
    if response.status != 200:
        sys.exit(f"{kind}: HTTP {response.status}: {data[:500]!r}")
    return response
login = post(envelope('<Login xmlns="urn:vim25"><_this type="SessionManager">ha-sessionmgr</_this>'
                      '<userName>root</userName><password>bench-password</password></Login>'))
headers["Cookie"] = login.getheader("Set-Cookie").split(";")[0]
for _ in range(50):
    post(bodies[kind])
subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
for _ in range(calls):
    post(bodies[kind])
subprocess.run(["callgrind_control", "-d", kind, pid], check=True, capture_output=True)
PY
    dump=$(grep -l "^desc: Trigger: dump $kind\$" "$work"/callgrind.*)
    total=$(awk '/^summary:/ {print $2; exit}' "$dump")
    echo "$kind: $((total / calls)) instructions per request ($calls requests)"
done
