"""gRPC layer: the statehouse.v1 servicer, status mapping, server and daemon entry point."""
