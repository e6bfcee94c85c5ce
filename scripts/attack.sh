#!/usr/bin/env bash
# The black-box probes of issue 18 (rows of ../shared/reliability-tests.md),
# bounded and on loopback only: starts `strata serve` on a fresh data
# directory with short deadlines, runs each probe, prints one line per row
# (PASS or FAIL and what was seen), and stops the server.
#
#   scripts/attack.sh [path/to/strata]     (default: target/release/strata)
#
# Needs python3 (the probes are raw sockets). Exit status: the number of
# rows that failed.
set -euo pipefail
cd "$(dirname "$0")/.."
strata="${1:-target/release/strata}"
[ -x "$strata" ] || { echo "error: $strata not found (cargo build --release)" >&2; exit 2; }
data="$(mktemp -d)"
log="$data/serve.log"
port=$((20000 + RANDOM % 20000))
"$strata" admin create-partner "Attack" --email ops@attack.example --data "$data" --json > "$data/partner.json"
"$strata" serve --data "$data" --listen "127.0.0.1:$port" --header-read-timeout-secs 3 \
    --body-deadline-secs 5 --body-grace-secs 2 --body-min-rate 200 --upload-limit-mib 8 \
    --max-connections 200 > "$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 100); do
    (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

python3 - "$port" "$data/partner.json" "$server" <<'PY'
import json, socket, sys, threading, time, urllib.request

port, partner, pid = int(sys.argv[1]), json.load(open(sys.argv[2])), int(sys.argv[3])
host = f"127.0.0.1:{port}"
failed = 0

def row(name, ok, seen):
    global failed
    failed += 0 if ok else 1
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {seen}", flush=True)

def conn(timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s

def closed_within(s, seconds):
    s.settimeout(seconds)
    try:
        while True:
            if not s.recv(4096):
                return True
    except socket.timeout:
        return False
    except OSError:
        return True

def rss_mib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0

def request(method, path, body=None, headers=None, timeout=10):
    req = urllib.request.Request(f"http://{host}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()

# L1: silent sockets and a stalled HTTP/2 preface are closed at the deadline.
socks = [conn() for _ in range(40)]
half = [conn() for _ in range(10)]
for s in half:
    s.sendall(b"PRI * HTTP/2.0\r\n")
start = time.time()
closed = sum(closed_within(s, 8) for s in socks + half)
row("L1 silent and half-preface connections closed", closed == 50, f"{closed}/50 closed in {time.time() - start:.1f} s")

# L3: over the global cap new connections are closed, and a client gets in once they go.
held = [conn() for _ in range(220)]
time.sleep(0.5)
extra = conn()
refused = closed_within(extra, 2)
for s in held:
    s.close()
time.sleep(0.5)
status, _, _ = request("GET", "/healthz")
row("L3 global connection cap", refused and status == 200, f"over the cap closed: {refused}; afterwards /healthz {status}")

# L2: a body dripping a byte a second on unauthenticated JSON routes.
def drip(path):
    s = conn()
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{".encode())
    start, answer = time.time(), b""
    s.settimeout(0.7)
    while time.time() - start < 30:
        try:
            piece = s.recv(4096)
            if not piece:
                break
            answer += piece
            if b"\r\n\r\n" in answer:
                break
        except socket.timeout:
            try:
                s.sendall(b" ")
            except OSError:
                break
    return answer.split(b"\r\n")[0].decode(errors="replace"), time.time() - start

for path in ["/sessions", "/tokens", "/prints/0123456789abcdef0123456789abcdef/status"]:
    line, took = drip(path)
    row(f"L2 dripping body on {path}", " 408 " in f" {line} " and took < 15, f"{line!r} after {took:.1f} s")

# A1/L4: concurrent wrong passwords and a spray of long names.
before = rss_mib()
results = []
def wrong(i):
    body = json.dumps({"username": partner["username"], "password": f"guess-{i}"}).encode()
    results.append(request("POST", "/sessions", body, {"Content-Type": "application/json"})[0])
threads = [threading.Thread(target=wrong, args=(i,)) for i in range(100)]
for t in threads: t.start()
for t in threads: t.join()
hashed = results.count(403)
grown = rss_mib() - before
row("A1 concurrent wrong passwords", hashed <= 20 and grown < 200,
    f"{hashed} checked, others {sorted(set(r for r in results if r != 403))}, RSS +{grown:.0f} MiB")
statuses = []
for i in range(80):
    body = json.dumps({"username": f"spray-{i}-" + "x" * 60000, "password": "pw"}).encode()
    statuses.append(request("POST", "/sessions", body, {"Content-Type": "application/json"})[0])
row("L4 a spray of 60 KB names from one address", 429 in statuses or 413 in statuses,
    f"first limited at attempt {next((i for i, s in enumerate(statuses) if s in (413, 429)), None)}")

# U1: a declared length over the limit is refused before the body.
s = conn()
s.sendall(f"POST /api3/api_upload_partner_stl HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: {600 << 20}\r\n\r\n".encode())
s.settimeout(5)
try:
    answer = s.recv(4096).split(b"\r\n")[0].decode()
except socket.timeout:
    answer = "no answer"
row("U1 declared 600 MiB upload", "413" in answer, answer)

# U6: headers.
status, headers, _ = request("GET", "/healthz")
status, error_headers, _ = request("GET", "/no/such/route")
row("U6 nosniff on responses and errors",
    headers.get("x-content-type-options") == "nosniff" and error_headers.get("x-content-type-options") == "nosniff",
    f"/healthz {headers.get('x-content-type-options')}, a 404 {error_headers.get('x-content-type-options')}")

still = request("GET", "/healthz")[0]
row("the server is still up", still == 200, f"/healthz {still}, RSS {rss_mib():.0f} MiB")
sys.exit(failed)
PY
