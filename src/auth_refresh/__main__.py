"""``python -m auth_refresh``: the operator's command line (``auth_refresh.cli``)."""

import sys

from auth_refresh.cli import main

if __name__ == "__main__":
    sys.exit(main())
