"""One benchmark worker process: its own event loop, its own gRPC connections, its share of load.

The parent starts N of these (spawned, so no gRPC state crosses a fork). Each one connects,
prepares (warm-up requests, watches, leases, the txn-put revision cache), reports `ready`,
waits for the common start signal, runs its share of the measured phase and sends back a
`WorkerResult`. Every loop is bounded by the request count and by `max_duration_s`.

Keys are the loadgen's: `prefix` + zero-padded decimal index, `key_size` bytes in all, the
index uniform over `key_space`. Values are `val_size` random letters; watch values start with
the send time (16 hex digits of time.time_ns()) so that receivers can measure delivery.
"""

from __future__ import annotations

import asyncio
import multiprocessing.synchronize
import random
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from petcd import errors
from petcd.benchmark.stats import WorkerResult
from petcd.client import (
    AsyncClient,
    AsyncLeaseKeepAliveStream,
    AsyncWatch,
    compare_mod,
    op_get,
    op_put,
)
from petcd.client import transport as tp
from petcd.pb import rpc_pb2

START_WAIT_S = 300.0
WATCH_LATENCY_WATCHERS_MAX = 50  # per process: watchers whose every event latency is recorded
LIST_PAGE = 10_000


@dataclass(slots=True)
class WorkerConfig:
    op: str
    index: int
    endpoints: list[str]
    clients: int
    conns: int
    total: int  # requests of this worker (watch: its puts)
    key_size: int
    val_size: int
    key_space: int
    prefix: str
    consistency: str
    watchers: int
    streams: int
    leases: int
    warmup: int
    timeout_s: float
    max_duration_s: float
    seed: int
    uvloop: bool
    total_puts: int  # watch: puts by all workers together (what each watcher should see)


Op = Callable[[AsyncClient, random.Random], Awaitable[None]]


def key_of(config: WorkerConfig, index: int) -> bytes:
    digits = str(index)
    width = config.key_size - len(config.prefix)
    assert width > 0
    return (config.prefix + digits.rjust(width, "0")[-width:]).encode()


def random_value(rng: random.Random, size: int) -> bytes:
    letters = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return bytes(rng.choice(letters) for _ in range(size))


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def drive(
    config: WorkerConfig,
    clients: list[AsyncClient],
    count: int,
    op: Op,
    result: WorkerResult | None,
) -> bool:
    """Issue `count` requests of `op` from `config.clients` coroutines; False if truncated."""
    issued = 0
    truncated = False
    deadline = time.monotonic() + config.max_duration_s
    latencies = result.latencies_s if result is not None else None

    async def loop(client: AsyncClient, rng: random.Random) -> None:
        nonlocal issued, truncated
        while issued < count:
            issued += 1
            if time.monotonic() > deadline:
                truncated = True
                return
            started = time.perf_counter()
            try:
                await op(client, rng)
            except errors.PetcdError as error:
                if result is not None:
                    result.fail(error.message)
                continue
            if latencies is not None:
                latencies.append(time.perf_counter() - started)

    rngs = [random.Random(config.seed + 7919 * i + config.index) for i in range(config.clients)]
    await asyncio.gather(*(loop(clients[i % len(clients)], rngs[i]) for i in range(config.clients)))
    return not truncated


