import sys

from rpc.main import main

sys.exit(main())
