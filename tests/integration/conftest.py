"""The fixtures of tests/harness.py, for the tests in this directory."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import (mount, postgres, provider, public_dir,  # noqa: E402,F401
                     pytest_sessionfinish, sanitizer_reports)