class Simple:
    """put, range and txn-put: one request per op, latency per request."""

    def __init__(self, config: WorkerConfig, clients: list[AsyncClient]) -> None:
        self.config = config
        self.clients = clients
        self.value = random_value(random.Random(config.seed), config.val_size)
        self.revisions: list[int] = []
        self.succeeded = 0
        self.conflicts = 0
        self.op: Op = {"put": self.put, "range": self.range, "txn-put": self.txn_put}[config.op]

    async def put(self, client: AsyncClient, rng: random.Random) -> None:
        request = rpc_pb2.PutRequest(
            key=key_of(self.config, rng.randrange(self.config.key_space)), value=self.value
        )
        await client.unary(tp.KV_PUT, request)

    async def range(self, client: AsyncClient, rng: random.Random) -> None:
        response = await client.unary(tp.KV_RANGE, self.range_request)
        if len(response.kvs) != 1:
            raise errors.PetcdError(f"range returned {len(response.kvs)} kvs")

    async def txn_put(self, client: AsyncClient, rng: random.Random) -> None:
        index = rng.randrange(self.config.key_space)
        key = key_of(self.config, index)
        response = await client.txn(
            [compare_mod(key, "=", self.revisions[index])], [op_put(key, self.value)], [op_get(key)]
        )
        if response.succeeded:
            self.revisions[index] = response.header.revision
            self.succeeded += 1
            return
        self.conflicts += 1
        kvs = response.responses[0].response_range.kvs if response.responses else []
        self.revisions[index] = kvs[0].mod_revision if kvs else 0

    async def prepare(self) -> None:
        config = self.config
        first = self.clients[0]
        if config.op == "range":
            key = key_of(config, 0)
            await first.put(key, self.value)
            self.range_request = rpc_pb2.RangeRequest(
                key=key, serializable=config.consistency == "s"
            )
        if config.op == "txn-put":
            self.revisions = await load_revisions(config, first)
        for client in self.clients:  # connect every channel before the clock starts
            await client.channel().channel_ready()
        if config.warmup:
            await drive(config, self.clients, config.warmup, self.op, None)

    async def measure(self, result: WorkerResult) -> None:
        self.succeeded = self.conflicts = 0  # the warm-up's do not count
        result.truncated = not await drive(
            self.config, self.clients, self.config.total, self.op, result
        )
        result.end_s = time.time()
        if self.config.op == "txn-put":
            result.counters = {"succeeded": self.succeeded, "conflicts": self.conflicts}


