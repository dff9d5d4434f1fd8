"""`python -m tests.integration.slow_worker worker`: the real worker, except that writing a model
version stops half way (weights written, not yet renamed into place) for a test to kill it.

The flag file named by SLOW_SAVE_FLAG appears once the worker is in that state.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

_save = torch.save


def _stalling_save(obj, f, *args, **kwargs):
    _save(obj, f, *args, **kwargs)
    if isinstance(f, (str, Path)) and Path(f).parent.name.startswith(".tmp-"):
        Path(os.environ["SLOW_SAVE_FLAG"]).write_text(str(Path(f).parent))
        time.sleep(600)


torch.save = _stalling_save

if __name__ == "__main__":
    from ml_backend.__main__ import main

    sys.exit(main(sys.argv[1:]))
