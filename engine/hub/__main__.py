"""`python -m engine.hub push RUN --repo user/name` / `pull REPO`: the Hub commands (engine/hub/push.py)."""

import sys

from engine.hub.push import main

sys.exit(main())
