/* The optional C parts of dizzy's protocol package: Ed25519 signature checks by
 * the batch, with the GIL released for the whole batch; the template form of
 * an event read, hashed and checked in one call; and base32 spelling.
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
 * check_template reads what protocol/checked.py's regular expression reads
 * (the template: the canonical form nearly every event has), hashes the body
 * with BLAKE3 and checks the signature, all without the GIL: Python is left
 * with the data's canonical check and the key caches, and the reading runs on
 * both cores instead of one at a time. What it does not take (any doubt: a
 * byte out of place, a bad signature) goes back to Python, which decides as
 * decode_event does; tests/test_checked.py runs every case on both paths.
 * BLAKE3 here is written from its specification for inputs of any length and
 * tested against the blake3 package (tests/test_checked.py). And
 * tests/test_native_sanitized.py runs those tests again on this file built
 * with AddressSanitizer and UndefinedBehaviorSanitizer.
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

/* -- BLAKE3 (the hash of event ids), from its specification -------------------- */

#define B3_BLOCK 64
#define B3_CHUNK 1024
enum { B3_CHUNK_START = 1, B3_CHUNK_END = 2, B3_PARENT = 4, B3_ROOT = 8 };

static const uint32_t B3_IV[8] = {0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
                                  0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19};
static const uint8_t B3_PERMUTATION[16] = {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8};

static inline uint32_t rotr32(uint32_t w, int c) { return (w >> c) | (w << (32 - c)); }

/* The message words each of the seven rounds takes, in order: the permutation
 * applied round after round (filled in when the module loads). */
static uint8_t B3_SCHEDULE[7][16];

#define B3_G(a, b, c, d, x, y)      \
    do {                            \
        a = a + b + (x);            \
        d = rotr32(d ^ a, 16);      \
        c = c + d;                  \
        b = rotr32(b ^ c, 12);      \
        a = a + b + (y);            \
        d = rotr32(d ^ a, 8);       \
        c = c + d;                  \
        b = rotr32(b ^ c, 7);       \
    } while (0)

/* The compression function: cv becomes the first half of its output. */
static void b3_compress(uint32_t cv[8], const unsigned char block[B3_BLOCK], uint64_t counter,
                        uint32_t length, uint32_t flags) {
    uint32_t m[16];
    for (int i = 0; i < 16; i++) {
        const unsigned char *w = block + 4 * i;
        m[i] = (uint32_t)w[0] | (uint32_t)w[1] << 8 | (uint32_t)w[2] << 16 | (uint32_t)w[3] << 24;
    }
    uint32_t s0 = cv[0], s1 = cv[1], s2 = cv[2], s3 = cv[3], s4 = cv[4], s5 = cv[5], s6 = cv[6],
             s7 = cv[7], s8 = B3_IV[0], s9 = B3_IV[1], s10 = B3_IV[2], s11 = B3_IV[3],
             s12 = (uint32_t)counter, s13 = (uint32_t)(counter >> 32), s14 = length, s15 = flags;
    for (int round = 0; round < 7; round++) {
        const uint8_t *k = B3_SCHEDULE[round];
        B3_G(s0, s4, s8, s12, m[k[0]], m[k[1]]);
        B3_G(s1, s5, s9, s13, m[k[2]], m[k[3]]);
        B3_G(s2, s6, s10, s14, m[k[4]], m[k[5]]);
        B3_G(s3, s7, s11, s15, m[k[6]], m[k[7]]);
        B3_G(s0, s5, s10, s15, m[k[8]], m[k[9]]);
        B3_G(s1, s6, s11, s12, m[k[10]], m[k[11]]);
        B3_G(s2, s7, s8, s13, m[k[12]], m[k[13]]);
        B3_G(s3, s4, s9, s14, m[k[14]], m[k[15]]);
    }
    cv[0] = s0 ^ s8;
    cv[1] = s1 ^ s9;
    cv[2] = s2 ^ s10;
    cv[3] = s3 ^ s11;
    cv[4] = s4 ^ s12;
    cv[5] = s5 ^ s13;
    cv[6] = s6 ^ s14;
    cv[7] = s7 ^ s15;
}

