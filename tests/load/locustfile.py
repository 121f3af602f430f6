"""Tidemark load tests (Locust).

Run (see tests/load/README.md for every scenario):

    uv run locust -f tests/load/locustfile.py --host=http://localhost:8000

User classes
    MixedLoadUser    weight 100  realistic mix: page views, clicks, sign-ups, add-to-cart,
                                 a purchase funnel (tag ``purchase``) and some batches
    StressTestUser   weight 10   extreme load: single events and batches, no think time
    StressBatchUser  weight 10   batches of 20 events, no think time (write throughput)
    SingleEventUser  weight 10   single events only (rate-limit checks)

When no class is named on the command line, the run uses MixedLoadUser and
StressTestUser (100:10). Name a class to run it (``... StressBatchUser``).

Environment
    SECRET_TOKEN          admin token; creates 4 projects (1 FREE, 2 PRO, 1 ENTERPRISE) once
                          per test run (on the master in distributed mode, which hands the
                          keys to its workers)
    LOAD_TEST_API_KEY     existing write key(s), comma-separated; skips project creation
    LOAD_TEST_API_KEYS    same, comma-separated (both variables may be set; keys are merged)
    PROJECT_NAME_PREFIX   prefix of created project names (default ``load_test``)
    LOAD_TEST_PLAN        optional: only use created keys of these plans (e.g. ``FREE`` or
                          ``PRO,ENTERPRISE``)

Rate-limit verification
    Every ingest request is judged against the plan of the key it used (known for created
    projects, learnt from ``X-RateLimit-Limit`` for supplied keys):

    * a 429 is reported as ``<path> (rate limited: <PLAN>)``; it is a success when the key
      may have reached its limit, a failure ("429 well below the limit") when at most half
      the limit's requests can have been counted by the server in the 60 s before it;
    * a 429 without ``Retry-After`` is a failure;
    * a 2xx is a failure ("rate limit not enforced") when more than 1.25 x the limit were
      accepted on that key in 59 s.

    With N workers each process sees only its own requests, so every worker publishes its
    per-key, per-second counts to the master about once a second, and the master relays them
    to every worker. A worker judges a 429 only once it holds a report from every other
    worker taken after that 429 arrived; "too early" needs an *upper* bound on what the
    server counted (its own counts plus every other worker's, plus requests still in flight),
    and "not enforced" a *lower* bound (requests sent and answered inside a 59 s span). Both
    bounds hold for any number of workers. See tests/load/README.md ("Rate limit testing").
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
import urllib.error
import urllib.request
from typing import Any

import gevent
from gevent.event import Event
from locust import FastHttpUser, between, constant, events, tag, task
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

log = logging.getLogger("tidemark.load")

EVENT_PATH = "/api/v1/event"
BATCH_PATH = "/api/v1/event/batch"
PROJECT_PATH = "/api/v1/project"

PLAN_LIMITS = {"FREE": 100, "PRO": 1000, "ENTERPRISE": 10000}  # requests per minute
LIMIT_PLANS = {v: k for k, v in PLAN_LIMITS.items()}
PROJECTS_PER_RUN = (("FREE", 1), ("PRO", 2), ("ENTERPRISE", 1))

WINDOW_S = 60  # the server's sliding window
EARLY_429_FRACTION = 0.5  # a 429 with fewer than this share of the limit possibly counted is early
OVER_LIMIT_FACTOR = 1.25  # more 2xx than this times the limit inside 59 s: limit not enforced
REPORT_INTERVAL_S = 1.0  # how often a worker publishes its counts
PENDING_DEADLINE_S = 10.0  # a 429 waits at most this long for the other workers' counts
BUCKET_HORIZON_S = 240  # seconds of per-second counts kept
KEYS_WAIT_S = 60.0  # how long a user waits for keys from the master

DEFAULT_CLASSES = ("MixedLoadUser", "StressTestUser")

# ---------------------------------------------------------------------------
# Fast ids and timestamps
# ---------------------------------------------------------------------------

_getrandbits = random.getrandbits
_UUID_KEEP = 0xFFFFFFFFFFFF0FFF3FFFFFFFFFFFFFFF
_UUID_SET = 0x00000000000040008000000000000000


def fast_uuid() -> str:
    """Random RFC 4122 version-4 uuid string.

    About 2.7x faster than ``str(uuid.uuid4())`` here (1.3 us against 3.6 us a call on the
    2-core dev machine): one ``getrandbits`` call, no ``os.urandom`` syscall and no ``UUID``
    object. Not for secrets; each Locust process seeds ``random`` from the OS, so processes
    do not repeat each other.
    """
    h = "%032x" % ((_getrandbits(128) & _UUID_KEEP) | _UUID_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_iso_cache = [0, ""]


def iso_now() -> str:
    """Current UTC time as ISO 8601 with milliseconds (the seconds part is cached)."""
    t = time.time()
    s = int(t)
    if _iso_cache[0] != s:
        _iso_cache[0] = s
        _iso_cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
    return f"{_iso_cache[1]}.{int((t - s) * 1000):03d}Z"


# ---------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------


def parse_keys(*values: str | None) -> list[str]:
    """Comma-separated key lists from the environment, merged, blanks and repeats dropped."""
    out: list[str] = []
    for value in values:
        for part in (value or "").split(","):
            key = part.strip()
            if key and key not in out:
                out.append(key)
    return out


def plan_name(limit: int | None) -> str:
    if limit is None:
        return "unknown plan"
    return LIMIT_PLANS.get(limit, f"{limit} RPM")


class KeyRing:
    """The write keys of the current run, their plans and limits."""

    def __init__(self) -> None:
        self.run_id = ""
        self.keys: list[str] = []
        self.pool: list[str] = []  # keys picked from (LOAD_TEST_PLAN may narrow it)
        self.limits: dict[str, int | None] = {}
        self.fresh: set[str] = set()  # created by this run: no earlier traffic in their window
        self.started = 0.0
        self.headers: dict[str, dict[str, str]] = {}
        self.ready = Event()

    def install(
        self, run_id: str, entries: list[dict[str, Any]], started: float, pool: list[str] | None = None
    ) -> None:
        self.run_id = run_id
        self.keys = [e["key"] for e in entries]
        self.limits = {e["key"]: e.get("limit") for e in entries}
        self.fresh = {e["key"] for e in entries if e.get("fresh")}
        self.started = started
        self.headers = {k: {"Authorization": f"Bearer {k}", "Content-Type": "application/json"} for k in self.keys}
        if pool is None:  # master or local run: LOAD_TEST_PLAN narrows the choice
            wanted = {p.strip().upper() for p in os.environ.get("LOAD_TEST_PLAN", "").split(",") if p.strip()}
            pool = [e["key"] for e in entries if not wanted or e.get("plan") in wanted]
            if wanted and not pool:
                log.warning("LOAD_TEST_PLAN=%s matches no key of this run; using every key", ",".join(sorted(wanted)))
        self.pool = [k for k in pool if k in self.limits] or list(self.keys)
        self.ready.set()

    def to_message(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "started": self.started,
            "keys": [
                {"key": k, "limit": self.limits.get(k), "plan": plan_name(self.limits.get(k)), "fresh": k in self.fresh}
                for k in self.keys
            ],
            "pool": list(self.pool),
        }

    def pick(self) -> str:
        return random.choice(self.pool)

    def learn_limit(self, key: str, header: str | None) -> None:
        if header and self.limits.get(key) is None:
            with contextlib.suppress(ValueError):
                self.limits[key] = int(header)


RING = KeyRing()


def _post_json(url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        detail = e.read()[:300].decode(errors="replace")
        raise RuntimeError(f"POST {url} answered {e.code}: {detail}") from None


def create_projects(host: str, token: str, prefix: str) -> list[dict[str, Any]]:
    """Create the run's 4 projects (1 FREE, 2 PRO, 1 ENTERPRISE); return their key entries."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"_{_getrandbits(24):06x}"
    entries = []
    for plan, count in PROJECTS_PER_RUN:
        for i in range(1, count + 1):
            name = f"{prefix}_{plan.lower()}_{i}_{stamp}"
            project = _post_json(host.rstrip("/") + PROJECT_PATH, token, {"name": name, "plan": plan})
            key = project.get("api_key")
            if not key:
                raise RuntimeError(f"project {name}: no api_key in the answer {project!r}")
            limit = project.get("rate_limit_rpm") or PLAN_LIMITS[plan]
            entries.append({"key": key, "limit": int(limit), "plan": plan, "fresh": True, "name": name})
    return entries


