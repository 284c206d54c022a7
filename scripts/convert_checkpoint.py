"""``python scripts/convert_checkpoint.py ...`` is the ``jukebox-convert`` command (models/convert.py)."""
from __future__ import annotations

import sys

from models.convert import main

if __name__ == "__main__":
    sys.exit(main())
