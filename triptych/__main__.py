"""`python -m triptych`: the `triptych` command."""

import sys

from triptych.apps.cli.main import main

sys.exit(main())