def provision_keys(environment) -> None:
    """Fill RING for a new test run (local runner or master). Raises on a setup error."""
    env_keys = parse_keys(os.environ.get("LOAD_TEST_API_KEY"), os.environ.get("LOAD_TEST_API_KEYS"))
    run_id = f"{int(time.time())}-{_getrandbits(32):08x}"
    if env_keys:
        entries = [{"key": k, "limit": None, "plan": "unknown plan", "fresh": False} for k in env_keys]
        RING.install(run_id, entries, time.time())
        log.info("Using %d write key(s) from LOAD_TEST_API_KEY(S); no project created", len(env_keys))
        return
    token = os.environ.get("SECRET_TOKEN")
    if not token:
        raise RuntimeError("set SECRET_TOKEN (to create projects) or LOAD_TEST_API_KEY(S) (existing write keys)")
    if not environment.host:
        raise RuntimeError("no --host given: cannot create projects")
    prefix = os.environ.get("PROJECT_NAME_PREFIX") or "load_test"
    entries = create_projects(environment.host, token, prefix)
    RING.install(run_id, entries, time.time())
    log.info(
        "Created %d projects for this run: %s",
        len(entries),
        ", ".join(f"{e['name']} ({e['plan']}, {e['limit']} RPM)" for e in entries),
    )


