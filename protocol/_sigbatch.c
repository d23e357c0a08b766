/* Ed25519 signature checks by the batch, with the GIL released for the whole batch.
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

static PyMethodDef methods[] = {
    {"open_all", open_all, METH_VARARGS,
     "open_all(address, keys, sigs, messages) -> bytes: 1 for each good signature."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_sigbatch", "Ed25519 checks by the batch.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__sigbatch(void) { return PyModule_Create(&module); }
