"""Ray job entrypoint: `ray job submit --working-dir . -- python jobs/run.py VERB ARGS` = `lmstack VERB ARGS`.

Inside a Ray job RAY_ADDRESS is set, so the verb joins the cluster instead of starting one.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "platform"))

from lmstack.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
