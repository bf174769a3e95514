"""gRPC layer: the statehouse.v1 servicer, status mapping, server and daemon entry point."""

import os

# gRPC's C core logs to stderr in a format of its own (a failed bind prints an
# "E1205 ... add_port.cc" line before the daemon's own message). The daemon says
# what went wrong itself; GRPC_VERBOSITY=debug (or error) still shows the core's lines.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