# ---------------------------------------------------------------------------
# Rate-limit ledger: per key, per second of sending, how many requests were answered
# 2xx and how many were answered anything but 429; plus requests in flight.
# ---------------------------------------------------------------------------

OK, NON429 = 0, 1


class NodeCounts:
    """One process's counts, as published to the others."""

    __slots__ = ("taken", "dmax", "inflight", "buckets", "received")

    def __init__(self, taken: float, dmax: float, inflight: dict, buckets: dict, received: float) -> None:
        self.taken = taken
        self.dmax = dmax
        self.inflight = inflight
        self.buckets = buckets
        self.received = received


class RateLedger:
    def __init__(self) -> None:
        self.buckets: dict[str, dict[int, list[int]]] = {}
        self.inflight: dict[str, int] = {}
        self.dmax = 0.0  # longest answer seen (s)
        self.remote: dict[str, NodeCounts] = {}  # other workers' latest reports
        self.peers: set[str] = set()  # the other workers of this run
        self.version = 0
        self._ok_cache: dict[str, tuple[int, int, int]] = {}

    # -- own requests
    def begin(self, key: str) -> None:
        self.inflight[key] = self.inflight.get(key, 0) + 1

    def end(self, key: str, sent: float, status: int, latency_s: float) -> None:
        self.inflight[key] -= 1
        if latency_s > self.dmax:
            self.dmax = latency_s
        b = self.buckets.setdefault(key, {})
        cell = b.get(int(sent))
        if cell is None:
            cell = b[int(sent)] = [0, 0]
        if 200 <= status < 300:
            cell[OK] += 1
        if status != 429:
            cell[NON429] += 1

    def prune(self, now: float) -> None:
        floor = int(now) - BUCKET_HORIZON_S
        for b in self.buckets.values():
            for sec in [s for s in b if s < floor]:
                del b[sec]

    def snapshot(self) -> dict[str, Any]:
        return {
            "t": time.time(),
            "d": self.dmax,
            "k": {
                key: {"f": self.inflight.get(key, 0), "b": [[s, c[OK], c[NON429]] for s, c in b.items()]}
                for key, b in self.buckets.items()
            },
        }

    def absorb(self, node: str, snap: dict[str, Any]) -> None:
        buckets = {key: {s: (ok, n) for s, ok, n in v["b"]} for key, v in snap["k"].items()}
        inflight = {key: v["f"] for key, v in snap["k"].items()}
        self.remote[node] = NodeCounts(snap["t"], snap["d"], inflight, buckets, time.time())
        self.version += 1

    # -- sums over local and remote counts
    def _sum(self, key: str, lo: int, hi: int, idx: int) -> int:
        total = 0
        b = self.buckets.get(key)
        if b:
            for s in range(lo, hi + 1):
                c = b.get(s)
                if c:
                    total += c[idx]
        for node in self.remote.values():
            rb = node.buckets.get(key)
            if rb:
                for s in range(lo, hi + 1):
                    c = rb.get(s)
                    if c:
                        total += c[idx]
        return total

    def accepted_lower_bound(self, key: str, now: float) -> int:
        """2xx on `key` among requests sent and answered within the last 59 s (at least).

        Every counted request reached the server between its sending (>= cur-58) and now
        (< cur+1): inside one 59 s span, so a sliding 60 s limit allows at most the limit.
        """
        cur = int(now)
        cached = self._ok_cache.get(key)
        if cached is None or cached[0] != cur or cached[1] != self.version:
            base = self._sum(key, cur - 58, cur - 1, OK)
            self._ok_cache[key] = cached = (cur, self.version, base)
        b = self.buckets.get(key)
        c = b.get(cur) if b else None
        return cached[2] + (c[OK] if c else 0)

    def counted_upper_bound(self, key: str, sent: float, received: float) -> int:
        """Most requests the server can have counted on `key` when it refused one sent at
        `sent` and answered at `received`: every non-429 answer to a request sent in
        [sent - 60 - longest latency, received], plus every request still in flight."""
        dmax = max([self.dmax] + [n.dmax for n in self.remote.values()])
        lo = int(sent) - WINDOW_S - 1 - math.ceil(dmax)
        hi = int(received)
        flying = self.inflight.get(key, 0) + sum(n.inflight.get(key, 0) for n in self.remote.values())
        return self._sum(key, lo, hi, NON429) + flying

    def reports_cover(self, t: float, now: float) -> bool:
        """True when every other worker of the run, and any other worker heard from lately,
        has published counts taken after time `t`."""
        for node in self.peers:
            if node not in self.remote:
                return False
        return all(
            n.taken >= t
            for node, n in self.remote.items()
            if node in self.peers or now - n.received < PENDING_DEADLINE_S
        )

    def reset(self) -> None:
        self.buckets.clear()
        self.inflight.clear()
        self.remote.clear()
        self.peers = set()
        self._ok_cache.clear()
        self.dmax = 0.0
        self.version += 1


