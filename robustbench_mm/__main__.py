"""`python -m robustbench_mm` is the same as the `mm-robust` command."""

import sys

from robustbench_mm.cli import main

sys.exit(main())
