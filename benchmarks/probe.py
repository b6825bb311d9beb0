"""A latency probe in a process of its own: GET a URL on one keep-alive connection every
INTERVAL seconds and print each round trip's seconds, one a line, until SIGINT.

    python benchmarks/probe.py http://127.0.0.1:8000/livez [INTERVAL]

Used by `generation.py --loop-lag` and tests/e2e/test_load.py: a probe in the load's own
process would be delayed by the load's coroutines and measure the client, not the server.
"""

import http.client
import sys
import time
import urllib.parse

url = urllib.parse.urlsplit(sys.argv[1])
interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
try:
    while True:
        started = time.perf_counter()
        conn.request("GET", url.path)
        conn.getresponse().read()
        print(time.perf_counter() - started, flush=True)
        time.sleep(interval)
except KeyboardInterrupt:
    pass
