import sys

from real.serve.cli import main

sys.exit(main())
