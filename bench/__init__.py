"""Side-by-side benchmark of Comet, NATS JetStream and Redis Streams (`make bench-compare`)."""
