/* The COPY chunks of a pg_dump custom archive's data block, walked in C (bvh_ops/logical/archive.py,
 * DumpFingerprinter._frames_walk): the fingerprinter's one per-row step, which numpy could only do
 * in several whole-buffer passes.
 *
 * walk(buf, start, stop, out) -> (end, rows)
 *
 * From buf[start] on, every whole chunk before stop that holds exactly one COPY row: a zero sign
 * byte, a 4-byte little-endian length above zero, then that many bytes whose only newline is the
 * last. It stops before the first chunk that is not such a chunk or does not end before stop (the
 * zero-length chunk that ends the block, pg_dump's three-line end marker, a row split across two
 * buffers, anything unexpected: the caller reads that one the plain way). Returns the offset in
 * buf after the last chunk taken and how many were taken.
 *
 * out (a writable buffer of at least stop - start bytes, or None) receives buf[start:end] with each
 * chunk's four length bytes zeroed: each row behind five zero bytes (ROW_MARK), the framed text of
 * fingerprints 4. The GIL is released while it runs. Only the interpreter's own headers and
 * libc: no library; walk() allocates nothing (rows() below, the drill's PITR sums, two growing
 * buffers per call).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

static Py_ssize_t
walk_chunks(const unsigned char *b, Py_ssize_t pos, Py_ssize_t stop, Py_ssize_t *rows)
{
    Py_ssize_t n = 0;
    while (stop - pos > 5) {
        const unsigned char *h = b + pos;
        Py_ssize_t len = (Py_ssize_t)h[1] | ((Py_ssize_t)h[2] << 8) | ((Py_ssize_t)h[3] << 16)
                         | ((Py_ssize_t)h[4] << 24);
        if (h[0] != 0 || len == 0 || len > stop - pos - 5)
            break;
        const unsigned char *row = h + 5;
        if (row[len - 1] != '\n' || (len > 1 && memchr(row, '\n', (size_t)(len - 1)) != NULL))
            break;
        pos += 5 + len;
        n++;
    }
    *rows = n;
    return pos;
}

static void
zero_lengths(unsigned char *o, Py_ssize_t size)
{
    Py_ssize_t pos = 0;
    while (pos < size) {
        Py_ssize_t len = (Py_ssize_t)o[pos + 1] | ((Py_ssize_t)o[pos + 2] << 8)
                         | ((Py_ssize_t)o[pos + 3] << 16) | ((Py_ssize_t)o[pos + 4] << 24);
        memset(o + pos + 1, 0, 4);
        pos += 5 + len;
    }
}

static PyObject *
walk(PyObject *self, PyObject *args)
{
    Py_buffer src, dst;
    Py_ssize_t start, stop;
    PyObject *out;
    if (!PyArg_ParseTuple(args, "y*nnO:walk", &src, &start, &stop, &out))
        return NULL;
    if (start < 0 || stop < start || stop > src.len) {
        PyBuffer_Release(&src);
        PyErr_SetString(PyExc_ValueError, "walk: start and stop must lie within the buffer");
        return NULL;
    }
    int copy = out != Py_None;
    if (copy) {
        if (PyObject_GetBuffer(out, &dst, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
            PyBuffer_Release(&src);
            return NULL;
        }
        if (dst.len < stop - start) {
            PyBuffer_Release(&dst);
            PyBuffer_Release(&src);
            PyErr_SetString(PyExc_ValueError, "walk: out is shorter than stop - start");
            return NULL;
        }
    }
    Py_ssize_t end, rows;
    const unsigned char *b = (const unsigned char *)src.buf;
    Py_BEGIN_ALLOW_THREADS
    end = walk_chunks(b, start, stop, &rows);
    if (copy && end > start) {
        memcpy(dst.buf, b + start, (size_t)(end - start));
        zero_lengths((unsigned char *)dst.buf, end - start);
    }
    Py_END_ALLOW_THREADS
    if (copy)
        PyBuffer_Release(&dst);
    PyBuffer_Release(&src);
    return Py_BuildValue("nn", end, rows);
}

/* ------------------------------------------------------------------------------------------
 * rows(buf, start, stop, chunked, ncols, col, cutoff, acc) -> end
 *
 * The drill's restored side of the PITR comparison, computed from an append-only table's COPY
 * text as the deep verify decrypts the dump (checks/dump_pitr.py): for every row, the server's
 * hashtextextended(t::text, 0) (PostgreSQL's hash_bytes_extended over the row's record text, as
 * record_out writes it from the same output-function text COPY escaped), summed over the rows
 * whose commit column (field ``col``, a timestamptz written with TimeZone UTC) is at or before
 * ``cutoff`` (its text, PostgreSQL's form: lexicographic order is time order for it).
 *
 * chunked: the rows are one-row chunks as walk() took them (a 5-byte header before each);
 * else newline-ended lines. Stops at stop (which must end a row) and returns it.
 *
 * acc (a writable buffer of 6 int64, little-endian host order) accumulates: [0] rows at or
 * before the cutoff, [1] and [2] the low and high 64 bits of their hashes' signed 128-bit sum,
 * [3] every row, [4] rows it could not read (a field count other than ncols, a malformed
 * escape, a commit value not of the form YYYY-MM-DD HH:MM:SS[.ffffff]+00): the caller trusts
 * nothing then. UTF-8 (or ASCII) text only: its bytes >= 0x80 are never space to record_out.
 * The GIL is released while it runs. */