LEDGER = RateLedger()


class RateLimitTooEarly(Exception):
    pass


class RateLimitNotEnforced(Exception):
    pass


class RateLimitWithoutRetryAfter(Exception):
    pass


class _Pending:
    __slots__ = ("key", "sent", "received", "meta")

    def __init__(self, key: str, sent: float, received: float, meta: dict[str, Any]) -> None:
        self.key = key
        self.sent = sent
        self.received = received
        self.meta = meta


class Judge:
    """Decides what each ingest answer means for the rate limit and reports it to Locust."""

    def __init__(self) -> None:
        self.environment = None
        self.distributed = False
        self.pending: list[_Pending] = []
        self.early_logged = 0

    def verdict_429(self, key: str, sent: float, received: float, meta: dict[str, Any]) -> None:
        limit = RING.limits.get(key)
        if limit is None:
            self.fire(meta)  # plan unknown: nothing to compare with
            return
        if key not in RING.fresh and received < RING.started + WINDOW_S + 1:
            self.fire(meta)  # earlier traffic on a supplied key may still fill its window
            return
        threshold = limit * EARLY_429_FRACTION
        if self.distributed and not LEDGER.reports_cover(received, time.time()):
            self.pending.append(_Pending(key, sent, received, meta))
            return
        self.decide(key, sent, received, meta, threshold, limit)

    def decide(self, key, sent, received, meta, threshold, limit) -> None:
        ub = LEDGER.counted_upper_bound(key, sent, received)
        if ub < threshold:
            plan = plan_name(limit)
            meta["exception"] = RateLimitTooEarly(f"429 well below the {plan} limit ({limit}/min)")
            if self.early_logged < 5:
                self.early_logged += 1
                log.warning(
                    "429 on a %s key after at most %d counted requests in its window (limit %d/min)", plan, ub, limit
                )
        self.fire(meta)

    def flush(self, force: bool = False) -> None:
        if not self.pending:
            return
        now = time.time()
        keep = []
        for p in self.pending:
            if force or now - p.received > PENDING_DEADLINE_S or LEDGER.reports_cover(p.received, now):
                limit = RING.limits.get(p.key)
                self.decide(p.key, p.sent, p.received, p.meta, limit * EARLY_429_FRACTION, limit)
            else:
                keep.append(p)
        self.pending = keep

    def fire(self, meta: dict[str, Any]) -> None:
        self.environment.events.request.fire(**meta)


