"""``python3 scripts/gpu_check`` (what ``make gpu-check`` runs; from any directory) or ``python3 -m scripts.gpu_check``
from the repository root: the one-shot GPU acceptance run."""
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
# Started as a directory, sys.path[0] is this package's folder: its modules (build, report, ...) must not be
# importable as top-level names. The repository root goes first instead.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
if not sys.path or sys.path[0] != _ROOT:
    sys.path.insert(0, _ROOT)

from scripts.gpu_check.cli import main  # noqa: E402

sys.exit(main())
