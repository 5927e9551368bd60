#!/usr/bin/env bash
# SOAP throughput of vireod: RetrievePropertiesEx of ha-host's summary.runtime.powerState under
# wrk (Debian's package; a Lua script adds body, SOAPAction and session cookie) over keep-alive
# TLS with 1 and 8 connections, then the same call through pyVmomi. Uses a release build. As the
# floor of what any TLS HTTP server reaches here, nginx (Debian's package) answers the same
# request with a fixed copy of vireod's response, with the same certificate and as many worker
# processes as vireod has threads.
# On a shared machine one run of each proves little (nginx alone varies by a third between
# runs), so the runs are interleaved: each round runs vireod and nginx (alternately first) on
# 1 connection, then on 8, and the rounds' medians are printed at the end: requests/s of each
# side, the ratio vireod/nginx (the median of the rounds' ratios), the CPU time per request
# of each server (utime+stime from /proc, and each apart: vireod's process; nginx's master
# and workers) and its threads' context switches per request (on these 2 cores wrk runs beside
# the server and preempts it when woken, more or less often from run to run).
# Also prints p50/p99 and vireod's RSS (idle and after load).
#   scripts/bench/soap.sh [seconds-per-run] [rounds]
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
duration=${1:-5}
rounds=${2:-5}
target=${CARGO_TARGET_DIR:-$root/target}

missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ -x "$root/.cache/venv/bin/python" ] || scripts/setup/20-python-venv.sh
# VIREOD=path measures that binary instead (e.g. a copy of the build before a change).
vireod=${VIREOD:-}
[ -n "$vireod" ] || { cargo build --release -q -p vireo-agent --bin vireod; vireod=$target/release/vireod; }

work=$(mktemp -d /tmp/vireo-bench.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
password=bench-password
VIREO_ROOT_PASSWORD=$password VIREO_LOG=warn "$vireod" --listen "127.0.0.1:$port" --data-dir "$work/data" \
    >"$work/vireod.log" 2>&1 &
pid=$!
nginx_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")"; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    curl -skf "https://127.0.0.1:$port/sdk/vimServiceVersions.xml" >/dev/null && break
    sleep 0.1
done

envelope() {
    printf '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>%s</soapenv:Body></soapenv:Envelope>' "$1"
}
login=$(envelope "<Login xmlns=\"urn:vim25\"><_this type=\"SessionManager\">ha-sessionmgr</_this><userName>root</userName><password>$password</password></Login>")
cookie=$(curl -sk -D - -o /dev/null -H 'SOAPAction: "urn:vim25/8.0.3.0"' -H 'Content-Type: text/xml' \
    --data-binary "$login" "https://127.0.0.1:$port/sdk" | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\).*/\1/p')
[ -n "$cookie" ] || { echo "login failed"; exit 1; }
body=$(envelope '<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">ha-property-collector</_this><specSet><propSet><type>HostSystem</type><pathSet>summary.runtime.powerState</pathSet></propSet><objectSet><obj type="HostSystem">ha-host</obj></objectSet></specSet><options/></RetrievePropertiesEx>')
check=$(curl -sk -H 'SOAPAction: "urn:vim25/8.0.3.0"' -H "Cookie: $cookie" --data-binary "$body" "https://127.0.0.1:$port/sdk")
grep -q '>poweredOn</val>' <<<"$check" || { echo "unexpected response: $check"; exit 1; }

grep -q "'" <<<"$check" && { echo "response holds a quote; cannot embed it in nginx.conf"; exit 1; }
cat >"$work/nginx.conf" <<NGINX
worker_processes $(nproc);
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $work;
    server {
        listen 127.0.0.1:$nginx_port ssl;
        ssl_certificate $work/data/ssl/rui.crt;
        ssl_certificate_key $work/data/ssl/rui.key;
        keepalive_requests 100000000;
        default_type "text/xml; charset=utf-8";
        location = /sdk { return 200 '$check'; }
    }
}
NGINX
/usr/sbin/nginx -c "$work/nginx.conf"

