"""``python -m lecture_modules [--markdown | --check]``: list the installed lectures (as ``python cli.py lectures``)."""

import sys

from lecture_modules.registry import lectures_command

sys.exit(lectures_command(sys.argv[1:], prog="python -m lecture_modules"))