async def load_revisions(config: WorkerConfig, client: AsyncClient) -> list[int]:
    """Current mod revisions of the key space (keys only, paginated), as the loadgen does."""
    revisions = [0] * config.key_space
    key = config.prefix.encode()
    end = key[:-1] + bytes([key[-1] + 1])
    for _ in range(config.key_space // LIST_PAGE + 2):
        response = await client.get(key, end, keys_only=True, limit=LIST_PAGE)
        for kv in response.kvs:
            suffix = kv.key[len(config.prefix) :]
            if (
                suffix.isdigit()
                and int(suffix) < config.key_space
                and key_of(config, int(suffix)) == kv.key
            ):
                revisions[int(suffix)] = kv.mod_revision
        if not response.more or not response.kvs:
            break
        key = response.kvs[-1].key + b"\x00"
    return revisions


class WatchLoad:
    """watchers × puts: delivery latency of every event to a sample of watchers, events/s."""

    def __init__(self, config: WorkerConfig, clients: list[AsyncClient]) -> None:
        self.config = config
        self.clients = clients
        rng = random.Random(config.seed)
        self.pad = random_value(rng, max(config.val_size - 16, 0))
        self.watches: list[AsyncWatch] = []
        self.received = 0
        self.last_event_s = 0.0
        self.latencies: list[float] = []
        self.progress = asyncio.Event()

    async def put(self, client: AsyncClient, rng: random.Random) -> None:
        value = b"%016x" % time.time_ns() + self.pad
        request = rpc_pb2.PutRequest(
            key=key_of(self.config, rng.randrange(self.config.key_space)), value=value
        )
        await client.unary(tp.KV_PUT, request)

    async def prepare(self) -> None:
        config = self.config
        for client in self.clients:
            await client.channel().channel_ready()
        if config.warmup:  # before any watcher exists: these puts make no events
            await drive(config, self.clients, config.warmup, self.put, None)
        streams = [
            self.clients[i % len(self.clients)].watch_stream() for i in range(config.streams)
        ]
        prefix = config.prefix.encode()
        for j in range(config.watchers):
            self.watches.append(await streams[j % len(streams)].watch(prefix, prefix=True))

    async def consume(self, watch: AsyncWatch, record: bool) -> None:
        expected = self.config.total_puts
        seen = 0
        async for response in watch:
            now_ns = time.time_ns()
            count = len(response.events)
            if not count:
                continue
            if record:
                for event in response.events:
                    sent = event.kv.value[:16]
                    self.latencies.append((now_ns - int(sent, 16)) / 1e9)
            seen += count
            self.received += count
            self.last_event_s = now_ns / 1e9
            self.progress.set()
            if seen >= expected:
                return

    async def measure(self, result: WorkerResult) -> None:
        config = self.config
        consumers = [
            asyncio.create_task(self.consume(w, j < WATCH_LATENCY_WATCHERS_MAX))
            for j, w in enumerate(self.watches)
        ]
        put_result = WorkerResult()
        result.truncated = not await drive(config, self.clients, config.total, self.put, put_result)
        await self.wait_events(consumers)
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        result.latencies_s.extend(self.latencies)
        result.put_latencies_s = put_result.latencies_s
        result.errors += put_result.errors
        result.error_samples.update(put_result.error_samples)
        result.end_s = self.last_event_s or time.time()
        result.counters = {"events": self.received, "puts": len(put_result.latencies_s)}

    async def wait_events(self, consumers: list[asyncio.Task[None]]) -> None:
        """Until every watcher has all events, or `timeout_s` passes without any progress."""
        deadline = time.monotonic() + self.config.max_duration_s
        while not all(task.done() for task in consumers) and time.monotonic() < deadline:
            self.progress.clear()
            try:
                async with asyncio.timeout(self.config.timeout_s):
                    await self.progress.wait()
            except TimeoutError:
                return


class KeepAliveLoad:
    """Lease keep-alive round trips on a set of leases, over one stream per connection."""

    def __init__(self, config: WorkerConfig, clients: list[AsyncClient]) -> None:
        self.config = config
        self.clients = clients
        self.leases: list[int] = []
        self.streams: dict[int, AsyncLeaseKeepAliveStream] = {}

    async def keep_alive(self, client: AsyncClient, rng: random.Random) -> None:
        response = await self.streams[id(client)].keep_alive(rng.choice(self.leases))
        if response.TTL <= 0:
            raise errors.LeaseNotFoundError()

    async def prepare(self) -> None:
        for i in range(max(self.config.leases, 1)):
            self.leases.append((await self.clients[i % len(self.clients)].lease_grant(60)).ID)
        for client in self.clients:
            self.streams[id(client)] = client.lease_keep_alive_stream()
        if self.config.warmup:
            await drive(self.config, self.clients, self.config.warmup, self.keep_alive, None)

    async def measure(self, result: WorkerResult) -> None:
        result.truncated = not await drive(
            self.config, self.clients, self.config.total, self.keep_alive, result
        )
        result.end_s = time.time()
        for lease in self.leases:
            try:
                await self.clients[0].lease_revoke(lease)
            except errors.PetcdError:
                continue


async def run_worker(
    config: WorkerConfig, ready: Any, start: multiprocessing.synchronize.Event
) -> WorkerResult:
    """Connect, prepare, report ready, wait for the start signal, measure."""
    options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own per client
    clients = [
        AsyncClient(
            rotated(config.endpoints, i + config.index),
            timeout=config.timeout_s,
            channel_options=options,
        )
        for i in range(config.conns)
    ]
    load: Simple | WatchLoad | KeepAliveLoad
    if config.op == "watch":
        load = WatchLoad(config, clients)
    elif config.op == "lease-keepalive":
        load = KeepAliveLoad(config, clients)
    else:
        load = Simple(config, clients)
    try:
        await load.prepare()
        ready.put(("ready", config.index, ""))
        if not await asyncio.to_thread(start.wait, START_WAIT_S):
            raise TimeoutError("no start signal")
        result = WorkerResult(start_s=time.time())
        cpu_before = cpu_s()
        await load.measure(result)
        result.cpu_s = cpu_s() - cpu_before
        return result
    finally:
        for client in clients:
            await client.close()


def rotated(endpoints: list[str], shift: int) -> list[str]:
    """`endpoints` starting at `shift`: connections spread over the members, then fail over."""
    shift %= len(endpoints)
    return endpoints[shift:] + endpoints[:shift]


def worker_entry(
    config: WorkerConfig, ready: Any, start: multiprocessing.synchronize.Event, results: Any
) -> None:
    """The process target: run the worker and send back its result (or its failure)."""
    if config.uvloop:
        import uvloop

        uvloop.install()
    try:
        result = asyncio.run(run_worker(config, ready, start))
    except BaseException as exc:
        message = f"worker {config.index}: {exc!r}"
        ready.put(("error", config.index, message))
        results.put((config.index, message))
        raise
    results.put((config.index, result))
