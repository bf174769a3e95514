"""gRPC layer: the statehouse.v1 servicer, status mapping, server and daemon entry point."""

import os
import sys

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
