"""Drives a release segmentd over loopback and prints measured figures (see scripts/bench.sh)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

BIN = "target/release/segmentd"
HEADERS = {"x-api-key": "demo", "Authorization": "Bearer demo", "x-gw-ims-org-id": "demo@AdobeOrg",
           "Content-Type": "application/json"}


class PeakRss:
    """Samples a process's resident memory every 50 ms while in use; `.peak_mb` is the highest seen."""

    def __init__(self, pid):
        self.pid, self.peak_mb, self.running = pid, 0.0, True
        self.before_mb = self.current_mb()

    def current_mb(self):
        with open(f"/proc/{self.pid}/status") as status:
            return next((int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS")), 0.0)

    def _sample(self):
        while self.running:
            self.peak_mb = max(self.peak_mb, self.current_mb())
            time.sleep(0.05)

    def __enter__(self):
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


def call(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers=HEADERS)
    with urllib.request.urlopen(request, timeout=600) as response:
        text = response.read()
        return json.loads(text) if text else None


def timed(label, command):
    """Runs `command`; returns its seconds, its standard output and its own peak RSS in MB.

    The peak is the child's own (wait4), not RUSAGE_CHILDREN: bench.sh execs this script after
    `cargo build`, whose compiler would otherwise count as a child of this process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{label} failed ({child.returncode}): {err.read().strip()}")
        out.seek(0)
        return seconds, out.read(), usage.ru_maxrss / 1024


def preview(base, expression):
    started = time.perf_counter()
    created = call(base, "POST", "/data/core/ups/preview", {"predicateExpression": expression})
    first = None
    for _ in range(200000):
        estimate = call(base, "GET", "/data/core/ups/estimate/" + created["previewId"])
        if first is None and estimate["profilesReadSoFar"] > 0:
            first = time.perf_counter() - started
        if estimate["state"] in ("RESULT_READY", "FAILED"):
            return first, time.perf_counter() - started, estimate, created["previewId"]
    raise SystemExit("preview did not finish")


def main():
    profiles = int(sys.argv[1])
    # BENCH_KEEP_DIR=DIR keeps the generated store in DIR and reuses it on the next run
    # (skipping generation and ingest), for re-measuring previews and jobs on a large store.
    keep = os.environ.get("BENCH_KEEP_DIR")
    work = keep or tempfile.mkdtemp(prefix="segmentd-bench-")
    data_in, data_dir = os.path.join(work, "input"), os.path.join(work, "data")
    loaded = os.path.join(work, "loaded")
    try:
        if keep and os.path.exists(loaded):
            print(f"reusing the store of {profiles} profiles in {work}")
        else:
            shutil.rmtree(data_in, ignore_errors=True)
            shutil.rmtree(data_dir, ignore_errors=True)
            # Events end now, so relative-date predicates ("in the last 30 days") match generated data.
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            # BENCH_CHUNK_PROFILES=N generates and ingests N profiles at a time (disjoint people:
            # --first-index 0, N, 2N, ...), deleting each part's input once loaded: a 5M store's
            # input (~30 GB) need not fit the disk beside the store. Parts after the first load into
            # a non-empty store.
            chunk = int(os.environ.get("BENCH_CHUNK_PROFILES", profiles))
            generate_seconds = ingest_seconds = peak_mb = 0.0
            for part, start in enumerate(range(0, profiles, chunk)):
                count = min(chunk, profiles - start)
                seconds, _, generate_mb = timed("generate", [BIN, "generate", "--profiles", str(count),
                                                             "--seed", str(7 + part), "--first-index", str(start),
                                                             "--out", data_in, "--now", now])
                generate_seconds += seconds
                seconds, output, ingest_mb = timed("ingest", [BIN, "ingest", data_in, "--data-dir", data_dir])
                ingest_seconds += seconds
                peak_mb = max(peak_mb, generate_mb, ingest_mb)
                if count < profiles:
                    print(f"  part {part + 1}: {count} profiles ingested in {seconds:.1f} s = "
                          f"{count / seconds:,.0f} profiles/s, peak RSS {ingest_mb:,.0f} MB")
                shutil.rmtree(data_in, ignore_errors=True)
            print(f"generate: {profiles} profiles in {generate_seconds:.1f} s = {profiles / generate_seconds:,.0f} profiles/s")
            print(f"ingest (batch path, validation, one transaction per dataset): {ingest_seconds:.1f} s = "
                  f"{profiles / ingest_seconds:,.0f} profiles/s, peak RSS of generate/ingest {peak_mb:,.0f} MB")
            # The summary, then a line per dataset with its time: records and events cost very
            # differently per byte.
            for line in output.strip().splitlines():
                print("  " + line.strip())
            disk = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(data_dir) for name in names)
            print(f"disk: {disk / profiles:,.0f} bytes/profile ({disk / 1e6:,.0f} MB)")
            open(loaded, "w").close()

        server = subprocess.Popen([BIN, "serve", "--demo", "--demo-profiles", "0", "--listen", "127.0.0.1:0", "--data-dir", data_dir,
                                   # Building a 1M-profile sample on demand takes longer than the default deadline.
                                   "--request-timeout-secs", "900"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            base = server.stdout.readline().strip().split(" on ")[1]
            started = time.perf_counter()
            with PeakRss(server.pid) as rss:
                call(base, "POST", "/data/core/ups/previewsamplestatus")
            print(f"sample build ({profiles} profiles): {time.perf_counter() - started:.2f} s, server peak RSS {rss.peak_mb:,.0f} MB")
            status = call(base, "GET", "/data/core/ups/previewsamplestatus")
            for sample in status.get("samples", [status]):
                if "sampleBytes" in sample and sample.get("sampleSize"):
                    print(f"sample memory: {sample['sampleBytes'] / sample['sampleSize']:,.0f} bytes/profile "
                          f"({sample['sampleBytes'] / 1e6:,.0f} MB for {sample['sampleSize']} profiles, tier {sample['tier']})")
            queries = {
                "attribute": 'person.gender = "male" and homeAddress.countryCode = "US"',
                "string (case-insensitive)": 'person.name.lastName.startsWith("mi", false)',
                "event count, 30 days": "xEvent[timestamp occurs < 30 days before now].count() > 0",
                "two-step chain": 'chain(xEvent, timestamp, [C: WHAT(eventType = "commerce.productListAdds"), D: WHAT(eventType = "commerce.purchases")])',
            }
            for label, expression in queries.items():
                first, ready, estimate, preview_id = preview(base, expression)
                print(f"preview {label}: first estimate {first * 1000:.0f} ms, RESULT_READY {ready * 1000:.0f} ms, "
                      f"matched {estimate['profilesMatchedSoFar']} of {estimate['profilesReadSoFar']}")
            if shutil.which("wrk"):
                # Previews keep running on the server while wrk polls an estimate.
                stop = threading.Event()

                def keep_previews_running():
                    while not stop.is_set():
                        preview(base, queries["two-step chain"])

                background = threading.Thread(target=keep_previews_running, daemon=True)
                background.start()
                result = subprocess.run(["wrk", "-t2", "-c32", "-d5s", "-H", "x-api-key: demo", "-H", "Authorization: Bearer demo",
                                         "-H", "x-gw-ims-org-id: demo@AdobeOrg", f"{base}/data/core/ups/estimate/{preview_id}"],
                                        capture_output=True, text=True, check=True)
                stop.set()
                background.join()
                rate = [line for line in result.stdout.splitlines() if "Requests/sec" in line]
                print("GET /estimate throughput while previews run (wrk -t2 -c32 -d5s): " + (rate[0].split(":")[1].strip() if rate else "n/a") + " req/s")
            definitions = []
            for index, expression in enumerate(list(queries.values()) + ['loyalty.tier = "gold"', "loyalty.points > 1000",
                                                                          'homeAddress.countryCode in ["US", "CA"]',
                                                                          'person.name.firstName.contains("an")',
                                                                          "xEvent[commerce.purchases.value > 0].count() >= 2",
                                                                          'homeAddress.stateProvince = "CA"']):
                definitions.append(call(base, "POST", "/data/core/ups/segment/definitions", {
                    "name": f"bench {index} {time.time_ns()}", "schema": {"name": "_xdm.context.profile"},
                    "expression": {"type": "PQL", "format": "pql/text", "value": expression}})["id"])
            # First with the columnar snapshot as it is (rebuilt as the job goes after an ingest),
            # then again with it current, as for every later job until the store changes.
            for run in ("first", "again"):
                job = call(base, "POST", "/data/core/ups/segment/jobs", [{"segmentId": id} for id in definitions])
                started = time.perf_counter()
                with PeakRss(server.pid) as rss:
                    for _ in range(100000):
                        job = call(base, "GET", "/data/core/ups/segment/jobs/" + job["id"])
                        if job["status"] in ("SUCCEEDED", "FAILED"):
                            break
                        time.sleep(0.05)
                seconds = time.perf_counter() - started
                timing = job["metrics"].get("profileSegmentationTime", {}).get("totalTimeInMs", 0) / 1000
                print(f"segment job ({run}), {len(definitions)} definitions: {job['status']} in {seconds:.1f} s "
                      f"(evaluation {timing:.1f} s = {profiles / max(timing, 1e-9):,.0f} profiles/s), "
                      f"server RSS {rss.before_mb:,.0f} MB before the job, peak {rss.peak_mb:,.0f} MB during it")
            snapshot = sum(f.stat().st_size for f in (Path(data_dir) / "columnar").rglob("*") if f.is_file())
            print(f"columnar snapshot: {snapshot / profiles:,.0f} bytes/profile ({snapshot / 1e6:,.0f} MB)")
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