JUDGE = Judge()


class _Capture:
    """Stands in for Locust's request event inside a user's HTTP session, so each answer can
    be judged (and renamed) before it is reported."""

    __slots__ = ("meta",)

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}

    def fire(self, **meta: Any) -> None:
        self.meta = meta


# ---------------------------------------------------------------------------
# Locust hooks: key distribution and count exchange
# ---------------------------------------------------------------------------

MSG_KEYS = "tidemark_keys"
MSG_KEYS_REQUEST = "tidemark_keys_request"
MSG_COUNTS = "tidemark_counts"


def _on_keys(environment, msg, **_kw) -> None:
    data = msg.data
    if data["run"] != RING.run_id:
        LEDGER.reset()
        LEDGER.peers = set(data.get("workers", [])) - {environment.runner.client_id}
        RING.install(data["run"], data["keys"], data["started"], data.get("pool"))
        log.info("Received %d write keys from the master (run %s)", len(data["keys"]), data["run"])


def _keys_message(runner) -> dict[str, Any]:
    data = RING.to_message()
    data["workers"] = [c.id for c in runner.clients.all]
    return data


def _on_keys_request(environment, msg, **_kw) -> None:
    if RING.ready.is_set():
        environment.runner.send_message(MSG_KEYS, _keys_message(environment.runner), client_id=msg.node_id)


def _on_counts_at_master(environment, msg, **_kw) -> None:
    # relay one worker's counts to every worker (each ignores its own)
    environment.runner.send_message(MSG_COUNTS, {"node": msg.node_id, "snap": msg.data})


def _on_counts_at_worker(environment, msg, **_kw) -> None:
    data = msg.data
    if data["node"] != environment.runner.client_id:
        LEDGER.absorb(data["node"], data["snap"])


def _worker_loop(environment) -> None:
    runner = environment.runner
    while True:
        gevent.sleep(REPORT_INTERVAL_S)
        try:
            LEDGER.prune(time.time())
            if RING.ready.is_set():  # published even when empty: the others wait for it
                runner.send_message(MSG_COUNTS, LEDGER.snapshot())
        except Exception:  # keep publishing whatever happens
            log.exception("could not publish rate-limit counts")


def _prune_loop() -> None:
    while True:
        gevent.sleep(10.0)
        LEDGER.prune(time.time())


def _judge_loop() -> None:
    while True:
        gevent.sleep(0.2)
        JUDGE.flush()


def _has_task_tagged(user_class, tags: set[str]) -> bool:
    def walk(tasks) -> bool:
        for t in tasks:
            if hasattr(t, "tasks"):
                if walk(t.tasks):
                    return True
            elif getattr(t, "locust_tag_set", set()) & tags:
                return True
        return False

    return walk(user_class.tasks)


