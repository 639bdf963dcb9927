"""``python -m lecture_modules``: list the installed lectures (same as ``python cli.py lectures``)."""

import sys

from cli import main

sys.exit(main(["lectures"]))
