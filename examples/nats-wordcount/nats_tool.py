"""The NATS side of scripts/nats-example: create the example's streams,
publish its input, and read its output back (nats-py, the NATS project's
Python client)."""

import asyncio
import sys

import nats
from nats.js.api import StreamConfig


async def setup(url):
    nc = await nats.connect(url)
    js = nc.jetstream()
    for name, subjects in [("LINES", ["lines"]), ("COUNTS", ["counts.>"])]:
        try:
            await js.delete_stream(name)
        except nats.js.errors.NotFoundError:
            pass
        # A 2-minute duplicate window (NATS's default) covers the sink's
        # republish after a crash.
        await js.add_stream(StreamConfig(name=name, subjects=subjects, duplicate_window=120))
    await nc.close()


async def publish(url, path):
    nc = await nats.connect(url)
    js = nc.jetstream()
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            await js.publish("lines", line.rstrip("\n").encode())
            n += 1
    print(f"published {n} lines of {path} to stream LINES")
    await nc.close()


async def top(url, k):
    nc = await nats.connect(url)
    js = nc.jetstream()
    info = await js.stream_info("COUNTS")
    final = {}
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        m = await js.get_msg("COUNTS", seq)
        word = m.subject.removeprefix("counts.")
        final[word] = max(final.get(word, 0), int(m.data))
    print(f"read {info.state.messages} running counts back from stream COUNTS. The {k} most frequent words:")
    for word, n in sorted(final.items(), key=lambda kv: (-kv[1], kv[0]))[:k]:
        print(f"  {n:4d}  {word}")
    await nc.close()


if __name__ == "__main__":
    cmd, url = sys.argv[1], sys.argv[2]
    if cmd == "setup":
        asyncio.run(setup(url))
    elif cmd == "publish":
        asyncio.run(publish(url, sys.argv[3]))
    elif cmd == "top":
        asyncio.run(top(url, int(sys.argv[3])))
    else:
        sys.exit(f"unknown command {cmd}")