cat >"$work/rpex.lua" <<LUA
wrk.method = "POST"
wrk.body = [[$body]]
wrk.headers["Content-Type"] = "text/xml; charset=utf-8"
wrk.headers["SOAPAction"] = '"urn:vim25/8.0.3.0"'
wrk.headers["Cookie"] = '$cookie'
done = function(summary, latency, requests)
    io.write(string.format("  => %.0f req/s, p50 %.3f ms, p99 %.3f ms, errors %d\n",
        summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
        latency:percentile(99) / 1000, summary.errors.status + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA
rss() { awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' "/proc/$pid/status"; }
# CPU ticks of the given processes together: "user system".
cpu_ticks() { for p in "$@"; do cat "/proc/$p/stat"; done | awk '{user += $14; sys += $15} END {print user, sys}'; }
# Context switches of the given processes' threads together: "voluntary involuntary".
switches() {
    for p in "$@"; do cat /proc/"$p"/task/*/status 2>/dev/null; done |
        awk '/^voluntary_ctxt_switches/ {v += $2} /^nonvoluntary_ctxt_switches/ {n += $2} END {print v + 0, n + 0}'
}
nginx_pids() { local master; master=$(cat "$work/nginx.pid"); echo "$master" $(ps -o pid= --ppid "$master"); }
# wrk against PORT with N connections; output in $work/wrk.out, its CPU time in $work/wrk.time.
wrk_to() {
    local threads=$(( $2 > 1 ? 2 : 1 ))
    /usr/bin/time -f "%U %S" -o "$work/wrk.time" \
        wrk -t"$threads" -c"$2" -d"${duration}s" -s "$work/rpex.lua" "https://127.0.0.1:$1/sdk" >"$work/wrk.out"
}
# One wrk run of SERVER (vireod or nginx) with N connections in round R: prints its line and
# appends "R N SERVER req/s cpu-us-per-request user-us system-us switches-per-request
# involuntary-per-request" to $work/results.
run() {
    local round=$1 server=$2 connections=$3 port_of pids before after switched_before switched_after requests rate
    if [ "$server" = vireod ]; then port_of=$port; pids=$pid; else port_of=$nginx_port; pids=$(nginx_pids); fi
    # shellcheck disable=SC2086 # the pids are words
    before=$(cpu_ticks $pids)
    # shellcheck disable=SC2086
    switched_before=$(switches $pids)
    wrk_to "$port_of" "$connections"
    # shellcheck disable=SC2086
    after=$(cpu_ticks $pids)
    # shellcheck disable=SC2086
    switched_after=$(switches $pids)
    if grep -q 'Non-2xx' "$work/wrk.out" || ! grep -q '=>.*errors 0$' "$work/wrk.out"; then
        cat "$work/wrk.out"; echo "$server answered with errors"; exit 1
    fi
    requests=$(grep -oE '[0-9]+ requests in' "$work/wrk.out" | grep -oE '^[0-9]+')
    rate=$(grep -oE '=> [0-9]+ req/s' "$work/wrk.out" | grep -oE '[0-9]+')
    awk -v r="$round" -v s="$server" -v c="$connections" -v rate="$rate" -v n="$requests" \
        -v before="$before" -v after="$after" -v hz="$(getconf CLK_TCK)" -v w="$(cat "$work/wrk.time")" \
        -v sb="$switched_before" -v sa="$switched_after" \
        -v line="$(grep -oE '=>.*' "$work/wrk.out")" -v load="$(cut -d' ' -f1 /proc/loadavg)" -v out="$work/results" \
        'BEGIN { split(w, t, " "); split(before, b, " "); split(after, a, " "); split(sb, x, " "); split(sa, y, " ")
                 user = (a[1] - b[1]) * 1e6 / hz / n; sys = (a[2] - b[2]) * 1e6 / hz / n
                 switched = (y[1] - x[1] + y[2] - x[2]) / n; preempted = (y[2] - x[2]) / n
                 printf "  %-6s %d conn: %s; CPU per request %.1f us (user %.1f, system %.1f; wrk %.1f us), context switches per request %.2f (involuntary %.2f), load %s\n", s, c, line, user + sys, user, sys, (t[1] + t[2]) * 1e6 / n, switched, preempted, load
                 printf "%d %d %s %d %.2f %.2f %.2f %.3f %.3f\n", r, c, s, rate, user + sys, user, sys, switched, preempted >> out }'
}
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
# Column COLUMN (4 req/s, 5 CPU us, 6 user, 7 system, 8 context switches, 9 involuntary ones; per
# request) of SERVER's results with N connections.
column() { awk -v s="$1" -v c="$2" -v k="$3" '$3 == s && $2 == c {print $k}' "$work/results"; }
echo "vireod idle RSS: $(rss); ${rounds} rounds of ${duration}s per run (load $(cut -d' ' -f1-3 /proc/loadavg))"
: >"$work/results"
for round in $(seq "$rounds"); do
    echo "== round $round"
    for connections in 1 8; do
        # Who runs first alternates, so that neither side always inherits the other's wake.
        if [ $((round % 2)) = 1 ]; then order="vireod nginx"; else order="nginx vireod"; fi
        for server in $order; do run "$round" "$server" "$connections"; done
    done
done
echo "== medians over $rounds rounds (load $(cut -d' ' -f1-3 /proc/loadavg))"
for connections in 1 8; do
    ratio=$(awk -v c="$connections" '$2 == c {rate[$1, $3] = $4} END {for (k in rate) {split(k, p, SUBSEP); if (p[2] == "vireod") print rate[k] / rate[p[1], "nginx"]}}' "$work/results" | median)
    printf "  %d conn: vireod %.0f req/s, nginx %.0f req/s, ratio %.2f (rounds: %s); CPU per request vireod %.1f us (user %.1f, system %.1f), nginx %.1f us (user %.1f, system %.1f); context switches per request vireod %.2f (involuntary %.2f), nginx %.2f (involuntary %.2f)\n" \
        "$connections" "$(column vireod "$connections" 4 | median)" "$(column nginx "$connections" 4 | median)" "$ratio" \
        "$(awk -v c="$connections" '$2 == c {rate[$1, $3] = $4} END {for (r = 1; rate[r, "vireod"]; r++) printf "%s%.2f", (r > 1 ? " " : ""), rate[r, "vireod"] / rate[r, "nginx"]}' "$work/results")" \
        "$(column vireod "$connections" 5 | median)" "$(column vireod "$connections" 6 | median)" "$(column vireod "$connections" 7 | median)" \
        "$(column nginx "$connections" 5 | median)" "$(column nginx "$connections" 6 | median)" "$(column nginx "$connections" 7 | median)" \
        "$(column vireod "$connections" 8 | median)" "$(column vireod "$connections" 9 | median)" \
        "$(column nginx "$connections" 8 | median)" "$(column nginx "$connections" 9 | median)"
done
echo "vireod RSS after load: $(rss)"
echo "== pyVmomi, 1 client, ${duration}s"
"$root/.cache/venv/bin/python" - "$port" "$password" "$duration" <<'PY'
import sys, time
from pyVim.connect import SmartConnect, Disconnect
from pyVmomi import vim, vmodl
port, password, duration = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
si = SmartConnect(host="127.0.0.1", port=port, user="root", pwd=password, disableSslCertValidation=True)
PC = vmodl.query.PropertyCollector
spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=vim.HostSystem("ha-host"))],
                     propSet=[PC.PropertySpec(type=vim.HostSystem, pathSet=["summary.runtime.powerState"])])
pc, options, samples = si.content.propertyCollector, PC.RetrieveOptions(), []
end = time.monotonic() + duration
while time.monotonic() < end:
    start = time.perf_counter()
    pc.RetrievePropertiesEx([spec], options)
    samples.append(time.perf_counter() - start)
samples.sort()
print(f"  => {len(samples) / duration:.0f} req/s, p50 {samples[len(samples) // 2] * 1e3:.3f} ms, "
      f"p99 {samples[int(len(samples) * 0.99)] * 1e3:.3f} ms")
Disconnect(si)
PY
echo "vireod RSS at end: $(rss)"
