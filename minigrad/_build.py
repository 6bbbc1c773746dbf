"""cffi builder for minigrad._C (API, out-of-line mode).

Run by setuptools through ``cffi_modules`` in setup.py: ``pip install .`` compiles
every ``csrc/*.c`` into the extension ``minigrad._C``. The cdef is the part of
``csrc/minigrad.h`` between the CDEF markers, so the header is the one source of
truth for the C API.

Build switches (environment variables read here):
  MINIGRAD_NO_OPENMP=1          build the serial kernels even if OpenMP is available
  MINIGRAD_SANITIZE=address,... compile with -fsanitize=... -fno-omit-frame-pointer -g
"""
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"


def read_cdef(header):
    text = header.read_text()
    start = text.index("/* CDEF BEGIN */") + len("/* CDEF BEGIN */")
    end = text.index("/* CDEF END */")
    return text[start:end]


def compiler_accepts(flags):
    """True if the C compiler builds and links a tiny OpenMP program with `flags`."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        try:
            result = subprocess.run(cc + flags + [str(src), "-o", str(Path(tmp) / "probe")],
                                    capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return result.returncode == 0


def build_flags():
    # -fno-math-errno lets sqrtf vectorise (no errno side effect to keep); it
    # changes no result. Deliberately no -ffast-math: NaN/Inf and determinism.
    compile_args = ["-O3", "-std=c11", "-ffp-contract=off", "-fno-math-errno"]
    link_args = []
    if os.environ.get("MINIGRAD_NO_OPENMP") != "1" and sys.platform != "win32":
        if compiler_accepts(["-fopenmp"]):
            compile_args.append("-fopenmp")
            link_args.append("-fopenmp")
        else:
            print("minigrad: the C compiler has no OpenMP; building serial kernels",
                  file=sys.stderr)
    sanitize = os.environ.get("MINIGRAD_SANITIZE", "").strip()
    if sanitize:
        flags = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g"]
        compile_args += flags + ["-fno-sanitize-recover=all"]
        link_args += flags
    return compile_args, link_args


ffibuilder = FFI()
ffibuilder.cdef(read_cdef(CSRC / "minigrad.h"))
_compile_args, _link_args = build_flags()
ffibuilder.set_source(
    "minigrad._C",
    '#include "minigrad.h"',
    sources=[str(p.relative_to(ROOT)) for p in sorted(CSRC.glob("*.c"))],
    include_dirs=[str(CSRC.relative_to(ROOT))],
    extra_compile_args=_compile_args,
    extra_link_args=_link_args,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
