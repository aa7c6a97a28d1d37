"""`torchrun --standalone --nproc-per-node 2 -m real.pipeline --out DIR [--tiny] ...`"""

from real.pipeline.bench import main

raise SystemExit(main())
