"""`python -m real.bench --out DIR [--quick] [--only a,b] [--budget-s S] [--min-time-s S]`"""

import sys

from real.bench.cli import main

sys.exit(main())
