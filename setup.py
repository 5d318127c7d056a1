"""Build script: Cython extensions plus the C micro-kernels, each ISA with its own flags.

Environment:
  PYCONV_THREADING=pool     how the kernels run in parallel: 'pool' (pyconv's own thread
                            pool, the default on POSIX), 'openmp' (the same loops in OpenMP
                            regions, the default elsewhere when the compiler has it) or
                            'serial'; see src/runtime/parallel.h
  PYCONV_SANITIZE=address,undefined
                            build with AddressSanitizer / UBSan (see SECURITY.md)
"""
import os
import platform
import sys
import tempfile
import textwrap

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# The one place where Cython directives are set.
CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "nonecheck": False,
    "embedsignature": True,
}

KERNEL_DIR = os.path.join("src", "kernels")
RUNTIME_DIR = os.path.join("src", "runtime")
THREADING_BACKENDS = ("pool", "openmp", "serial")
X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")

# (source, flags for GCC/Clang, flags for MSVC): each kernel file is compiled for one ISA
# and picked at run time, so the extension still runs on CPUs without AVX.
ISA_SOURCES = [("sgemm_generic.c", [], [])]
if X86:
    ISA_SOURCES += [
        ("sgemm_avx2.c", ["-mavx2", "-mfma"], ["/arch:AVX2"]),
        ("sgemm_avx512.c", ["-mavx512f", "-mavx2", "-mfma"], ["/arch:AVX512"]),
    ]


def _per_isa(stem):
    """The generic file of a kernel family, plus its AVX2 and AVX-512 builds on x86."""
    flags = {name[len("sgemm_"):-len(".c")]: (gcc, msvc) for name, gcc, msvc in ISA_SOURCES}
    return [(f"{stem}_{isa}.c", gcc, msvc) for isa, (gcc, msvc) in flags.items()]


# The int8 GEMM: AVX-512 VNNI (vpdpbusd) instead of plain AVX-512.
QGEMM_SOURCES = [("qgemm_generic.c", [], [])]
if X86:
    QGEMM_SOURCES += [
        ("qgemm_avx2.c", ["-mavx2", "-mfma"], ["/arch:AVX2"]),
        ("qgemm_avxvnni.c", ["-mavx2", "-mfma", "-mavxvnni"], ["/arch:AVX2"]),
        ("qgemm_avx512vnni.c", ["-mavx512f", "-mavx512vnni", "-mavx2", "-mfma"],
         ["/arch:AVX512"]),
    ]
DWCONV_SOURCES = _per_isa("dwconv")
POOL_SOURCES = _per_isa("pool")
ELTWISE_SOURCES = _per_isa("eltwise")


def _compiler_is_msvc(compiler):
    return compiler.compiler_type == "msvc"


