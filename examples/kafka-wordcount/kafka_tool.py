"""The Kafka side of scripts/kafka-example: create the example's topics,
produce its input, and read its output back (confluent-kafka, Confluent's
Python client on librdkafka)."""

import sys

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def setup(addr):
    admin = AdminClient({"bootstrap.servers": addr})
    futures = admin.create_topics(
        [NewTopic("lines", num_partitions=2), NewTopic("counts", num_partitions=2)]
    )
    for name, f in futures.items():
        f.result()
    print("created topics lines and counts")


def produce(addr, path):
    p = Producer({"bootstrap.servers": addr})
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            p.produce("lines", line.rstrip("\n").encode())
            p.poll(0)
            n += 1
    left = p.flush(30)
    if left:
        sys.exit(f"{left} lines were not acknowledged")
    print(f"produced {n} lines of {path} to topic lines")


def top(addr, k):
    # read_committed: only what the job's transactions committed.
    c = Consumer(
        {
            "bootstrap.servers": addr,
            "group.id": "kafka-example-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    parts = c.list_topics("counts", timeout=10).topics["counts"].partitions
    c.assign([TopicPartition("counts", p, 0) for p in parts])
    done, final, n = set(), {}, 0
    while len(done) < len(parts):
        m = c.poll(5)
        if m is None:
            sys.exit("reading topic counts timed out")
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                done.add(m.partition())
                continue
            sys.exit(f"reading topic counts: {m.error()}")
        word = m.key().decode()
        final[word] = max(final.get(word, 0), int(m.value()))
        n += 1
    c.close()
    print(f"read {n} running counts back from topic counts. The {k} most frequent words:")
    for word, count in sorted(final.items(), key=lambda kv: (-kv[1], kv[0]))[:k]:
        print(f"  {count:4d}  {word}")


if __name__ == "__main__":
    cmd, addr = sys.argv[1], sys.argv[2]
    if cmd == "setup":
        setup(addr)
    elif cmd == "produce":
        produce(addr, sys.argv[3])
    elif cmd == "top":
        top(addr, int(sys.argv[3]))
    else:
        sys.exit(f"unknown command {cmd}")
