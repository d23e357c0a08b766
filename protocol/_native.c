/* The optional C parts of dizzy's protocol package: Ed25519 signature checks by
 * the batch, with the GIL released for the whole batch; and base32 spelling.
 *
 * dizzy verify re-checks every signature of an entity on a thread per core.
 * Called one at a time from Python, each check releases and retakes the GIL,
 * and between two checks the thread runs Python: two threads then queue for
 * the GIL at every event, and a core waits while the other runs Python. Here
 * a list of checks is one call, one release of the GIL.
 *
 * The check is libsodium's crypto_sign_open, the very function PyNaCl calls,
 * taken by address from PyNaCl's own binding (the address is an argument),
 * so there is no second libsodium whose verdicts could differ, and nothing to
 * link against. protocol/event.py falls back to one call per check when this
 * module was not built.
 *
 * Base32 spelling (b32encode) is on the path of every event made or printed:
 * each has an id and a signature to spell, and a flow's answer spells about
 * four. The Python version in protocol/ids.py takes about 2 us a call, this
 * one a tenth of that; the two are tested against each other.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int (*sign_open)(unsigned char *m, unsigned long long *mlen_p,
                         const unsigned char *sm, unsigned long long smlen,
                         const unsigned char *pk);

#define KEY_BYTES 32
#define SIG_BYTES 64

/* open_all(address, keys, sigs, messages) -> bytes: 1 where sigs[i] is the
 * signature of messages[i] by keys[i], 0 elsewhere (a key or signature of the
 * wrong length included). Every item is bytes. */
static PyObject *open_all(PyObject *self, PyObject *args) {
    unsigned long long address;
    PyObject *keys_in, *sigs_in, *messages_in;
    (void)self;
    if (!PyArg_ParseTuple(args, "KOOO", &address, &keys_in, &sigs_in, &messages_in)) {
        return NULL;
    }
    if (address == 0) {
        PyErr_SetString(PyExc_ValueError, "no function to call");
        return NULL;
    }
    /* Tuples of our own: the items stay alive while the GIL is released. */
    PyObject *keys = PySequence_Tuple(keys_in);
    PyObject *sigs = keys ? PySequence_Tuple(sigs_in) : NULL;
    PyObject *messages = sigs ? PySequence_Tuple(messages_in) : NULL;
    PyObject *result = NULL;
    const unsigned char **key = NULL, **sig = NULL, **message = NULL;
    size_t *length = NULL;
    unsigned char *buffer = NULL;
    if (messages == NULL) {
        goto done;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(keys);
    if (PyTuple_GET_SIZE(sigs) != n || PyTuple_GET_SIZE(messages) != n) {
        PyErr_SetString(PyExc_ValueError, "keys, sigs and messages differ in length");
        goto done;
    }
    size_t count = n > 0 ? (size_t)n : 1;
    key = malloc(count * sizeof *key);
    sig = malloc(count * sizeof *sig);
    message = malloc(count * sizeof *message);
    length = malloc(count * sizeof *length);
    if (!key || !sig || !message || !length) {
        PyErr_NoMemory();
        goto done;
    }
    size_t longest = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PyTuple_GET_ITEM(keys, i), *s = PyTuple_GET_ITEM(sigs, i);
        PyObject *m = PyTuple_GET_ITEM(messages, i);
        if (!PyBytes_Check(k) || !PyBytes_Check(s) || !PyBytes_Check(m)) {
            PyErr_SetString(PyExc_TypeError, "keys, sigs and messages are bytes");
            goto done;
        }
        int sizes_ok = PyBytes_GET_SIZE(k) == KEY_BYTES && PyBytes_GET_SIZE(s) == SIG_BYTES;
        key[i] = sizes_ok ? (const unsigned char *)PyBytes_AS_STRING(k) : NULL;
        sig[i] = (const unsigned char *)PyBytes_AS_STRING(s);
        message[i] = (const unsigned char *)PyBytes_AS_STRING(m);
        length[i] = (size_t)PyBytes_GET_SIZE(m);
        if (length[i] > longest) {
            longest = length[i];
        }
    }
    /* One buffer for the signed message and one for what crypto_sign_open
     * writes out: it takes the signature followed by the message. */
    buffer = malloc(2 * (SIG_BYTES + longest));
    result = PyBytes_FromStringAndSize(NULL, n);
    if (buffer == NULL || result == NULL) {
        Py_CLEAR(result);
        if (buffer == NULL) {
            PyErr_NoMemory();
        }
        goto done;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    unsigned char *signed_message = buffer, *opened = buffer + SIG_BYTES + longest;
    sign_open check = (sign_open)(uintptr_t)address;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long long opened_length;
        out[i] = 0;
        if (key[i] == NULL) {
            continue;
        }
        memcpy(signed_message, sig[i], SIG_BYTES);
        memcpy(signed_message + SIG_BYTES, message[i], length[i]);
        out[i] = check(opened, &opened_length, signed_message, SIG_BYTES + length[i], key[i]) == 0;
    }
    Py_END_ALLOW_THREADS
done:
    free(buffer);
    free(length);
    free(message);
    free(sig);
    free(key);
    Py_XDECREF(messages);
    Py_XDECREF(sigs);
    Py_XDECREF(keys);
    return result;
}

static const char ALPHABET[] = "abcdefghijklmnopqrstuvwxyz234567";

/* b32encode(data) -> str: lowercase base32 without padding (RFC 4648 section 6
 * alphabet); the last character's unused low bits are zero. */
static PyObject *b32encode(PyObject *self, PyObject *arg) {
    Py_buffer view;
    (void)self;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (view.len > PY_SSIZE_T_MAX / 8) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    const unsigned char *in = view.buf;
    PyObject *out = PyUnicode_New((view.len * 8 + 4) / 5, 127);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_UCS1 *text = PyUnicode_1BYTE_DATA(out);
    uint32_t bits = 0; /* the bits read and not yet spelled: fewer than 5 between bytes */
    int held = 0;
    for (Py_ssize_t i = 0; i < view.len; i++) {
        bits = (bits << 8) | in[i];
        held += 8;
        while (held >= 5) {
            held -= 5;
            *text++ = (Py_UCS1)ALPHABET[(bits >> held) & 31];
        }
        bits &= (1u << held) - 1;
    }
    if (held > 0) {
        *text = (Py_UCS1)ALPHABET[(bits << (5 - held)) & 31];
    }
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef methods[] = {
    {"b32encode", b32encode, METH_O,
     "b32encode(data) -> str: lowercase base32 without padding."},
    {"open_all", open_all, METH_VARARGS,
     "open_all(address, keys, sigs, messages) -> bytes: 1 for each good signature."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "Ed25519 checks by the batch, base32.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
