"""Paths as results show them: a file the packages carry (a record, a fitted profile, a peers table)
is named from the folder that holds the packages (`calibration/measurements/h100/x.csv`), the same
in a source checkout and in an installed wheel, and never as an absolute path of this machine
(site-packages, a home folder). A path outside the packages (a user's --records folder) is shown
as given."""

from __future__ import annotations

from pathlib import Path

# the folder holding twin/, calibration/, real/ and reports/: the checkout's root, or site-packages
PACKAGES_ROOT = Path(__file__).resolve().parents[2]


def shown_path(path: str | Path) -> str:
    """An absolute `path` relative to PACKAGES_ROOT (POSIX separators) where it lies inside it;
    anything else as given."""
    if not Path(path).is_absolute():
        return str(path)
    try:
        return Path(path).resolve().relative_to(PACKAGES_ROOT).as_posix()
    except ValueError:
        return str(path)