@events.init.add_listener
def _on_init(environment, **_kw) -> None:
    # gevent's timers count from the time its loop last read the clock. On a busy machine the
    # imports before this point can take longer than the whole run, and `-t 20s` then expires
    # the moment Locust sets it: a run with no request (seen under CI load). Read the clock now.
    gevent.get_hub().loop.update_now()
    JUDGE.environment = environment
    runner = environment.runner
    opts = environment.parsed_options

    # Default class set (master or local): the seed's MixedLoadUser + StressTestUser.
    if not isinstance(runner, WorkerRunner) and opts is not None and not getattr(opts, "class_picker", False):
        classes = list(environment.user_classes)
        if not getattr(opts, "user_classes", None):
            classes = [c for c in classes if c.__name__ in DEFAULT_CLASSES] or classes
        tags = set(getattr(opts, "tags", None) or [])
        if tags:
            classes = [c for c in classes if _has_task_tagged(c, tags)] or classes
        environment.user_classes[:] = classes

    if isinstance(runner, MasterRunner):
        runner.register_message(MSG_KEYS_REQUEST, _on_keys_request)
        runner.register_message(MSG_COUNTS, _on_counts_at_master)
    elif isinstance(runner, WorkerRunner):
        JUDGE.distributed = True
        runner.register_message(MSG_KEYS, _on_keys)
        runner.register_message(MSG_COUNTS, _on_counts_at_worker)
        gevent.spawn(_worker_loop, environment)
        gevent.spawn(_judge_loop)
    else:
        gevent.spawn(_prune_loop)


@events.test_start.add_listener
def _on_test_start(environment, **_kw) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        if not RING.ready.is_set():
            runner.send_message(MSG_KEYS_REQUEST, {})
        return
    RING.ready.clear()
    LEDGER.reset()
    try:
        provision_keys(environment)
    except Exception as e:
        log.error("Load test setup failed: %s", e)
        environment.process_exit_code = 1
        gevent.spawn_later(0.1, runner.quit)
        return
    if isinstance(runner, MasterRunner):
        runner.send_message(MSG_KEYS, _keys_message(runner))
    _start_names_history(environment)


# Per-request-name totals once a second, written beside Locust's CSVs as
# <prefix>_names_history.csv (Timestamp, Name, Total Request Count, Total Failure Count), so
# analyze.py can take exact per-name rates for the stable period without --csv-full-history
# (which would mix per-name rows into _stats_history.csv, where the guide's snippet expects
# only the Aggregated row).
_names_history: dict[str, Any] = {"greenlet": None, "file": None}


def _write_names_row(environment) -> None:
    f = _names_history["file"]
    if f is None:
        return
    now = int(time.time())
    for (name, _method), entry in sorted(environment.stats.entries.items()):
        f.write(f"{now},{json.dumps(name)},{entry.num_requests},{entry.num_failures}\n")
    f.flush()


def _names_history_loop(environment) -> None:
    while True:
        gevent.sleep(1.0)
        _write_names_row(environment)


def _start_names_history(environment) -> None:
    prefix = getattr(environment.parsed_options, "csv_prefix", None) if environment.parsed_options else None
    if not prefix:
        return
    _stop_names_history(environment, final=False)
    f = open(f"{prefix}_names_history.csv", "w", encoding="utf-8")  # noqa: SIM115 - kept open for the run
    f.write("Timestamp,Name,Total Request Count,Total Failure Count\n")
    _names_history["file"] = f
    _names_history["greenlet"] = gevent.spawn(_names_history_loop, environment)


def _stop_names_history(environment, final: bool = True) -> None:
    g = _names_history["greenlet"]
    if g is not None:
        g.kill(block=False)
        _names_history["greenlet"] = None
    if _names_history["file"] is not None:
        if final:
            _write_names_row(environment)
        _names_history["file"].close()
        _names_history["file"] = None


@events.test_stopping.add_listener
def _on_test_stopping(environment, **_kw) -> None:
    JUDGE.flush(force=True)


