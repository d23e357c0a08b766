"""Loading a flow file: a Python file that defines Flow objects at module level.

It is imported from its path (its folder first on ``sys.path``, so it can
import modules next to it) under a name of its own, so two flow files with
the same file name do not replace each other's module.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from pathlib import Path

from dizzy.flow.declare import Flow
from dizzy.protocol import DizzyError, NotFoundError, UsageError

__all__ = ["load_flows"]


def load_flows(path: str | Path) -> list[Flow]:
    """The Flow objects ``path`` defines, in the order it defines them.

    Errors in the file become UsageError naming the file and line (a declaration's
    own UsageError keeps its message): the CLI shows one line, not a traceback.
    """
    file = Path(path).resolve()
    if not file.is_file():
        raise NotFoundError(f"no flow file {path}")
    tag = hashlib.blake2b(str(file).encode(), digest_size=6).hexdigest()
    name = f"_dizzy_flowfile_{tag}_{''.join(c if c.isalnum() else '_' for c in file.stem)}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    if str(file.parent) not in sys.path:
        sys.path.insert(0, str(file.parent))
    try:
        spec.loader.exec_module(module)
    except DizzyError as exc:
        raise UsageError(f"{path}:{_line(exc, file)}: {exc}") from None
    except Exception as exc:
        where = _line(exc, file)
        raise UsageError(f"{path}:{where}: {type(exc).__name__}: {exc}") from None
    flows = [value for value in vars(module).values() if isinstance(value, Flow)]
    if not flows:
        raise UsageError(f"{path} defines no Flow (e.g. flow = Flow('payments'))")
    return flows


def _line(exc: BaseException, file: Path) -> str:
    """The line of ``file`` the error came from (the innermost frame in it)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == file]
    if isinstance(exc, SyntaxError) and exc.lineno:
        return str(exc.lineno)
    return str(frames[-1].lineno) if frames else "?"