typedef unsigned int u32;
typedef unsigned long long u64;

#define ROT(x, k) (((x) << (k)) | ((x) >> (32 - (k))))
#define MIX(a, b, c) \
    { \
        a -= c; a ^= ROT(c, 4); c += b; \
        b -= a; b ^= ROT(a, 6); a += c; \
        c -= b; c ^= ROT(b, 8); b += a; \
        a -= c; a ^= ROT(c, 16); c += b; \
        b -= a; b ^= ROT(a, 19); a += c; \
        c -= b; c ^= ROT(b, 4); b += a; \
    }
#define FINAL(a, b, c) \
    { \
        c ^= b; c -= ROT(b, 14); \
        a ^= c; a -= ROT(c, 11); \
        b ^= a; b -= ROT(a, 25); \
        c ^= b; c -= ROT(b, 16); \
        a ^= c; a -= ROT(c, 4); \
        b ^= a; b -= ROT(a, 14); \
        c ^= b; c -= ROT(b, 24); \
    }

/* PostgreSQL's hash_bytes_extended(k, keylen, 0) (src/common/hashfn.c) as a little-endian server
 * computes it (its result does not depend on alignment): whole words read where this CPU is
 * little-endian too, else byte by byte. */
static u64
pg_hash_bytes_extended(const unsigned char *k, size_t keylen)
{
    u32 a, b, c, len = (u32)keylen;
    a = b = c = 0x9e3779b9 + len + 3923095;
    while (len >= 12) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        u32 w[3]; /* the same little-endian words, read whole */
        memcpy(w, k, sizeof w);
        a += w[0];
        b += w[1];
        c += w[2];
#else
        a += k[0] + ((u32)k[1] << 8) + ((u32)k[2] << 16) + ((u32)k[3] << 24);
        b += k[4] + ((u32)k[5] << 8) + ((u32)k[6] << 16) + ((u32)k[7] << 24);
        c += k[8] + ((u32)k[9] << 8) + ((u32)k[10] << 16) + ((u32)k[11] << 24);
#endif
        MIX(a, b, c);
        k += 12;
        len -= 12;
    }
    switch (len) {
    case 11: c += ((u32)k[10] << 24); /* fall through */
    case 10: c += ((u32)k[9] << 16); /* fall through */
    case 9: c += ((u32)k[8] << 8); /* fall through */
    case 8: b += ((u32)k[7] << 24); /* fall through */
    case 7: b += ((u32)k[6] << 16); /* fall through */
    case 6: b += ((u32)k[5] << 8); /* fall through */
    case 5: b += k[4]; /* fall through */
    case 4: a += ((u32)k[3] << 24); /* fall through */
    case 3: a += ((u32)k[2] << 16); /* fall through */
    case 2: a += ((u32)k[1] << 8); /* fall through */
    case 1: a += k[0];
    }
    FINAL(a, b, c);
    return ((u64)b << 32) | c;
}

typedef struct {
    unsigned char *p;
    size_t len, cap;
} growbuf;

static int
grow(growbuf *g, size_t need)
{
    if (g->len + need <= g->cap)
        return 1;
    size_t cap = g->cap ? g->cap : 1 << 16;
    while (cap < g->len + need)
        cap *= 2;
    unsigned char *p = (unsigned char *)realloc(g->p, cap);
    if (p == NULL)
        return 0;
    g->p = p;
    g->cap = cap;
    return 1;
}

/* Is t[0..n) of the form YYYY-MM-DD HH:MM:SS[.f{1,6}]+00 ? */
static int
plain_utc_timestamp(const unsigned char *t, size_t n)
{
    static const char shape[] = "dddd-dd-dd dd:dd:dd";
    if (n < 22)
        return 0;
    for (size_t i = 0; i < 19; i++) {
        if (shape[i] == 'd' ? (t[i] < '0' || t[i] > '9') : t[i] != (unsigned char)shape[i])
            return 0;
    }
    size_t i = 19;
    if (t[i] == '.') {
        size_t d = 0;
        for (i++; i < n && t[i] >= '0' && t[i] <= '9'; i++)
            d++;
        if (d < 1 || d > 6)
            return 0;
    }
    return n - i == 3 && t[i] == '+' && t[i + 1] == '0' && t[i + 2] == '0';
}

