# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled hot loops; ``_pure.py`` is the twin with the same names and results.

Built by setup.py when Cython and a compiler are present. Buffers are read through their
bytes/bytearray storage directly (no buffer-protocol acquisition per call).
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

from ._common import COL_GATE, COL_SKIP, DATA_ROW, LONG_MIN, MIN_LEN, FrameError, gate_params

cdef enum:
    C_DATA_ROW = 0x44
    C_MIN_LEN = 6
    C_LONG_MIN = 15
    C_SKIP = 0
    C_GATE = 1

assert DATA_ROW == C_DATA_ROW and MIN_LEN == C_MIN_LEN and LONG_MIN == C_LONG_MIN
assert COL_SKIP == C_SKIP and COL_GATE == C_GATE


cdef inline const unsigned char *_data(object buf, Py_ssize_t *n) except NULL:
    if type(buf) is bytearray:
        n[0] = PyByteArray_GET_SIZE(buf)
        return <const unsigned char *>PyByteArray_AS_STRING(buf)
    if type(buf) is bytes:
        n[0] = PyBytes_GET_SIZE(buf)
        return <const unsigned char *>PyBytes_AS_STRING(buf)
    raise TypeError(f"expected bytes or bytearray, not {type(buf).__name__}")


cdef inline unsigned int _u32(const unsigned char *p) noexcept nogil:
    return (<unsigned int>p[0] << 24) | (<unsigned int>p[1] << 16) | \
        (<unsigned int>p[2] << 8) | <unsigned int>p[3]


def next_frame(object buf, Py_ssize_t pos, Py_ssize_t max_size):
    """The typed message at *pos* as ``(kind, start, end)``, or None if incomplete.

    Raises:
        FrameError: the length word is under 4 or over *max_size*.
    """
    cdef Py_ssize_t n
    cdef const unsigned char *p = _data(buf, &n)
    if pos < 0 or n - pos < 5:
        return None
    cdef unsigned int size = _u32(p + pos + 1)
    if size < 4 or <Py_ssize_t>size > max_size:
        raise FrameError(PyBytes_FromStringAndSize(<const char *>p + pos, 1), size)
    cdef Py_ssize_t end = pos + 1 + size
    if n < end:
        return None
    return PyBytes_FromStringAndSize(<const char *>p + pos, 1), pos, end


def datarow_run_end(object buf, Py_ssize_t pos, Py_ssize_t max_size):
    """Where the run of complete DataRow messages starting at *pos* ends.

    Stops before the first message that is not a DataRow, is incomplete or has an
    impossible length (which ``next_frame`` then reports); *pos* when none.
    """
    cdef Py_ssize_t n
    cdef const unsigned char *p = _data(buf, &n)
    cdef unsigned int size
    if pos < 0:
        return pos
    while n - pos >= 5 and p[pos] == C_DATA_ROW:
        size = _u32(p + pos + 1)
        if size < 4 or <Py_ssize_t>size > max_size or pos + 1 + <Py_ssize_t>size > n:
            break
        pos += 1 + size
    return pos


cdef inline bint _is_sep(unsigned char c) noexcept nogil:
    # the separators a phone, card or SSN may have between digits: " ().+/-"
    return c == 32 or c == 40 or c == 41 or c == 46 or c == 43 or c == 47 or c == 45


