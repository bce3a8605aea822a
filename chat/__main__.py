"""``python -m chat``: the same as ``chat-server``."""

import sys

from chat.cli import main

sys.exit(main())
