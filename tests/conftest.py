"""Suite-wide pytest setup.

Makes the working tree's src/ importable even when the package is not
installed (the peer tests start `python -m imrs` with src/ on PYTHONPATH too).
"""

import sys
from pathlib import Path

_SRC = Path(__file__).resolve().parents[1] / "src"
if str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))
