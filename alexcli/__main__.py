"""`python -m alexcli`."""

import sys

from alexcli.cli import main

sys.exit(main())
