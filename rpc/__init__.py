"""gRPC layer: the statehouse.v1 servicer, status mapping, server and daemon entry point."""

import os
import sys

# The server's connections on gRPC's older polling engine instead of its EventEngine
# listener, set before anything imports grpc (which reads it once). With the
# EventEngine, the loop thread hands every answer to one of grpc's threads to be
# sent; here it is sent from the loop. Measured (docs/performance.md, "gRPC's
# EventEngine listener"): sequential commits 3% faster, commits/s under a client
# per agent 1-5% higher. A GRPC_EXPERIMENTS of the user's own is kept as it is.
os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_listener")

try:  # the daemon's own packages, left out of a client's install
    import grpc_health  # noqa: F401
    import prometheus_client  # noqa: F401
    import pykka  # noqa: F401
    import rocksdict  # noqa: F401
    import structlog  # noqa: F401
except ImportError as missing:
    sys.exit(
        f"statehoused: the daemon's dependencies are not installed ({missing.name} is missing). "
        "Install the daemon's distribution: pip install ./daemon from a checkout "
        "(or make run, which sets up .venv)"
    )

# gRPC's C core logs to stderr in a format of its own (a failed bind prints an
# "E1205 ... add_port.cc" line before the daemon's own message). The daemon says
# what went wrong itself; GRPC_VERBOSITY=debug (or error) still shows the core's lines.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