static void b3_words_to_bytes(const uint32_t words[8], unsigned char out[32]) {
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)words[i];
        out[4 * i + 1] = (unsigned char)(words[i] >> 8);
        out[4 * i + 2] = (unsigned char)(words[i] >> 16);
        out[4 * i + 3] = (unsigned char)(words[i] >> 24);
    }
}

/* The chaining value of the subtree holding in[0:length], whose first chunk is
 * chunk number `counter`; `root` for the whole input. A subtree of more than one
 * chunk has on its left the largest power-of-two number of chunks that leaves
 * the right side at least one byte. */
static void b3_subtree(const unsigned char *in, size_t length, uint64_t counter, uint32_t root,
                       uint32_t cv[8]) {
    memcpy(cv, B3_IV, sizeof B3_IV);
    if (length <= B3_CHUNK) {
        size_t blocks = length == 0 ? 1 : (length + B3_BLOCK - 1) / B3_BLOCK;
        for (size_t b = 0; b < blocks; b++) {
            unsigned char block[B3_BLOCK] = {0};
            size_t size = length - b * B3_BLOCK < B3_BLOCK ? length - b * B3_BLOCK : B3_BLOCK;
            memcpy(block, in + b * B3_BLOCK, size);
            uint32_t flags = (b == 0 ? B3_CHUNK_START : 0) | (b == blocks - 1 ? B3_CHUNK_END | root : 0);
            b3_compress(cv, block, counter, (uint32_t)size, flags);
        }
        return;
    }
    size_t left = B3_CHUNK;
    while (2 * left < length) {
        left *= 2;
    }
    uint32_t children[16];
    b3_subtree(in, left, counter, 0, children);
    b3_subtree(in + left, length - left, counter + left / B3_CHUNK, 0, children + 8);
    unsigned char block[B3_BLOCK];
    b3_words_to_bytes(children, block);
    b3_words_to_bytes(children + 8, block + 32);
    b3_compress(cv, block, 0, B3_BLOCK, B3_PARENT | root);
}

static void blake3_256(const unsigned char *in, size_t length, unsigned char out[32]) {
    uint32_t cv[8];
    b3_subtree(in, length, 0, B3_ROOT, cv);
    b3_words_to_bytes(cv, out);
}

