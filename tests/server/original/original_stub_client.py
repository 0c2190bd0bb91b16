"""A client built only from stubs generated from the ORIGINAL comet v1 schema.

Run as: python original_stub_client.py GENERATED_DIR BROKER_ADDRESS TOPIC

It imports `comet_v1_original_pb2` / `comet_v1_original_pb2_grpc` from
GENERATED_DIR (never the project's `comet` package), runs a fixed scenario
against the broker and prints one JSON object with what it saw.
"""

from __future__ import annotations

import json
import sys

import grpc


def main() -> None:
    gen_dir, address, topic = sys.argv[1:4]
    group = f"{topic}-group"
    sys.path.insert(0, gen_dir)
    import comet_v1_original_pb2 as pb
    import comet_v1_original_pb2_grpc as pb_grpc

    out: dict[str, object] = {}

    def code_of(call) -> str:
        try:
            call()
        except grpc.RpcError as exc:
            return exc.code().name
        return "OK"

    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.BrokerServiceStub(channel)
        created = stub.CreateTopic(
            pb.CreateTopicRequest(name=topic, partitions=2, replication_factor=1), timeout=10
        )
        out["create_success"] = created.success
        listed = stub.ListTopics(pb.ListTopicsRequest(), timeout=10)
        out["listed"] = [[t.name, t.partitions, t.replication_factor] for t in listed.topics]
        meta = stub.GetMetadata(pb.GetMetadataRequest(topics=[topic]), timeout=10)
        out["brokers"] = [[b.id, b.address] for b in meta.brokers]
        out["partitions"] = [
            [p.id, p.leader_broker_id, list(p.replica_broker_ids)]
            for t in meta.topics
            for p in t.partitions
        ]
        produced = stub.Produce(
            pb.ProduceRequest(
                topic=topic,
                records=[
                    pb.ProduceRecord(partition=1, key=b"k1", value=b"v1"),
                    pb.ProduceRecord(partition=1, key=b"", value=b"v2"),
                ],
            ),
            timeout=10,
        )
        out["produced"] = [[r.partition, r.offset] for r in produced.results]
        consumed = stub.Consume(
            pb.ConsumeRequest(topic=topic, partition=1, offset=0, max_records=10), timeout=10
        )
        out["consumed"] = [
            [m.offset, m.key.decode(), m.value.decode(), m.partition, m.topic, m.timestamp]
            for m in consumed.messages
        ]
        sub = stub.Subscribe(pb.SubscribeRequest(topic=topic, group=group), timeout=10)
        out["subscribed"] = [bool(sub.member_id), list(sub.partitions), sub.generation]
        polled = []
        for _ in range(50):  # a poll may first answer rebalance=true with no records
            reply = stub.Poll(
                pb.PollRequest(topic=topic, group=group, member_id=sub.member_id, max_records=10),
                timeout=10,
            )
            polled += [[m.partition, m.offset, m.value.decode()] for m in reply.messages]
            if len(polled) >= 2:
                break
        out["polled"] = polled
        out["unsubscribed"] = stub.Unsubscribe(
            pb.UnsubscribeRequest(topic=topic, group=group, member_id=sub.member_id), timeout=10
        ).success
        out["replicate_code"] = code_of(
            lambda: stub.Replicate(pb.ReplicateRequest(topic=topic, partition=0), timeout=10)
        )
        out["delete_success"] = stub.DeleteTopic(
            pb.DeleteTopicRequest(name=topic), timeout=10
        ).success
        out["delete_again_code"] = code_of(
            lambda: stub.DeleteTopic(pb.DeleteTopicRequest(name=topic), timeout=10)
        )
    out["imported_comet_package"] = any(m == "comet" or m.startswith("comet.") for m in sys.modules)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