def _probe_openmp(compiler, flag):
    """True when the compiler builds and links a tiny OpenMP program with `flag`."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp_probe.c")
        with open(src, "w") as f:
            f.write(textwrap.dedent("""
                #include <omp.h>
                int main(void) { int n = 0;
                #pragma omp parallel reduction(+:n)
                n += omp_get_num_threads() > 0;
                return n > 0 ? 0 : 1; }
            """))
        try:
            objs = compiler.compile([src], output_dir=tmp, extra_postargs=[flag])
            compiler.link_executable(objs, "omp_probe", output_dir=tmp,
                                     extra_postargs=[] if flag.startswith("/") else [flag])
            return True
        except Exception:
            return False


class BuildExt(build_ext):
    def build_extensions(self):
        # Cython runs here, when the extensions are built, not when setup.py is read: an
        # sdist then carries the .pyx sources and no generated C. cythonize returns copies;
        # only their sources (.pyx -> .c) are taken, since setuptools has already set up
        # the originals for building.
        from Cython.Build import cythonize
        generated = {e.name: e.sources for e in cythonize(
            self.extensions, compiler_directives=CYTHON_DIRECTIVES, include_path=["pyconv/_ext"])}
        for ext in self.extensions:
            ext.sources = generated[ext.name]
        msvc = _compiler_is_msvc(self.compiler)
        omp_flag = "/openmp" if msvc else "-fopenmp"
        threading, flags = self._threading(msvc, omp_flag)
        opt = ["/O2"] if msvc else ["-O3", "-fno-math-errno"]
        sanitize = os.environ.get("PYCONV_SANITIZE", "")
        san = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g"] if sanitize else []
        for ext in self.extensions:
            ext.define_macros.append((f"PYCONV_THREADS_{threading.upper()}", "1"))
            ext.extra_compile_args = opt + san + flags
            ext.extra_link_args = san + ([] if msvc else flags)
            ext.extra_objects = self._compile_isa_sources(ext, opt + san + (
                [] if msvc else ["-fopenmp-simd"]), msvc)
        super().build_extensions()

    def _threading(self, msvc, omp_flag):
        """The parallel backend (PYCONV_THREADING) and its compiler/linker flags."""
        default = "openmp" if msvc else "pool"
        choice = os.environ.get("PYCONV_THREADING", default).strip().lower()
        if choice not in THREADING_BACKENDS:
            raise SystemExit(f"PYCONV_THREADING={choice!r}: expected one of "
                             f"{', '.join(THREADING_BACKENDS)}")
        if choice == "openmp" and not _probe_openmp(self.compiler, omp_flag):
            bar = "!" * 78
            self.warn(f"\n{bar}\n  pyconv: OpenMP is not available with this compiler: building "
                      f"SERIAL kernels.\n  Install an OpenMP runtime (e.g. libgomp / libomp) "
                      f"or build with PYCONV_THREADING=pool.\n{bar}")
            choice = "serial"
        return choice, {"pool": [] if msvc else ["-pthread"], "openmp": [omp_flag],
                        "serial": []}[choice]

    def _flag_works(self, flag):
        """True when the compiler accepts ``flag`` (probed once)."""
        cache = self.__dict__.setdefault("_flag_cache", {})
        if flag not in cache:
            with tempfile.TemporaryDirectory() as tmp:
                src = os.path.join(tmp, "flag_probe.c")
                with open(src, "w") as f:
                    f.write("int pyconv_flag_probe(void) { return 0; }\n")
                try:
                    self.compiler.compile([src], output_dir=tmp, extra_postargs=[flag])
                    cache[flag] = True
                except Exception:
                    cache[flag] = False
        return cache[flag]

    def _compile_isa_sources(self, ext, common, msvc):
        objects = []
        for name, gcc_flags, msvc_flags in EXTENSION_ISA_SOURCES.get(ext.name, ()):
            if not msvc and "-mavxvnni" in gcc_flags and not self._flag_works("-mavxvnni"):
                # GCC < 11 / clang < 12: the file builds without its kernel (see the file)
                gcc_flags = [f for f in gcc_flags if f != "-mavxvnni"]
            objects += self.compiler.compile(
                [os.path.join(KERNEL_DIR, name)],
                output_dir=self.build_temp,
                macros=ext.define_macros,
                include_dirs=ext.include_dirs,
                extra_postargs=common + (msvc_flags if msvc else gcc_flags),
                depends=[os.path.join(KERNEL_DIR, f) for f in KERNEL_HEADERS],
            )
        return objects


KERNEL_HEADERS = ["sgemm.h", "sgemm_common.inc", "sgemm_tiles.inc", "simd_ops.inc",
                  "conv_geom.h", "dwconv.h", "dwconv_common.inc", "lanes_common.inc",
                  "pool.h", "pool_common.inc", "eltwise.h", "eltwise_common.inc", "qgemm.h",
                  "qgemm_common.inc", "cpu_id.inc", "pack_transpose.h"]
RUNTIME_HEADERS = ["parallel.h"]

# Per-ISA kernel objects linked into each extension (cythonize copies Extension objects,
# so this lives beside them rather than as an attribute).
EXTENSION_ISA_SOURCES = {}


def extension(name, sources, isa_sources=()):
    EXTENSION_ISA_SOURCES[name] = list(isa_sources)
    return Extension(
        name,
        sources=sources,
        # The kernel objects are linked in as extra objects, which build_ext does not track:
        # listed here, a change to a kernel source or header relinks the extension.
        depends=[os.path.join(KERNEL_DIR, f)
                 for f in KERNEL_HEADERS + [src for src, _, _ in isa_sources]]
        + [os.path.join(RUNTIME_DIR, h) for h in RUNTIME_HEADERS],
        include_dirs=[KERNEL_DIR, RUNTIME_DIR, np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
        + ([("PYCONV_HAVE_X86_KERNELS", "1")] if X86 else []),
    )


# Convolution, pooling and the element-wise engine cimport the engine and its parallel-for from pyconv._ext.gemm
# (one kernel table, one thread pool per process).
extensions = [
    extension("pyconv._ext.gemm",
              ["pyconv/_ext/gemm.pyx", os.path.join(KERNEL_DIR, "cpu_features.c"),
               os.path.join(RUNTIME_DIR, "parallel.c")],
              ISA_SOURCES),
    extension("pyconv._ext.conv", ["pyconv/_ext/conv.pyx"], DWCONV_SOURCES),
    extension("pyconv._ext.pool", ["pyconv/_ext/pool.pyx"], POOL_SOURCES),
    extension("pyconv._ext.resize", ["pyconv/_ext/resize.pyx"]),
    extension("pyconv._ext.eltwise", ["pyconv/_ext/eltwise.pyx"], ELTWISE_SOURCES),
    extension("pyconv._ext.qgemm", ["pyconv/_ext/qgemm.pyx"], QGEMM_SOURCES),
]

setup(ext_modules=extensions, cmdclass={"build_ext": BuildExt})