/* blake3(data) -> bytes: the 32-byte BLAKE3 hash; for the tests. */
static PyObject *blake3_digest(PyObject *self, PyObject *arg) {
    Py_buffer view;
    unsigned char out[32];
    (void)self;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    blake3_256(view.buf, (size_t)view.len, out);
    PyBuffer_Release(&view);
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

/* -- the template form of an event -------------------------------------------------
 *
 * {"author":"ag_K","clock":N,"data":{…},"depth":N,"entity":"en_K",
 *  "parents":["ev_K",…],"sig":"S","type":"T","v":1}
 *
 * as protocol/checked.py's _TEMPLATE spells it: K is 52 base32 characters
 * whose 4 padding bits are zero, S 103 whose 3 are, N a number without
 * leading zeros of at most 16 digits, 1 to 64 parents in strictly increasing
 * order, T a type name, and the data ends at the one '},"depth":' of the
 * event. */

#define TEMPLATE_MAX 4096 /* checked.py's _TEMPLATE_MAX */
#define ID_CHARS 52
#define SIG_CHARS 103
#define MAX_PARENTS 64
#define TYPE_MAX 64
#define MAX_SAFE_INTEGER 9007199254740991LL
#define ID_TEXT (3 + ID_CHARS) /* "ag_…", "en_…", "ev_…" */

static signed char B32_VALUE[256];

typedef struct {
    size_t author, entity, parents, type, type_length, data, data_length;
    int parent_count;
    long long depth;
    unsigned char key[KEY_BYTES], sig[SIG_BYTES], digest[32];
} Template;

typedef struct {
    const unsigned char *at, *end;
} Cursor;

static int take(Cursor *c, const char *text) {
    size_t n = strlen(text);
    if ((size_t)(c->end - c->at) < n || memcmp(c->at, text, n) != 0) {
        return 0;
    }
    c->at += n;
    return 1;
}

/* `chars` base32 characters decoded into out (size bytes; out may be NULL), the
 * padding bits zero. */
static int take_base32(Cursor *c, size_t chars, unsigned char *out, size_t size) {
    if ((size_t)(c->end - c->at) < chars) {
        return 0;
    }
    uint32_t bits = 0;
    int held = 0;
    size_t written = 0;
    for (size_t i = 0; i < chars; i++) {
        int v = B32_VALUE[c->at[i]];
        if (v < 0) {
            return 0;
        }
        bits = (bits << 5) | (uint32_t)v;
        held += 5;
        if (held >= 8) {
            held -= 8;
            if (written == size) {
                return 0; /* more than size bytes */
            }
            if (out != NULL) {
                out[written] = (unsigned char)(bits >> held);
            }
            written++;
            bits &= (1u << held) - 1;
        }
    }
    if (written != size || bits != 0) {
        return 0;
    }
    c->at += chars;
    return 1;
}

static int take_number(Cursor *c, long long *value) {
    const unsigned char *start = c->at;
    long long v = 0;
    while (c->at < c->end && *c->at >= '0' && *c->at <= '9' && c->at - start < 17) {
        v = v * 10 + (*c->at - '0');
        c->at++;
    }
    size_t digits = (size_t)(c->at - start);
    if (digits == 0 || digits > 16 || (digits > 1 && *start == '0')) {
        return 0;
    }
    *value = v;
    return 1;
}

static int type_char(unsigned char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '.' || ch == ':' || ch == '/' || ch == '-';
}

/* Where '},"depth":' is in raw, if it is there exactly once; else NULL. */
static const unsigned char *data_end(const unsigned char *raw, size_t length) {
    static const char mark[] = "},\"depth\":";
    const size_t n = sizeof mark - 1;
    const unsigned char *found = NULL, *at = raw, *end = raw + length;
    while ((size_t)(end - at) >= n && (at = memchr(at, '}', (size_t)(end - at) - n + 1)) != NULL) {
        if (memcmp(at, mark, n) == 0) {
            if (found != NULL) {
                return NULL;
            }
            found = at;
        }
        at++;
    }
    return found;
}

/* Read raw as the template; 1 and t filled in if it is one (the digest not yet). */
static int read_template(const unsigned char *raw, size_t length, Template *t,
                         size_t *sig_start, size_t *sig_end) {
    if (length > TEMPLATE_MAX) {
        return 0;
    }
    const unsigned char *end_of_data = data_end(raw, length);
    if (end_of_data == NULL) {
        return 0;
    }
    Cursor c = {raw, raw + length};
    long long clock;
    if (!take(&c, "{\"author\":\"")) {
        return 0;
    }
    t->author = (size_t)(c.at - raw);
    if (!take(&c, "ag_") || !take_base32(&c, ID_CHARS, t->key, KEY_BYTES) ||
        !take(&c, "\",\"clock\":") || !take_number(&c, &clock) || clock > MAX_SAFE_INTEGER ||
        !take(&c, ",\"data\":") || c.at >= end_of_data || *c.at != '{') {
        return 0;
    }
    t->data = (size_t)(c.at - raw);
    t->data_length = (size_t)(end_of_data + 1 - c.at);
    c.at = end_of_data + 1;
    if (!take(&c, ",\"depth\":") || !take_number(&c, &t->depth) || t->depth < 1 ||
        t->depth > MAX_SAFE_INTEGER || !take(&c, ",\"entity\":\"")) {
        return 0;
    }
    t->entity = (size_t)(c.at - raw);
    if (!take(&c, "en_") || !take_base32(&c, ID_CHARS, NULL, KEY_BYTES) ||
        !take(&c, "\",\"parents\":[\"")) {
        return 0;
    }
    t->parents = (size_t)(c.at - raw);
    t->parent_count = 0;
    for (;;) {
        const unsigned char *parent = c.at;
        if (!take(&c, "ev_") || !take_base32(&c, ID_CHARS, NULL, 32)) {
            return 0;
        }
        if (t->parent_count > 0 && memcmp(parent - 3 - ID_TEXT, parent, ID_TEXT) >= 0) {
            return 0; /* parents in strictly increasing order */
        }
        if (++t->parent_count > MAX_PARENTS) {
            return 0;
        }
        if (take(&c, "\"],\"sig\":\"")) {
            break;
        }
        if (!take(&c, "\",\"")) {
            return 0;
        }
    }
    size_t sig = (size_t)(c.at - raw); /* the signature's first character */
    if (!take_base32(&c, SIG_CHARS, t->sig, SIG_BYTES) || !take(&c, "\",\"type\":\"")) {
        return 0;
    }
    *sig_start = sig - strlen(",\"sig\":\""); /* the body leaves out ,"sig":"…" */
    *sig_end = sig + SIG_CHARS + 1;
    t->type = (size_t)(c.at - raw);
    if (c.at >= c.end || !((*c.at >= 'a' && *c.at <= 'z') || (*c.at >= 'A' && *c.at <= 'Z'))) {
        return 0;
    }
    while (c.at < c.end && type_char(*c.at)) {
        c.at++;
    }
    t->type_length = (size_t)(c.at - raw) - t->type;
    return t->type_length <= TYPE_MAX && take(&c, "\",\"v\":1}") && c.at == c.end;
}

static PyObject *ascii(const unsigned char *text, size_t length) {
    PyObject *out = PyUnicode_New((Py_ssize_t)length, 127);
    if (out != NULL) {
        memcpy(PyUnicode_1BYTE_DATA(out), text, length);
    }
    return out;
}

/* The tuple check_template gives for an event of the template form with a good
 * signature: (digest, author id, entity id, type, parents, depth, data), the
 * ids and type as bytes, the parents a tuple of str, the data the bytes of its
 * JSON object. */
static PyObject *template_tuple(const unsigned char *raw, const Template *t) {
    PyObject *out = PyTuple_New(7);
    if (out == NULL) {
        return NULL;
    }
    PyObject *parents = PyTuple_New(t->parent_count);
    PyTuple_SET_ITEM(out, 4, parents); /* from here on, out owns what is made */
    if (parents == NULL) {
        goto failed;
    }
    for (int i = 0; i < t->parent_count; i++) {
        PyObject *parent = ascii(raw + t->parents + (size_t)i * (ID_TEXT + 3), ID_TEXT);
        if (parent == NULL) {
            goto failed;
        }
        PyTuple_SET_ITEM(parents, i, parent);
    }
    const char *text = (const char *)raw;
    PyObject *item;
#define PUT(index, made)                  \
    if ((item = (made)) == NULL) {        \
        goto failed;                      \
    }                                     \
    PyTuple_SET_ITEM(out, index, item)
    PUT(0, PyBytes_FromStringAndSize((const char *)t->digest, 32));
    PUT(1, PyBytes_FromStringAndSize(text + t->author, ID_TEXT));
    PUT(2, PyBytes_FromStringAndSize(text + t->entity, ID_TEXT));
    PUT(3, PyBytes_FromStringAndSize(text + t->type, (Py_ssize_t)t->type_length));
    PUT(5, PyLong_FromLongLong(t->depth));
    PUT(6, PyBytes_FromStringAndSize(text + t->data, (Py_ssize_t)t->data_length));
#undef PUT
    return out;
failed:
    Py_DECREF(out); /* a tuple's NULL items are skipped as it is freed */
    return NULL;
}

/* check_template(address, context, raws) -> list: for each of raws, the
 * tuple of template_tuple if it has the template's form and its author's
 * signature of context + BLAKE3(body) verifies, the body being raw without
 * its ',"sig":"…"'; None otherwise (and for what is not bytes). */
static PyObject *check_template(PyObject *self, PyObject *args) {
    unsigned long long address;
    Py_buffer context;
    PyObject *raws_in;
    (void)self;
    if (!PyArg_ParseTuple(args, "Ky*O", &address, &context, &raws_in)) {
        return NULL;
    }
    PyObject *raws = NULL, *result = NULL;
    Template *found = NULL;
    char *good = NULL;
    unsigned char *body = NULL, *signed_message = NULL, *opened = NULL;
    if (address == 0) {
        PyErr_SetString(PyExc_ValueError, "no function to call");
        goto done;
    }
    if (context.len > 1024) {
        PyErr_SetString(PyExc_ValueError, "a context over 1 KiB");
        goto done;
    }
    raws = PySequence_Tuple(raws_in); /* ours: the items stay alive without the GIL */
    if (raws == NULL) {
        goto done;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(raws);
    size_t count = n > 0 ? (size_t)n : 1, message_length = (size_t)context.len + 32;
    if (count > SIZE_MAX / sizeof *found) {
        PyErr_NoMemory();
        goto done;
    }
    found = malloc(count * sizeof *found);
    good = calloc(count, 1);
    body = malloc(TEMPLATE_MAX);
    signed_message = malloc(2 * (SIG_BYTES + message_length));
    if (!found || !good || !body || !signed_message) {
        PyErr_NoMemory();
        goto done;
    }
    opened = signed_message + SIG_BYTES + message_length;
    sign_open check = (sign_open)(uintptr_t)address;
    memcpy(signed_message + SIG_BYTES, context.buf, (size_t)context.len);
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(raws, i);
        if (!PyBytes_CheckExact(item)) {
            continue; /* decode_event says what it is instead */
        }
        const unsigned char *raw = (const unsigned char *)PyBytes_AS_STRING(item);
        size_t length = (size_t)PyBytes_GET_SIZE(item), sig_start, sig_end;
        Template *t = &found[i];
        unsigned long long opened_length;
        if (!read_template(raw, length, t, &sig_start, &sig_end)) {
            continue;
        }
        memcpy(body, raw, sig_start);
        memcpy(body + sig_start, raw + sig_end, length - sig_end);
        blake3_256(body, length - (sig_end - sig_start), t->digest);
        memcpy(signed_message, t->sig, SIG_BYTES);
        memcpy(signed_message + SIG_BYTES + context.len, t->digest, 32);
        good[i] = check(opened, &opened_length, signed_message, SIG_BYTES + message_length,
                        t->key) == 0;
    }
    Py_END_ALLOW_THREADS
    result = PyList_New(n);
    for (Py_ssize_t i = 0; result != NULL && i < n; i++) {
        PyObject *item = Py_None;
        if (good[i]) {
            item = template_tuple((const unsigned char *)PyBytes_AS_STRING(PyTuple_GET_ITEM(raws, i)),
                                  &found[i]);
            if (item == NULL) {
                Py_CLEAR(result);
                break;
            }
        } else {
            Py_INCREF(item);
        }
        PyList_SET_ITEM(result, i, item);
    }
done:
    free(signed_message);
    free(body);
    free(good);
    free(found);
    Py_XDECREF(raws);
    PyBuffer_Release(&context);
    return result;
}

static PyMethodDef methods[] = {
    {"b32encode", b32encode, METH_O,
     "b32encode(data) -> str: lowercase base32 without padding."},
    {"open_all", open_all, METH_VARARGS,
     "open_all(address, keys, sigs, messages) -> bytes: 1 for each good signature."},
    {"check_template", check_template, METH_VARARGS,
     "check_template(address, context, raws) -> list: each event of the template form "
     "with a good signature read, else None."},
    {"blake3", blake3_digest, METH_O, "blake3(data) -> bytes: the 32-byte BLAKE3 hash."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "Ed25519 checks by the batch, events read, base32.", -1,
    methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    for (int i = 0; i < 16; i++) {
        B3_SCHEDULE[0][i] = (uint8_t)i;
    }
    for (int round = 1; round < 7; round++) {
        for (int i = 0; i < 16; i++) {
            B3_SCHEDULE[round][i] = B3_SCHEDULE[round - 1][B3_PERMUTATION[i]];
        }
    }
    memset(B32_VALUE, -1, sizeof B32_VALUE);
    for (int i = 0; i < 32; i++) {
        B32_VALUE[(unsigned char)ALPHABET[i]] = (signed char)i;
    }
    return PyModule_Create(&module);
}
