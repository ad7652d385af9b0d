"""Rewrite submission folders made before the identity rule of ``gibench.core.identity`` under the current result keys.

Usage::

    python scripts/rekey_submission.py submissions/<id> [submissions/<id> ...]

Each folder is validated, its packed artifacts are moved to ``artifacts/<job>/<current result key>/``, its id is
recomputed and the folder is written under the new id (``verification.json`` follows); the old folder is removed only
once the new one validates. A folder whose keys are already current is left as it is. See
``gibench.submissions.rekey`` for what moves and what is kept.
"""

from __future__ import annotations

import argparse
import sys

from gibench.core.errors import GibenchError
from gibench.submissions.rekey import rekey_submission


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="submission folders (submissions/<id>)")
    args = parser.parse_args(argv)
    for folder in args.folders:
        try:
            new = rekey_submission(folder)
        except GibenchError as exc:
            print(f"error: {folder}: {exc}", file=sys.stderr)
            return 2
        print(f"{folder}: already current" if str(new) == str(folder).rstrip("/") else f"{folder} → {new}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
