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
 * fingerprints 4. The GIL is released while it runs. Only the interpreter's own headers: no
 * library, no allocation.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
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

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS,
     "walk(buf, start, stop, out) -> (end, rows): the one-row COPY chunks from buf[start] before "
     "stop; out (or None) receives them framed (length bytes zeroed)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_chunkwalk", "pg_dump custom-archive COPY chunks walked in C.", -1, methods,
};

PyMODINIT_FUNC
PyInit__chunkwalk(void)
{
    return PyModule_Create(&module);
}
