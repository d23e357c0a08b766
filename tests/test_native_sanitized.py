"""The C module under AddressSanitizer and UndefinedBehaviorSanitizer: it reads
bytes from peers (protocol/_native.c, ``check_template``), so every test of
tests/test_checked.py runs again in a process whose C module was built with
both, each Python object its own allocation (``PYTHONMALLOC=malloc``), so
that a read past the end of an event's bytes stops the process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPILER = shutil.which("gcc")


def runtime(name: str) -> str | None:
    """The path of a sanitizer's runtime library, if gcc has it."""
    assert COMPILER is not None
    found = subprocess.run(
        [COMPILER, f"-print-file-name={name}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return found if os.path.isabs(found) else None


# Loads the sanitized module as dizzy.protocol._native before dizzy imports its own.
BOOT = """
import importlib.util, sys
path, *args = sys.argv[1:]
spec = importlib.util.spec_from_file_location("dizzy.protocol._native", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["dizzy.protocol._native"] = module
import dizzy.protocol.checked, pytest
assert dizzy.protocol.checked._template == module.check_template
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *args]))
"""


@pytest.mark.skipif(COMPILER is None, reason="no gcc: the C module is not built either")
def test_the_c_module_under_sanitizers(tmp_path: Path) -> None:
    libraries = [runtime("libasan.so"), runtime("libubsan.so")]
    assert all(libraries), "gcc without its sanitizer runtimes (libasan, libubsan)"
    assert COMPILER is not None
    built = tmp_path / ("_native" + str(sysconfig.get_config_var("EXT_SUFFIX")))
    subprocess.run(
        [COMPILER, "-shared", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
         f"-I{sysconfig.get_paths()['include']}", str(ROOT / "protocol" / "_native.c"),
         "-o", str(built)],
        check=True,
    )  # fmt: skip
    env = {
        **os.environ,
        "LD_PRELOAD": " ".join(str(lib) for lib in libraries),
        "PYTHONMALLOC": "malloc",
        # Reports to files: pytest, in the process, holds its standard error.
        "ASAN_OPTIONS": f"detect_leaks=0:log_path={tmp_path / 'asan'}",
        "UBSAN_OPTIONS": f"print_stacktrace=1:log_path={tmp_path / 'ubsan'}",
    }
    tests = [str(ROOT / "tests" / name) for name in ("test_checked.py", "test_vectors.py")]
    done = subprocess.run(
        [sys.executable, "-c", BOOT, str(built), *tests],
        env=env, cwd=ROOT / "tests", capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    reports = "".join(p.read_text() for p in sorted(tmp_path.glob("*san.*")))
    assert not reports, reports[:6000]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout
