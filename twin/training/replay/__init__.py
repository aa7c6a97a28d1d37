"""Whole-run replay: stages (which plan, how many steps), costs, uncertainty, and the run itself (run.replay)."""
