"""Generated protobuf and gRPC stubs for comet.v1 (run `make proto`)."""