@events.test_stop.add_listener
def _on_test_stop(environment, **_kw) -> None:
    JUDGE.flush(force=True)
    if not isinstance(environment.runner, WorkerRunner):
        _stop_names_history(environment)


# ---------------------------------------------------------------------------
# Users
# ---------------------------------------------------------------------------

PAGES = ["/", "/pricing", "/docs", "/blog", "/blog/launch", "/features", "/about", "/signup", "/login", "/changelog"]
PRODUCTS = [(f"sku_{i:04d}", round(5 + (i * 7.31) % 195, 2)) for i in range(200)]
BROWSERS = ["Chrome", "Firefox", "Safari", "Edge"]
OSES = ["Windows", "macOS", "Linux", "iOS", "Android"]
REFERRERS = ["", "https://www.google.com/", "https://news.ycombinator.com/", "https://twitter.com/", "newsletter"]
ELEMENTS = [("button", "Get started"), ("a", "Pricing"), ("button", "Subscribe"), ("a", "Docs"), ("button", "Buy")]
MIXED_BATCH_EVENTS = ["Page View", "Page View", "Page View", "Click", "Click", "Add to Cart", "Scroll"]


class TidemarkUser(FastHttpUser):
    """Shared plumbing: key choice per request, event bodies, judging of answers."""

    abstract = True
    batch_size_range = (10, 30)  # mean 20, the guide's events-per-batch figure

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._capture = _Capture()
        self.client.request_event = self._capture
        self.distinct_id = f"anon_{_getrandbits(48):012x}"
        self.browser = random.choice(BROWSERS)
        self.os = random.choice(OSES)

    def on_start(self) -> None:
        if not RING.ready.wait(KEYS_WAIT_S):
            log.error("No write keys after %.0f s (see the master's log); stopping this user", KEYS_WAIT_S)
            raise StopUser()

    # -- bodies
    def make_event(self, name: str, properties: dict[str, Any] | None = None) -> dict[str, Any]:
        props = {"$browser": self.browser, "$os": self.os}
        if properties:
            props.update(properties)
        return {
            "event": name,
            "distinct_id": self.distinct_id,
            "timestamp": iso_now(),
            "properties": props,
            "uuid": fast_uuid(),
        }

    def random_event(self) -> dict[str, Any]:
        name = random.choice(MIXED_BATCH_EVENTS)
        if name == "Page View":
            return self.make_event(name, {"path": random.choice(PAGES)})
        if name == "Click":
            el, text = random.choice(ELEMENTS)
            return self.make_event(name, {"element": el, "text": text})
        if name == "Add to Cart":
            sku, price = random.choice(PRODUCTS)
            return self.make_event(name, {"product_id": sku, "price": price, "quantity": 1})
        return self.make_event(name, {"depth": random.choice([25, 50, 75, 100])})

    # -- sending
    def send_event(self, name: str, properties: dict[str, Any] | None = None) -> int:
        body = json.dumps(self.make_event(name, properties))
        return self._post(EVENT_PATH, f"{EVENT_PATH} ({name})", body)

    def send_batch(self, size: int | None = None, label: str = "mixed") -> int:
        n = size or random.randint(*self.batch_size_range)
        body = json.dumps({"events": [self.random_event() for _ in range(n)]})
        return self._post(BATCH_PATH, f"{BATCH_PATH} ({label})", body)

    def _post(self, path: str, name: str, body: str) -> int:
        key = RING.pick()
        LEDGER.begin(key)
        sent = time.time()
        try:
            self.client.request("POST", path, data=body, headers=RING.headers[key], name=name)
        except BaseException:
            LEDGER.inflight[key] -= 1
            raise
        meta = self._capture.meta
        resp = meta["response"]
        status = resp.status_code or 0
        LEDGER.end(key, sent, status, meta["response_time"] / 1000.0)
        headers = resp.headers or {}
        if status == 429:
            RING.learn_limit(key, headers.get("X-RateLimit-Limit"))
            limit = RING.limits.get(key)
            meta["name"] = f"{path} (rate limited: {plan_name(limit)})"
            meta["exception"] = None
            if not headers.get("Retry-After"):
                meta["exception"] = RateLimitWithoutRetryAfter("429 without Retry-After")
                JUDGE.fire(meta)
            else:
                JUDGE.verdict_429(key, sent, time.time(), meta)
            return status
        if 200 <= status < 300:
            limit = RING.limits.get(key)
            if limit is None:
                RING.learn_limit(key, headers.get("X-RateLimit-Limit"))
                limit = RING.limits.get(key)
            if limit is not None and LEDGER.accepted_lower_bound(key, time.time()) > limit * OVER_LIMIT_FACTOR:
                meta["exception"] = RateLimitNotEnforced(
                    f"rate limit not enforced: 2xx far above the {plan_name(limit)} limit ({limit}/min)"
                )
        JUDGE.fire(meta)
        return status


