"""Python aiohttp peer client for the freshpool benchmarks.

C coroutines send N keep-alive GETs in total to one URL through one shared
aiohttp.ClientSession (TCPConnector(limit=C)), then print one parseable line:

    peer=python-aiohttp concurrency=64 requests=20000 seconds=2.1 rps=9500 p50_us=6500 p99_us=9000 errors=0

Usage: python3 aiohttp_peer.py URL [-c 64] [-n 20000] [--ca ca.pem]
"""

import argparse
import asyncio
import ssl
import time

import aiohttp


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("-c", type=int, default=64)
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--ca", default=None)
    args = ap.parse_args()
    ssl_ctx = ssl.create_default_context(cafile=args.ca) if args.ca else None
    connector = aiohttp.TCPConnector(limit=args.c, limit_per_host=args.c, ssl=ssl_ctx)
    errors = 0
    async with aiohttp.ClientSession(connector=connector) as session:

        async def get() -> None:
            async with session.get(args.url) as resp:
                await resp.read()

        # Warm up: C overlapping requests open C connections.
        await asyncio.gather(*(get() for _ in range(args.c)))

        async def worker(count: int) -> list:
            nonlocal errors
            lat = []
            for _ in range(count):
                t = time.perf_counter_ns()
                try:
                    await get()
                except Exception:  # counted, not fatal
                    errors += 1
                lat.append(time.perf_counter_ns() - t)
            return lat

        counts = [args.n // args.c + (1 if k < args.n % args.c else 0) for k in range(args.c)]
        start = time.perf_counter()
        results = await asyncio.gather(*(worker(k) for k in counts))
        elapsed = time.perf_counter() - start
    lat = sorted(x for r in results for x in r)

    def pct(p: float) -> float:
        return lat[min(int(len(lat) * p), len(lat) - 1)] / 1e3

    print(
        f"peer=python-aiohttp concurrency={args.c} requests={args.n} seconds={elapsed:.3f} "
        f"rps={args.n / elapsed:.0f} p50_us={pct(0.5):.0f} p99_us={pct(0.99):.0f} errors={errors}"
    )


if __name__ == "__main__":
    asyncio.run(main())