static int
at_or_before(const unsigned char *t, size_t n, const unsigned char *cut, size_t cn)
{
    size_t m = n < cn ? n : cn;
    int r = memcmp(t, cut, m);
    return r < 0 || (r == 0 && n <= cn);
}

/* What a byte is to record_out and COPY (filled by init_classes): */
#define C_QUOTE 1  /* record_out quotes a value holding it: " \ ( ) , and C isspace */
#define C_ESCAPE 2 /* COPY's escape: the value is not the field's bytes as they are */
#define C_DOUBLE 4 /* record_out doubles it inside quotes: " \ */
static unsigned char classes[256];

static void
init_classes(void)
{
    const char *quote = "\"\\(), \t\n\v\f\r";
    for (const char *c = quote; *c; c++)
        classes[(unsigned char)*c] |= C_QUOTE;
    classes['\\'] |= C_ESCAPE | C_DOUBLE;
    classes['"'] |= C_DOUBLE;
}

/* One field's value (COPY-escaped in f[0..flen)), appended to rec as record_out writes it.
 * 1 done, 0 not readable. */
static int
put_value(const unsigned char *f, size_t flen, unsigned flags, growbuf *rec, growbuf *val)
{
    const unsigned char *v = f;
    size_t vlen = flen;
    if (flags & C_ESCAPE) { /* unescape into val first, then classify what it holds */
        val->len = 0;
        if (!grow(val, flen))
            return -1;
        flags = 0;
        for (size_t i = 0; i < flen; i++) {
            unsigned char ch = f[i];
            if (ch == '\\') {
                if (++i >= flen)
                    return 0;
                switch (f[i]) {
                case 'b': ch = '\b'; break;
                case 'f': ch = '\f'; break;
                case 'n': ch = '\n'; break;
                case 'r': ch = '\r'; break;
                case 't': ch = '\t'; break;
                case 'v': ch = '\v'; break;
                default:
                    if ((f[i] >= '0' && f[i] <= '7') || f[i] == 'x' || f[i] == 'N' || f[i] == '.')
                        return 0; /* COPY TO never writes these inside a value */
                    ch = f[i];
                }
            }
            flags |= classes[ch];
            val->p[val->len++] = ch;
        }
        v = val->p;
        vlen = val->len;
    }
    int quote = vlen == 0 || (flags & C_QUOTE);
    if (quote)
        rec->p[rec->len++] = '"';
    if (flags & C_DOUBLE) {
        for (size_t i = 0; i < vlen; i++) {
            if (classes[v[i]] & C_DOUBLE)
                rec->p[rec->len++] = v[i];
            rec->p[rec->len++] = v[i];
        }
    } else {
        memcpy(rec->p + rec->len, v, vlen);
        rec->len += vlen;
    }
    if (quote)
        rec->p[rec->len++] = '"';
    return 1;
}

/* One row (without its newline): 1 read, 0 not readable, -1 out of memory. */
static int
one_row(const unsigned char *row, size_t n, int ncols, int col, const unsigned char *cut, size_t cn,
        growbuf *rec, growbuf *val, long long *acc)
{
    if (n == 2 && row[0] == '\\' && row[1] == '.')
        return 1; /* COPY's end marker, not a row */
    /* Each of k fields takes at most 2 * its length + 3 (its quotes, a comma), the parentheses 2:
     * 2 (n - k + 1) + 3k + 2 <= 3n + 5 (k <= n + 1: empty fields are all quotes and commas). */
    rec->len = 0;
    if (!grow(rec, 3 * n + 8))
        return -1;
    rec->p[rec->len++] = '(';
    int field = 0, counted = 0;
    size_t pos = 0;
    for (;;) {
        size_t end = pos;
        unsigned flags = 0;
        while (end < n && row[end] != '\t')
            flags |= classes[row[end++]];
        if (field >= ncols)
            return 0;
        if (field > 0)
            rec->p[rec->len++] = ',';
        const unsigned char *f = row + pos;
        size_t flen = end - pos;
        if (!(flen == 2 && f[0] == '\\' && f[1] == 'N')) { /* \N: NULL, nothing between the commas */
            int r = put_value(f, flen, flags, rec, val);
            if (r <= 0)
                return r;
            if (field == col) {
                if (!plain_utc_timestamp(f, flen))
                    return 0;
                counted = at_or_before(f, flen, cut, cn);
            }
        }
        field++;
        if (end >= n)
            break;
        pos = end + 1;
    }
    if (field != ncols)
        return 0;
    rec->p[rec->len++] = ')';
    acc[3]++;
    if (counted) {
        long long h = (long long)pg_hash_bytes_extended(rec->p, rec->len);
        __int128 sum = (__int128)(((unsigned __int128)(u64)acc[2] << 64) | (u64)acc[1]);
        sum += h;
        acc[1] = (long long)(u64)sum;
        acc[2] = (long long)(sum >> 64);
        acc[0]++;
    }
    return 1;
}

