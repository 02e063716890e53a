#!/usr/bin/env python3
"""Whether memory held after many connections close is retained by the allocator or leaked.

Starts `codmir serve` (release build) on a fresh database, then three times: opens N idle
connections that each send part of a request head (so the server holds a buffer for each),
samples the server's RSS, closes them all, waits, samples again. A leak grows the plateau
after every cycle; allocator retention keeps it level. Run once as is and once with
MIMALLOC_PURGE_DELAY=0 in the environment (mimalloc then returns freed pages at once).

    python3 scripts/connection-memory.py [N]        (default 15000; needs `ulimit -n` above N)
"""
import os, resource, socket, subprocess, sys, tempfile, time, urllib.request

n = int(sys.argv[1]) if len(sys.argv) > 1 else 15000
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = max(hard, n + 2000)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))  # root may raise the hard limit
except (ValueError, OSError):
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.path.join(root, "target/release/codmir")
tmp = tempfile.mkdtemp()
port = 18700 + os.getpid() % 200
server = subprocess.Popen(
    [binary, "serve", "--database-url", f"sqlite://{tmp}/c.db", "--listen", f"127.0.0.1:{port}",
     "--max-connections", str(n + 1000), "--header-read-timeout", "120s"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
        break
    except Exception:
        time.sleep(0.1)

def rss_mib():
    with open(f"/proc/{server.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

print(f"idle: {rss_mib():.1f} MiB   (MIMALLOC_PURGE_DELAY={os.environ.get('MIMALLOC_PURGE_DELAY', 'default')})")
try:
    for cycle in range(1, 4):
        conns = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: " + b"p" * 2000)
            conns.append(s)
        time.sleep(3)
        held = rss_mib()
        for s in conns:
            s.close()
        time.sleep(15)
        after = rss_mib()
        time.sleep(30)
        later = rss_mib()
        print(f"cycle {cycle}: {n} connections open {held:.1f} MiB; closed +15 s {after:.1f} MiB; +45 s {later:.1f} MiB")
finally:
    server.kill()