class MixedLoadUser(TidemarkUser):
    """Realistic traffic of a product's visitors."""

    weight = 100
    wait_time = between(0.5, 2.0)

    @tag("pageview")
    @task(10)
    def page_view(self) -> None:
        self.send_event(
            "Page View",
            {"path": random.choice(PAGES), "referrer": random.choice(REFERRERS), "title": "Tidemark demo"},
        )

    @tag("click")
    @task(5)
    def click(self) -> None:
        el, text = random.choice(ELEMENTS)
        self.send_event("Click", {"element": el, "text": text, "path": random.choice(PAGES)})

    @tag("signup")
    @task(1)
    def sign_up(self) -> None:
        self.send_event("Sign Up", {"method": random.choice(["email", "google", "github"])})
        self.distinct_id = f"user_{_getrandbits(40):010x}"

    @tag("cart")
    @task(2)
    def add_to_cart(self) -> None:
        sku, price = random.choice(PRODUCTS)
        self.send_event("Add to Cart", {"product_id": sku, "price": price, "quantity": random.randint(1, 3)})

    @tag("purchase", "funnel")
    @task(2)
    def purchase_funnel(self) -> None:
        """Product page -> Add to Cart -> Checkout Started -> Purchase, with drop-off."""
        sku, price = random.choice(PRODUCTS)
        qty = random.randint(1, 3)
        self.send_event("Page View", {"path": f"/product/{sku}", "product_id": sku})
        if random.random() > 0.6:
            return
        gevent.sleep(random.uniform(0.2, 1.0))
        self.send_event("Add to Cart", {"product_id": sku, "price": price, "quantity": qty})
        if random.random() > 0.7:
            return
        gevent.sleep(random.uniform(0.2, 1.0))
        self.send_event("Checkout Started", {"product_id": sku, "value": round(price * qty, 2)})
        if random.random() > 0.8:
            return
        gevent.sleep(random.uniform(0.2, 1.0))
        self.send_event(
            "Purchase",
            {
                "product_id": sku,
                "quantity": qty,
                "revenue": round(price * qty, 2),
                "currency": "USD",
                "order_id": fast_uuid(),
            },
        )

    @tag("batch")
    @task(2)
    def batch(self) -> None:
        self.send_batch()


class StressTestUser(TidemarkUser):
    """Extreme load: no think time, single events and batches."""

    weight = 10
    wait_time = constant(0)

    @tag("stress", "single")
    @task(3)
    def single(self) -> None:
        self.send_event("Page View", {"path": random.choice(PAGES)})

    @tag("stress", "batch")
    @task(1)
    def batch(self) -> None:
        self.send_batch()


class StressBatchUser(TidemarkUser):
    """Write throughput: batches of 20 events, no think time."""

    weight = 10
    wait_time = constant(0)

    @tag("stress", "batch")
    @task
    def batch(self) -> None:
        self.send_batch(20)


class SingleEventUser(TidemarkUser):
    """Single events in a tight loop: drives keys past their plan's limit."""

    weight = 10
    wait_time = between(0.05, 0.25)

    @tag("single", "ratelimit")
    @task
    def single(self) -> None:
        self.send_event("Page View", {"path": random.choice(PAGES)})