static PyObject *
rows(PyObject *self, PyObject *args)
{
    Py_buffer src, cutb, accb;
    Py_ssize_t start, stop;
    int chunked, ncols, col;
    if (!PyArg_ParseTuple(args, "y*nnpiiy*w*:rows", &src, &start, &stop, &chunked, &ncols, &col, &cutb, &accb))
        return NULL;
    const char *error = NULL;
    if (start < 0 || stop < start || stop > src.len)
        error = "rows: start and stop must lie within the buffer";
    else if (accb.len < 6 * (Py_ssize_t)sizeof(long long))
        error = "rows: acc must hold 6 int64";
    else if (ncols < 1 || col < 0 || col >= ncols)
        error = "rows: col must be one of ncols fields";
    if (error != NULL) {
        PyBuffer_Release(&src);
        PyBuffer_Release(&cutb);
        PyBuffer_Release(&accb);
        PyErr_SetString(PyExc_ValueError, error);
        return NULL;
    }
    const unsigned char *b = (const unsigned char *)src.buf;
    long long acc[6];
    memcpy(acc, accb.buf, sizeof acc);
    growbuf rec = {0}, val = {0};
    int failed = 0;
    Py_ssize_t pos = start;
    Py_BEGIN_ALLOW_THREADS
    while (pos < stop) {
        const unsigned char *row;
        size_t n;
        if (chunked) {
            if (stop - pos < 6)
                break;
            const unsigned char *h = b + pos;
            size_t len = (size_t)h[1] | ((size_t)h[2] << 8) | ((size_t)h[3] << 16) | ((size_t)h[4] << 24);
            if (len == 0 || (Py_ssize_t)len > stop - pos - 5 || h[5 + len - 1] != '\n')
                break;
            row = h + 5;
            n = len - 1;
            pos += 5 + (Py_ssize_t)len;
        } else {
            const unsigned char *nl = memchr(b + pos, '\n', (size_t)(stop - pos));
            if (nl == NULL)
                break;
            row = b + pos;
            n = (size_t)(nl - row);
            pos += (Py_ssize_t)n + 1;
        }
        int r = one_row(row, n, ncols, col, (const unsigned char *)cutb.buf, (size_t)cutb.len, &rec, &val, acc);
        if (r < 0) {
            failed = 1;
            break;
        }
        if (r == 0)
            acc[4]++;
    }
    Py_END_ALLOW_THREADS
    free(rec.p);
    free(val.p);
    memcpy(accb.buf, acc, sizeof acc);
    PyBuffer_Release(&src);
    PyBuffer_Release(&cutb);
    PyBuffer_Release(&accb);
    if (failed)
        return PyErr_NoMemory();
    return PyLong_FromSsize_t(pos);
}

static PyObject *
hash_text(PyObject *self, PyObject *args)
{
    Py_buffer src;
    if (!PyArg_ParseTuple(args, "y*:hash_text", &src))
        return NULL;
    u64 h = pg_hash_bytes_extended((const unsigned char *)src.buf, (size_t)src.len);
    PyBuffer_Release(&src);
    return PyLong_FromLongLong((long long)h);
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS,
     "walk(buf, start, stop, out) -> (end, rows): the one-row COPY chunks from buf[start] before "
     "stop; out (or None) receives them framed (length bytes zeroed)."},
    {"rows", rows, METH_VARARGS,
     "rows(buf, start, stop, chunked, ncols, col, cutoff, acc) -> end: the PITR sums of COPY rows "
     "(hashtextextended of each row's record text, for rows whose field col is at or before cutoff)."},
    {"hash_text", hash_text, METH_VARARGS,
     "hash_text(bytes) -> int: PostgreSQL's hashtextextended(text, 0) of these bytes (as int8)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_chunkwalk", "pg_dump custom-archive COPY chunks walked in C.", -1, methods,
};

PyMODINIT_FUNC
PyInit__chunkwalk(void)
{
    init_classes();
    return PyModule_Create(&module);
}