cdef inline bint _match(const unsigned char *p, Py_ssize_t i, Py_ssize_t n,
                        const char *lit, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t j
    if i + m > n:
        return False
    for j in range(m):
        if p[i + j] != <unsigned char>lit[j]:
            return False
    return True


cdef class ByteGate:
    """The detectors' byte-level pre-filter (``Detectors.skips_bytes``) for a set of names.

    One pass over the bytes decides what the pure twin decides with a translate and up
    to three regular-expression searches.

    Args:
        names: detector names (any of ``email ssn card phone iban secret``).
    """

    cdef bint _any, _email, _secret, _iban
    cdef Py_ssize_t _digit_min

    def __init__(self, names):
        any_, digit_min, email, secret, iban = gate_params(names)
        self._any = any_
        self._digit_min = digit_min
        self._email = email
        self._secret = secret
        self._iban = iban

    cdef bint _skips(self, const unsigned char *p, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t i, digits = 0, run = 0, gap = 0
        cdef bint at = False, digit_run = False, g1 = False, g = False
        cdef bint long_ = n >= C_LONG_MIN
        cdef unsigned char c
        if n < C_MIN_LEN or not self._any:
            return True
        for i in range(n):
            c = p[i]
            if c >= 128:
                return False          # not ASCII: decode and scan
            if 48 <= c <= 57:
                digits += 1
                if run > 0 and gap <= 3:
                    run += 1
                else:
                    run = 1
                gap = 0
                if run >= 7:
                    digit_run = True
                continue
            if _is_sep(c):
                gap += 1
            else:
                run = 0
            if c == 64:               # '@'
                at = True
            if not long_:
                continue
            if self._email and c == 64:
                g1 = g = True
            if self._secret:
                if c == 45 or c == 95 or c == 65 or c == 74:     # - _ A J
                    g1 = True
                if c == 95 or c == 65 or \
                        (c == 45 and _match(p, i, n, b"-----BEGIN", 10)) or \
                        (c == 101 and _match(p, i, n, b"eyJ", 3)) or \
                        (c == 120 and _match(p, i, n, b"xox", 3)) or \
                        (c == 107 and _match(p, i, n, b"k-", 2)):
                    g = True
            if self._iban and 65 <= c <= 90:
                g1 = True
                if i + 3 < n and 65 <= p[i + 1] <= 90 and 48 <= p[i + 2] <= 57 \
                        and 48 <= p[i + 3] <= 57:
                    g = True
        if digits >= self._digit_min and digit_run:
            return False
        if not long_:
            return not self._email or not at
        return not (g1 and g)

    def skips(self, v):
        """True when the encoded value *v* certainly holds nothing a detector finds
        (ASCII values only; any other value returns False, to be decoded and scanned)."""
        cdef Py_ssize_t n
        cdef const unsigned char *p = _data(v, &n)
        return self._skips(p, n)

    def __call__(self, v):
        cdef Py_ssize_t n
        cdef const unsigned char *p = _data(v, &n)
        return self._skips(p, n)

    def first_hit(self, object buf, Py_ssize_t pos, Py_ssize_t end, bytes cols):
        """The offset of the first DataRow in ``buf[pos:end]`` (a run of whole DataRows)
        holding a value the gate does not skip, else *end*.

        Args:
            cols: a code per column (``_common.COL_*``): skip, gate the value, or gate it
                without its first byte. Columns beyond ``len(cols)`` are skipped.

        A row whose layout does not add up is returned as a hit, for the caller's decoder
        to judge.
        """
        cdef Py_ssize_t n, ncodes = PyBytes_GET_SIZE(cols)
        cdef const unsigned char *p = _data(buf, &n)
        cdef const unsigned char *codes = <const unsigned char *>PyBytes_AS_STRING(cols)
        cdef Py_ssize_t row_end, q, i, ncols, start
        cdef long long vlen
        cdef unsigned int size
        cdef unsigned char code
        if end > n:
            end = n
        if pos < 0:
            return pos
        while pos < end:
            if end - pos < 5:
                return pos
            size = _u32(p + pos + 1)
            row_end = pos + 1 + <Py_ssize_t>size
            if p[pos] != C_DATA_ROW or size < 6 or row_end > end:
                return pos
            ncols = <short>((p[pos + 5] << 8) | p[pos + 6])
            q = pos + 7
            for i in range(ncols):
                if q + 4 > row_end:
                    return pos
                vlen = <int>_u32(p + q)
                q += 4
                if vlen == -1:
                    continue
                if vlen < 0 or q + vlen > row_end:
                    return pos
                code = codes[i] if i < ncodes else C_SKIP
                if code != C_SKIP:
                    start = q if code == C_GATE else (q + 1 if vlen > 0 else q)
                    if not self._skips(p + start, q + vlen - start):
                        return pos
                q += vlen
            if q != row_end:
                return pos
            pos = row_end
        return end
