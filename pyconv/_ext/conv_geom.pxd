# The conv family's window geometry and tap-range helper (src/kernels/conv_geom.h).
from libc.stdint cimport int64_t

cdef extern from "conv_geom.h" nogil:
    ctypedef struct pyconv_conv_geom:
        int64_t in_size[3]
        int64_t out_size[3]
        int64_t k[3]
        int64_t s[3]
        int64_t pb[3]
        int64_t pe[3]
        int64_t dl[3]
    void pyconv_inside_range(int64_t off, int64_t step, int64_t span, int64_t size,
                             int64_t count, int64_t *lo, int64_t *hi)
