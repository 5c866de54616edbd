/*
 * calico_lens.parse._scan: the kernel LOG line scanner in C.
 *
 * scan(text, tracker, now) does what parse_lines() in kernel_log.py does for a batch without eBPF
 * lines, line by line, with the same result: {(head, span, proto, dport, ""): count} for flows and
 * for resent SYNs, lines, ignored, malformed, the first malformed line. It only handles 1-byte
 * strings (ASCII/Latin-1, what kernel logs are); for anything else it returns None and the caller
 * takes the Python path. Property tests check that both paths, and both SYN trackers, agree.
 *
 * The grammar (LOG_RX in kernel_log.py), per line:
 *   wrapper?  dmesg-stamp?  head  "IN=" [^ ]* " OUT=" [^ ]* " " [^L]* "LEN="  ...  "PROTO=" [^ ]+
 *   (" SPT=" digits " DPT=" [^ ]+)?   (DPT as it stands: enrichment refuses what is not a port)
 * head is everything up to the first "IN="; span runs from "IN=" to just before the first "LEN=",
 * which must begin at the first 'L' after the OUT= value.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef const unsigned char *P;

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_upper(unsigned char c) { return c >= 'A' && c <= 'Z'; }
static int is_lower(unsigned char c) { return c >= 'a' && c <= 'z'; }
/* Python's str.isspace() for Latin-1: what \s matches in a str pattern. */
static int is_space(unsigned char c) {
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f) || c == 0x85 || c == 0xa0;
}

/* Each matcher returns the position after what it matched, or NULL. */
static P digits(P s, P e, int min) {
    P p = s;
    while (p < e && is_digit(*p)) p++;
    return (p - s >= min) ? p : NULL;
}
static P token(P s, P e) { /* [^ \n]+, or NULL */
    P p = s;
    while (p < e && *p != ' ' && *p != '\n') p++;
    return p > s ? p : NULL;
}
static P lit(P s, P e, const char *t) {
    size_t n = strlen(t);
    return ((size_t)(e - s) >= n && memcmp(s, t, n) == 0) ? s + n : NULL;
}
static P ndigits(P s, P e, int n) {
    for (int i = 0; i < n; i++) if (s + i >= e || !is_digit(s[i])) return NULL;
    return s + n;
}
/* \S+ " kernel: " */
static P host_kernel(P s, P e) {
    P p = s;
    while (p < e && !is_space(*p)) p++;
    if (p == s) return NULL;
    return lit(p, e, " kernel: ");
}
/* \d\d:\d\d:\d\d(\.\d+)? */
static P hms(P p, P e) {
    if (!(p = ndigits(p, e, 2)) || !(p = lit(p, e, ":")) || !(p = ndigits(p, e, 2)) || !(p = lit(p, e, ":")) ||
        !(p = ndigits(p, e, 2)))
        return NULL;
    if (p < e && *p == '.' && p + 1 < e && is_digit(p[1])) p = digits(p + 1, e, 1);
    return p;
}
static P wrapper(P s, P e) {
    P p;
    /* /dev/kmsg: \d+,\d+,\d+,[^;\n]*; */
    if ((p = digits(s, e, 1)) && (p = lit(p, e, ",")) && (p = digits(p, e, 1)) && (p = lit(p, e, ",")) &&
        (p = digits(p, e, 1)) && (p = lit(p, e, ","))) {
        while (p < e && *p != ';') p++;
        if (p < e) return p + 1;
    }
    /* BSD syslog: [A-Z][a-z]{2} [ \d]\d hh:mm:ss(.f)? host kernel: */
    if (e - s >= 4 && is_upper(s[0]) && is_lower(s[1]) && is_lower(s[2]) && s[3] == ' ' && s + 5 < e &&
        (s[4] == ' ' || is_digit(s[4])) && is_digit(s[5]) && s + 6 < e && s[6] == ' ') {
        if ((p = hms(s + 7, e)) && (p = lit(p, e, " ")) && (p = host_kernel(p, e))) return p;
    }
    /* ISO: \d{4}-\d\d-\d\d[T ]hh:mm:ss(.f)?(Z|[+-]\d\d:?\d\d)? host kernel: */
    if ((p = ndigits(s, e, 4)) && (p = lit(p, e, "-")) && (p = ndigits(p, e, 2)) && (p = lit(p, e, "-")) &&
        (p = ndigits(p, e, 2)) && p < e && (*p == 'T' || *p == ' ') && (p = hms(p + 1, e))) {
        P q = p;
        if (q < e && *q == 'Z') q++;
        else if (q < e && (*q == '+' || *q == '-')) {
            P r = ndigits(q + 1, e, 2);
            if (r) {
                if (r < e && *r == ':') r++;
                r = ndigits(r, e, 2);
            }
            if (r) q = r;
        }
        if ((q = lit(q, e, " ")) && (q = host_kernel(q, e))) return q;
    }
    return s;
}

static P find(P s, P e, const char *t) {
    size_t n = strlen(t);
    if ((size_t)(e - s) < n) return NULL;
    for (P p = s; p + n <= e; p++) {
        p = memchr(p, t[0], (size_t)(e - p - n + 1));
        if (!p) return NULL;
        if (memcmp(p, t, n) == 0) return p;
    }
    return NULL;
}

/* What follows the wrapper and the stamp: 1 and the four parts when it is a flow line. */
static int parse_rest(P p, P e, P *hs, P *he, P *ss, P *se, P *ps, P *pe, P *ds, P *de) {
    P in = find(p, e, "IN=");
    if (!in) return 0;
    *hs = p; *he = in;
    P q = in + 3;
    while (q < e && *q != ' ') q++;
    if (!(q = lit(q, e, " OUT="))) return 0;
    while (q < e && *q != ' ') q++;
    if (q >= e) return 0;
    q++;
    P l = memchr(q, 'L', (size_t)(e - q));
    if (!l || !lit(l, e, "LEN=")) return 0;
    *ss = in; *se = l;
    P pr = find(l + 4, e, "PROTO=");
    if (!pr) return 0;
    P a = pr + 6, b = a;
    while (b < e && *b != ' ') b++;
    if (b == a) return 0;
    *ps = a; *pe = b;
    *ds = *de = b;
    P r;
    if ((r = lit(b, e, " SPT=")) && (r = digits(r, e, 1)) && (r = lit(r, e, " DPT="))) {
        P d = token(r, e);
        if (d) { *ds = r; *de = d; }
    }
    return 1;
}

static P stamp(P p, P e) { /* dmesg stamp: \[[^\]\n]*\] " ", or NULL */
    if (p < e && *p == '[') {
        P q = memchr(p, ']', (size_t)(e - p));
        if (q && q + 1 < e && q[1] == ' ') return q + 2;
    }
    return NULL;
}

/* One line. The wrapper and the stamp are optional, tried as the regex tries them: with each
 * first, then without, so that a line the regex reads is read the same way here. */
static int parse_line(P s, P e, P *hs, P *he, P *ss, P *se, P *ps, P *pe, P *ds, P *de) {
    P w = wrapper(s, e);
    P starts[2] = {w, s};
    for (int i = 0; i < (w == s ? 1 : 2); i++) {
        P st = stamp(starts[i], e);
        if (st && parse_rest(st, e, hs, he, ss, se, ps, pe, ds, de)) return 1;
        if (parse_rest(starts[i], e, hs, he, ss, se, ps, pe, ds, de)) return 1;
    }
    return 0;
}

/* For a TCP line: the source port, the IP ID and whether it is a bare SYN (SYN without ACK), read
 * as _syn() in kernel_log.py reads it. 1 when the line is a SYN with a port and an ID. */
static int syn_fields(P se, P ps, P pe, P de, P e, P *sp_s, P *sp_e, P *id_s, P *id_e) {
    if (pe - ps != 3 || memcmp(ps, "TCP", 3) != 0 || de == pe) return 0;  /* TCP with SPT and DPT */
    P r = lit(pe, e, " SPT=");
    if (!r) return 0;
    P d = digits(r, e, 1);
    if (!d || !lit(d, e, " DPT=")) return 0;
    *sp_s = r; *sp_e = d;
    P i = find(se, ps, " ID=");  /* between LEN= and PROTO= (IPv6 lines have none) */
    if (!i) return 0;
    P j = digits(i + 4, ps, 1);
    if (!j) return 0;
    *id_s = i + 4; *id_e = j;
    for (P q = de; (q = find(q, e, "RES=0x")) != NULL; q++) {
        P t = q + 6, h = t;
        while (h < e && (is_digit(*h) || (*h >= 'a' && *h <= 'f') || (*h >= 'A' && *h <= 'F'))) h++;
        if (h == t || h >= e || *h != ' ') continue;
        t = h + 1;
        int syn = 0, ack = 0;
        for (;;) {
            P w = t;
            while (w < e && is_upper(*w)) w++;
            if (w == t || w >= e || *w != ' ') break;
            if (w - t == 3 && memcmp(t, "SYN", 3) == 0) syn = 1;
            if (w - t == 3 && memcmp(t, "ACK", 3) == 0) ack = 1;
            t = w + 1;
        }
        if (!lit(t, e, "URGP=")) continue;
        return syn && !ack;
    }
    return 0;
}

/* A 64-bit hash continued over one more part, eight bytes a step (kernel_log.attempt_id() calls
 * it through attempt_id() below, so both paths name a connection attempt alike). */
#define HASH_SEED 14695981039346656037ULL
#define HASH_MUL 0x9E3779B97F4A7C15ULL
static unsigned long long mix(unsigned long long h) {
    h ^= h >> 31; h *= HASH_MUL; h ^= h >> 29;
    return h;
}
static unsigned long long hash_more(unsigned long long h, P a, P ae) {
    size_t n = (size_t)(ae - a);
    while (n >= 8) {
        unsigned long long w;
        memcpy(&w, a, 8);
        h = (h ^ w) * HASH_MUL;
        h ^= h >> 32;
        a += 8; n -= 8;
    }
    unsigned long long w = 0;
    memcpy(&w, a, n);
    return mix((h ^ w ^ ((unsigned long long)n << 56)) * HASH_MUL);
}

/* attempt_id(head, span, proto, dport, sport) (Latin-1 bytes): what scan() names a SYN's connection
 * attempt by: its raw key and its source port. */
static PyObject *attempt_id(PyObject *self, PyObject *args) {
    (void)self;
    const char *x[5]; Py_ssize_t n[5];
    if (!PyArg_ParseTuple(args, "y#y#y#y#y#", &x[0], &n[0], &x[1], &n[1], &x[2], &n[2], &x[3], &n[3], &x[4], &n[4]))
        return NULL;
    unsigned long long v = HASH_SEED;
    for (int i = 0; i < 5; i++) v = hash_more(v, (P)x[i], (P)x[i] + n[i]);
    return PyLong_FromUnsignedLongLong(v);
}

/*
 * SynTracker(window, limit): recent connection attempts (attempt id -> first IP ID, last second
 * seen), to tell a retransmitted SYN from a new attempt. Bounded by two generations of at most
 * limit/2 entries each: when the current one fills, it becomes the old one and the old one goes.
 * kernel_log.PySynTracker is the same algorithm in Python; a test holds both equal.
 */
typedef struct { unsigned long long attempt; unsigned long long v; int used; } SynSlot;
typedef struct {
    PyObject_HEAD
    double window;
    Py_ssize_t half, cap, n_cur, n_old;
    SynSlot *cur, *old;
} SynTracker;

static SynSlot *syn_find(SynSlot *t, Py_ssize_t cap, unsigned long long a) {
    size_t i = (size_t)mix(a) & (size_t)(cap - 1);
    while (t[i].used && t[i].attempt != a) i = (i + 1) & (size_t)(cap - 1);
    return &t[i];
}

/* 1 when this SYN is a resend of an attempt seen within the window (same attempt, another IP ID). */
static int syn_check(SynTracker *st, unsigned long long a, unsigned long long ip_id, unsigned long long now) {
    SynSlot *c = syn_find(st->cur, st->cap, a);
    unsigned long long v = 0;
    int have = 0, retry = 0;
    if (c->used) { v = c->v; have = 1; }
    else {
        SynSlot *o = syn_find(st->old, st->cap, a);
        if (o->used) { v = o->v; have = 1; }
    }
    if (!have || (double)(long long)(now - (v & 0xFFFFFFFFULL)) > st->window) {
        v = ip_id << 32 | now;
    } else {
        retry = (v >> 32) != ip_id;
        v = (v >> 32) << 32 | now;
    }
    if (!c->used) { c->used = 1; c->attempt = a; st->n_cur++; }
    c->v = v;
    if (st->n_cur >= st->half) {
        SynSlot *t = st->old;
        st->old = st->cur; st->n_old = st->n_cur;
        memset(t, 0, sizeof(SynSlot) * (size_t)st->cap);
        st->cur = t; st->n_cur = 0;
    }
    return retry;
}

static int syn_init(SynTracker *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"window", "limit", NULL};
    double window; Py_ssize_t limit;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "dn", kwlist, &window, &limit)) return -1;
    self->window = window;
    self->half = limit / 2 > 0 ? limit / 2 : 1;
    Py_ssize_t cap = 16;
    while (cap < 2 * self->half + 2) cap *= 2;
    PyMem_Free(self->cur); PyMem_Free(self->old);
    self->cur = PyMem_Calloc((size_t)cap, sizeof(SynSlot));
    self->old = PyMem_Calloc((size_t)cap, sizeof(SynSlot));
    if (!self->cur || !self->old) { PyErr_NoMemory(); return -1; }
    self->cap = cap; self->n_cur = self->n_old = 0;
    return 0;
}
static void syn_dealloc(SynTracker *self) {
    PyMem_Free(self->cur); PyMem_Free(self->old);
    Py_TYPE(self)->tp_free((PyObject *)self);
}
/* 0, with TypeError set, for a tracker made without __init__ (no tables to read). */
static int syn_ready(SynTracker *st) {
    if (st->cur) return 1;
    PyErr_SetString(PyExc_TypeError, "SynTracker was not initialised: SynTracker(window, limit)");
    return 0;
}

static PyObject *syn_check_py(SynTracker *self, PyObject *args) {
    unsigned long long a, id, now;
    if (!syn_ready(self) || !PyArg_ParseTuple(args, "KKK", &a, &id, &now)) return NULL;
    return PyBool_FromLong(syn_check(self, a, id & 0xFFFFFFFFULL, now & 0xFFFFFFFFULL));
}
static Py_ssize_t syn_len(SynTracker *self) { return self->n_cur + self->n_old; }
static PyMethodDef syn_methods[] = {
    {"check", (PyCFunction)syn_check_py, METH_VARARGS, "check(attempt, ip_id, now) -> True for a resent SYN"},
    {NULL, NULL, 0, NULL},
};
static PySequenceMethods syn_seq = {.sq_length = (lenfunc)syn_len};
static PyTypeObject SynTrackerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "calico_lens.parse._scan.SynTracker",
    .tp_basicsize = sizeof(SynTracker),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "SynTracker(window, limit): recent TCP connection attempts, to tell resent SYNs",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)syn_init,
    .tp_dealloc = (destructor)syn_dealloc,
    .tp_methods = syn_methods,
    .tp_as_sequence = &syn_seq,
};

/*
 * A set of nonzero 64-bit keys, open addressing with linear probing (0 marks an empty slot):
 * AddressClasses' known addresses and FlowDedupe's flow identities.
 */
typedef struct { unsigned long long *slot; size_t mask; } U64Set;

static int u64_init(U64Set *s, size_t n) {  /* room for n keys at most half full; 0 on no memory */
    size_t cap = 16;
    while (cap < n * 2 + 2) cap *= 2;
    if (!(s->slot = PyMem_Calloc(cap, sizeof(unsigned long long)))) return 0;
    s->mask = cap - 1;
    return 1;
}
static size_t u64_home(const U64Set *s, unsigned long long k) { return (size_t)mix(k * HASH_MUL) & s->mask; }
static int u64_has(const U64Set *s, unsigned long long k) {
    for (size_t i = u64_home(s, k); s->slot[i]; i = (i + 1) & s->mask)
        if (s->slot[i] == k) return 1;
    return 0;
}
static void u64_put(U64Set *s, unsigned long long k) {  /* the caller keeps it at most half full */
    size_t i = u64_home(s, k);
    while (s->slot[i] && s->slot[i] != k) i = (i + 1) & s->mask;
    s->slot[i] = k;
}
static void u64_del(U64Set *s, unsigned long long k) {  /* backward-shift delete: no tombstones */
    size_t i = u64_home(s, k);
    while (s->slot[i] != k) {
        if (!s->slot[i]) return;
        i = (i + 1) & s->mask;
    }
    for (size_t j = i;;) {
        j = (j + 1) & s->mask;
        if (!s->slot[j]) break;
        size_t h = u64_home(s, s->slot[j]);
        if ((j > i && (h <= i || h > j)) || (j < i && h <= i && h > j)) { s->slot[i] = s->slot[j]; i = j; }
    }
    s->slot[i] = 0;
}
static int u64_reserve(U64Set *s, size_t n) {  /* room for n keys; 0 on no memory */
    if (n * 2 + 2 <= s->mask + 1) return 1;
    U64Set bigger;
    if (!u64_init(&bigger, n * 2)) return 0;
    for (size_t i = 0; i <= s->mask; i++) if (s->slot[i]) u64_put(&bigger, s->slot[i]);
    PyMem_Free(s->slot);
    *s = bigger;
    return 1;
}

/*
 * AddressClasses(known, nets, private_starts, private_ends, private_repr, public_repr): what scan()
 * needs to fold the addresses enrichment cannot tell apart. An IPv4 source or destination that is
 * not a known endpoint (not in ``known``, in none of ``nets`` [(net, mask)]) gets the label of
 * "private" or "public" whatever its value, so scan() writes the class's representative address in
 * its place (an unknown address of that class, chosen by the caller, which also checks it). A flood
 * from a new address each line is then a few keys per batch instead of one per line. Only canonical
 * dotted quads are folded (what inet_pton takes, and less); anything else stays as written.
 */
typedef struct {
    PyObject_HEAD
    U64Set known;  /* address + 1, and mask << 32 | net + 1 for the networks */
    unsigned masks[33], *pstart, *pend;  /* the distinct network masks (at most one per length) */
    Py_ssize_t n_masks, n_priv;
    char repr[2][16];
    Py_ssize_t repr_len[2];  /* 0 private, 1 public; 0: that class is not folded */
} AddressClasses;

/* An address or a network (one lookup per distinct mask, not per network) names an endpoint. */
static int addr_known(const AddressClasses *c, unsigned v) {
    if (u64_has(&c->known, (unsigned long long)v + 1)) return 1;
    for (Py_ssize_t i = 0; i < c->n_masks; i++) {
        unsigned m = c->masks[i];
        if (u64_has(&c->known, ((unsigned long long)m << 32 | (v & m)) + 1)) return 1;
    }
    return 0;
}
/* -1: leave the address as written; otherwise the class to fold it into. */
static int addr_class(const AddressClasses *c, unsigned v) {
    if (addr_known(c, v)) return -1;
    Py_ssize_t lo = 0, hi = c->n_priv;  /* the last range starting at or below v */
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (c->pstart[mid] <= v) lo = mid + 1; else hi = mid;
    }
    int cls = (lo > 0 && v <= c->pend[lo - 1]) ? 0 : 1;
    return c->repr_len[cls] ? cls : -1;
}
/* A canonical dotted quad: four decimal octets of 1-3 digits, no leading zero, at most 255. */
static int ipv4_value(P s, P e, unsigned *out) {
    unsigned v = 0;
    P p = s;
    for (int part = 0; part < 4; part++) {
        P d = p;
        unsigned n = 0;
        while (p < e && is_digit(*p) && p - d < 3) n = n * 10 + (unsigned)(*p++ - '0');
        if (p == d || n > 255 || (p - d > 1 && *d == '0')) return 0;
        v = v << 8 | n;
        if (part < 3) {
            if (p >= e || *p != '.') return 0;
            p++;
        }
    }
    if (p != e) return 0;
    *out = v;
    return 1;
}

static void classes_dealloc(AddressClasses *c) {
    PyMem_Free(c->known.slot); PyMem_Free(c->pstart); PyMem_Free(c->pend);
    Py_TYPE(c)->tp_free((PyObject *)c);
}
/* The values of a sequence of ints (each < 2**32) into a new array; -1 on error. */
static Py_ssize_t uint_array(PyObject *seq, unsigned **out, const char *what) {
    PyObject *f = PySequence_Fast(seq, what);
    if (!f) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(f);
    unsigned *a = PyMem_Malloc(sizeof(unsigned) * (size_t)(n ? n : 1));
    if (!a) { Py_DECREF(f); PyErr_NoMemory(); return -1; }
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long v = PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(f, i));
        if ((v == (unsigned long)-1 && PyErr_Occurred()) || v > 0xFFFFFFFFUL) {
            if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%s: not an IPv4 value", what);
            PyMem_Free(a); Py_DECREF(f); return -1;
        }
        a[i] = (unsigned)v;
    }
    Py_DECREF(f);
    *out = a;
    return n;
}
static int classes_init(AddressClasses *c, PyObject *args, PyObject *kw) {
    (void)kw;
    PyObject *known, *nets, *masks, *ps, *pe;
    const char *r0, *r1;
    Py_ssize_t l0, l1;
    if (c->known.slot) {
        PyErr_SetString(PyExc_TypeError, "AddressClasses is immutable");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "OOOOOs#s#", &known, &nets, &masks, &ps, &pe, &r0, &l0, &r1, &l1)) return -1;
    unsigned *k = NULL, *nv = NULL, *mv = NULL;
    int too_many = 0;
    Py_ssize_t nk = uint_array(known, &k, "known"), nn = nk < 0 ? -1 : uint_array(nets, &nv, "nets");
    Py_ssize_t nm = nn < 0 ? -1 : uint_array(masks, &mv, "masks");
    if (nm >= 0 && nm != nn) PyErr_SetString(PyExc_ValueError, "nets and masks differ in length");
    else if (nm >= 0 && !u64_init(&c->known, (size_t)(nk + nn))) PyErr_NoMemory();
    if (!c->known.slot) { PyMem_Free(k); PyMem_Free(nv); PyMem_Free(mv); return -1; }
    for (Py_ssize_t i = 0; i < nk; i++) u64_put(&c->known, (unsigned long long)k[i] + 1);
    for (Py_ssize_t i = 0; i < nn; i++) {
        Py_ssize_t j = 0;
        while (j < c->n_masks && c->masks[j] != mv[i]) j++;
        if (j == c->n_masks) {
            if (c->n_masks == 33) { too_many = 1; break; }  /* not real masks: then fold nothing */
            c->masks[c->n_masks++] = mv[i];
        }
        u64_put(&c->known, ((unsigned long long)mv[i] << 32 | (nv[i] & mv[i])) + 1);
    }
    PyMem_Free(k); PyMem_Free(nv); PyMem_Free(mv);
    if ((c->n_priv = uint_array(ps, &c->pstart, "private_starts")) < 0) return -1;
    if (uint_array(pe, &c->pend, "private_ends") != c->n_priv) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "private starts and ends differ in length");
        return -1;
    }
    const char *r[2] = {r0, r1};
    Py_ssize_t l[2] = {l0, l1};
    for (int i = 0; i < 2; i++) {
        unsigned v;
        if (l[i] && (l[i] > 15 || !ipv4_value((P)r[i], (P)r[i] + l[i], &v))) {
            PyErr_SetString(PyExc_ValueError, "a representative must be a dotted quad (or empty: do not fold)");
            return -1;
        }
        memcpy(c->repr[i], r[i], (size_t)l[i]);
        c->repr_len[i] = too_many ? 0 : l[i];
    }
    return 0;
}
static PyObject *classes_fold(AddressClasses *self, PyObject *arg) {
    /* fold(address) -> the text scan() writes for it (the representative, or the address itself) */
    if (!self->known.slot) { PyErr_SetString(PyExc_TypeError, "AddressClasses was not initialised"); return NULL; }
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(arg, &n);
    if (!s) return NULL;
    unsigned v;
    int cls = ipv4_value((P)s, (P)s + n, &v) ? addr_class(self, v) : -1;
    if (cls < 0) { Py_INCREF(arg); return arg; }
    return PyUnicode_FromStringAndSize(self->repr[cls], self->repr_len[cls]);
}
static PyMethodDef classes_methods[] = {
    {"fold", (PyCFunction)classes_fold, METH_O, "fold(address) -> what scan() writes in its place"},
    {NULL, NULL, 0, NULL},
};
static PyTypeObject AddressClassesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "calico_lens.parse._scan.AddressClasses",
    .tp_basicsize = sizeof(AddressClasses),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "AddressClasses(known, nets, masks, private_starts, private_ends, private_repr, public_repr)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)classes_init,
    .tp_dealloc = (destructor)classes_dealloc,
    .tp_methods = classes_methods,
};

/* The span with its unknown addresses folded (in buf), or 0 when nothing is folded. The addresses
 * are the first " SRC=" token and the " DST=" token right after it, as split_span() reads them. */
static int fold_span(const AddressClasses *c, P ss, P se, unsigned char *buf, size_t cap, P *fe) {
    P src = find(ss, se, " SRC=");
    if (!src) return 0;
    P a = src + 5, ae = a;
    while (ae < se && *ae != ' ') ae++;
    P d = lit(ae, se, " DST="), de = d;
    if (!d) return 0;
    while (de < se && *de != ' ') de++;
    unsigned va, vd;
    int ca = ipv4_value(a, ae, &va) ? addr_class(c, va) : -1;
    int cd = de > d && ipv4_value(d, de, &vd) ? addr_class(c, vd) : -1;
    if (ca < 0 && cd < 0) return 0;
    P seg[5][2] = {{ss, a}, {a, ae}, {ae, d}, {d, de}, {de, se}};
    if (ca >= 0) { seg[1][0] = (P)c->repr[ca]; seg[1][1] = seg[1][0] + c->repr_len[ca]; }
    if (cd >= 0) { seg[3][0] = (P)c->repr[cd]; seg[3][1] = seg[3][0] + c->repr_len[cd]; }
    size_t n = 0;
    for (int i = 0; i < 5; i++) {
        size_t k = (size_t)(seg[i][1] - seg[i][0]);
        if (n + k > cap) return 0;
        memcpy(buf + n, seg[i][0], k);
        n += k;
    }
    *fe = buf + n;
    return 1;
}

/* Folded spans of new keys, kept for the batch in chunks that never move (keys point into them). */
typedef struct Arena { struct Arena *next; size_t used; unsigned char data[65536]; } Arena;
static P arena_copy(Arena **a, P s, P e) {
    size_t n = (size_t)(e - s);
    if (!*a || (*a)->used + n > sizeof((*a)->data)) {
        Arena *x = PyMem_Malloc(sizeof(Arena));
        if (!x) return NULL;
        x->next = *a; x->used = 0; *a = x;
    }
    unsigned char *p = (*a)->data + (*a)->used;
    memcpy(p, s, n);
    (*a)->used += n;
    return p;
}
static void arena_free(Arena *a) {
    while (a) { Arena *n = a->next; PyMem_Free(a); a = n; }
}

/* One distinct raw key of a batch: where its four parts are in the text, lines and resent SYNs. */
typedef struct {
    unsigned long long h;
    P hs, he, ss, se, ps, pe, ds, de;
    Py_ssize_t n, retried;
} KeySlot;
typedef struct { Py_ssize_t slot; unsigned long long attempt, ip_id; } SynRec;
typedef struct {
    Py_ssize_t *index;  /* open addressing: slot number + 1, 0 = empty */
    Py_ssize_t cap;     /* of index, a power of two */
    KeySlot *slots;     /* in first-seen order */
    Py_ssize_t n, slots_cap;
    SynRec *syns;
    Py_ssize_t n_syns, syns_cap;
} Batch;

static int same(P a, P ae, P b, P be) { return ae - a == be - b && memcmp(a, b, (size_t)(ae - a)) == 0; }

/* The slot of a key, added when new; -1 when out of memory. */
static Py_ssize_t batch_slot(Batch *b, unsigned long long h, P hs, P he, P ss, P se, P ps, P pe, P ds, P de) {
    if (2 * (b->n + 1) > b->cap) {
        Py_ssize_t cap = b->cap ? b->cap * 2 : 256;
        Py_ssize_t *ix = PyMem_Calloc((size_t)cap, sizeof(Py_ssize_t));
        if (!ix) return -1;
        for (Py_ssize_t k = 0; k < b->n; k++) {
            size_t i = (size_t)b->slots[k].h & (size_t)(cap - 1);
            while (ix[i]) i = (i + 1) & (size_t)(cap - 1);
            ix[i] = k + 1;
        }
        PyMem_Free(b->index);
        b->index = ix; b->cap = cap;
    }
    size_t i = (size_t)h & (size_t)(b->cap - 1);
    while (b->index[i]) {
        KeySlot *k = &b->slots[b->index[i] - 1];
        if (k->h == h && same(k->hs, k->he, hs, he) && same(k->ss, k->se, ss, se) && same(k->ps, k->pe, ps, pe) &&
            same(k->ds, k->de, ds, de))
            return b->index[i] - 1;
        i = (i + 1) & (size_t)(b->cap - 1);
    }
    if (b->n == b->slots_cap) {
        Py_ssize_t c = b->slots_cap ? b->slots_cap * 2 : 128;
        KeySlot *s = PyMem_Realloc(b->slots, sizeof(KeySlot) * (size_t)c);
        if (!s) return -1;
        b->slots = s; b->slots_cap = c;
    }
    KeySlot *k = &b->slots[b->n];
    k->h = h; k->hs = hs; k->he = he; k->ss = ss; k->se = se; k->ps = ps; k->pe = pe; k->ds = ds; k->de = de;
    k->n = k->retried = 0;
    b->index[i] = b->n + 1;
    return b->n++;
}

static int batch_syn(Batch *b, Py_ssize_t slot, unsigned long long attempt, unsigned long long ip_id) {
    if (b->n_syns == b->syns_cap) {
        Py_ssize_t c = b->syns_cap ? b->syns_cap * 2 : 256;
        SynRec *s = PyMem_Realloc(b->syns, sizeof(SynRec) * (size_t)c);
        if (!s) return -1;
        b->syns = s; b->syns_cap = c;
    }
    b->syns[b->n_syns++] = (SynRec){slot, attempt, ip_id};
    return 0;
}

static void batch_free(Batch *b) { PyMem_Free(b->index); PyMem_Free(b->slots); PyMem_Free(b->syns); }

/* The str of the last key part made at one position, reused while the next key's part is equal. */
typedef struct { P s, e; PyObject *obj; } Part;
static PyObject *part_str(Part *c, PyObject *text, P base, P s, P e) {
    if (!c->obj || !same(c->s, c->e, s, e)) {
        P end = base + PyUnicode_GET_LENGTH(text);  /* a folded span lives in the arena */
        PyObject *o = (s >= base && e <= end) ? PyUnicode_Substring(text, s - base, e - base)
                                              : PyUnicode_DecodeLatin1((const char *)s, e - s, NULL);
        if (!o) return NULL;
        Py_XDECREF(c->obj);
        c->obj = o; c->s = s; c->e = e;
    }
    return c->obj;
}
static void parts_free(Part *p) { for (int i = 0; i < 3; i++) Py_CLEAR(p[i].obj); }

/* The IP ID of a SYN as _syn() takes it: 1 to 5 digits, at most 65535. */
static int ip_id_value(P s, P e, unsigned long long *out) {
    if (e - s > 5) return 0;
    unsigned long long v = 0;
    for (P p = s; p < e; p++) v = v * 10 + (unsigned long long)(*p - '0');
    if (v > 65535) return 0;
    *out = v;
    return 1;
}

/*
 * scan(text, tracker, now) -> (counts, retried, lines, ignored, malformed, sample, dns) or None.
 * counts and retried map each raw key (head, span, proto, dport, "") to its lines: a bare SYN that
 * tracker says was resent goes to retried, every other flow line to counts. dns: a line that is not a
 * flow line holds "[INFO] " (CoreDNS may be in the batch). None (and the tracker untouched) for a
 * text that is not 1-byte or has an eBPF trace line: the caller takes the Python path.
 * Python objects are made once per distinct key, so a batch of repeating flows costs C time only.
 */
static PyObject *scan(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *arg, *tracker, *classes = Py_None;
    unsigned long long now;
    if (!PyArg_ParseTuple(args, "UOK|O", &arg, &tracker, &now, &classes)) return NULL;
    if (tracker != Py_None && !PyObject_TypeCheck(tracker, &SynTrackerType)) {
        PyErr_SetString(PyExc_TypeError, "scan(): tracker must be a SynTracker or None");
        return NULL;
    }
    if (classes != Py_None && (!PyObject_TypeCheck(classes, &AddressClassesType) || !((AddressClasses *)classes)->known.slot)) {
        PyErr_SetString(PyExc_TypeError, "scan(): classes must be an initialised AddressClasses or None");
        return NULL;
    }
    const AddressClasses *fold = classes == Py_None ? NULL : (AddressClasses *)classes;
    Arena *arena = NULL;
    Batch raw = {0};  /* with folding: raw key → its slot in b (n holds slot + 1) */
    unsigned char fbuf[512];
    if (tracker != Py_None && !syn_ready((SynTracker *)tracker)) return NULL;
    if (PyUnicode_READY(arg) < 0) return NULL;
    if (PyUnicode_KIND(arg) != PyUnicode_1BYTE_KIND) Py_RETURN_NONE;
    P base = (P)PyUnicode_1BYTE_DATA(arg);
    P end = base + PyUnicode_GET_LENGTH(arg);
    Batch b = {0};
    Py_ssize_t lines = 0, ignored = 0, malformed = 0;
    P bad_s = NULL, bad_e = NULL;
    int dns = 0;
    PyObject *counts = NULL, *retried = NULL, *sample = NULL, *empty = NULL;
    for (P s = base; s < end;) {
        P nl = memchr(s, '\n', (size_t)(end - s));
        P e = nl ? nl : end;
        lines++;
        P hs, he, ss, se, ps, pe, ds, de;
        if (parse_line(s, e, &hs, &he, &ss, &se, &ps, &pe, &ds, &de)) {
            /* h names the line as written (a SYN's attempt); the key may have its addresses folded */
            unsigned long long h = hash_more(hash_more(hash_more(hash_more(HASH_SEED, hs, he), ss, se), ps, pe), ds, de);
            Py_ssize_t k, r = -1;
            if (fold) {  /* each raw key of the batch is folded once; its lines go straight to the slot */
                r = batch_slot(&raw, h, hs, he, ss, se, ps, pe, ds, de);
                if (r < 0) goto nomem;
            }
            P fe;
            if (r >= 0 && raw.slots[r].n) {
                k = raw.slots[r].n - 1;
            } else if (r >= 0 && fold_span(fold, ss, se, fbuf, sizeof fbuf, &fe)) {
                P fs = fbuf;
                unsigned long long hk = hash_more(hash_more(hash_more(hash_more(HASH_SEED, hs, he), fs, fe), ps, pe), ds, de);
                Py_ssize_t before = b.n;
                k = batch_slot(&b, hk, hs, he, fs, fe, ps, pe, ds, de);
                if (k >= 0 && b.n > before) {  /* a new key: its span must outlive fbuf */
                    P kept = arena_copy(&arena, fs, fe);
                    if (!kept) goto nomem;
                    b.slots[k].ss = kept; b.slots[k].se = kept + (fe - fs);
                }
            } else {
                k = batch_slot(&b, h, hs, he, ss, se, ps, pe, ds, de);
            }
            if (k >= 0 && r >= 0) raw.slots[r].n = k + 1;
            if (k < 0) goto nomem;
            b.slots[k].n++;
            P sps, spe, ids, ide;
            unsigned long long id;
            if (tracker != Py_None && syn_fields(se, ps, pe, de, e, &sps, &spe, &ids, &ide) &&
                ip_id_value(ids, ide, &id) && batch_syn(&b, k, hash_more(h, sps, spe), id) < 0)
                goto nomem;
        } else if (find(s, e, ": policy ")) {
            batch_free(&b);
            batch_free(&raw);
            arena_free(arena);
            Py_RETURN_NONE;  /* an eBPF trace line: parse_lines reads those */
        } else if (find(s, e, " OUT=")) {
            if (!malformed++) { bad_s = s; bad_e = e - s > 300 ? s + 300 : e; }
        } else {
            ignored++;
            if (!dns && find(s, e, "[INFO] ")) dns = 1;
        }
        if (!nl) break;
        s = nl + 1;
    }
    if (tracker != Py_None)  /* in line order, once the whole batch is known to be ours */
        for (Py_ssize_t i = 0; i < b.n_syns; i++)
            if (syn_check((SynTracker *)tracker, b.syns[i].attempt, b.syns[i].ip_id, now & 0xFFFFFFFFULL))
                b.slots[b.syns[i].slot].retried++;
    counts = PyDict_New();
    retried = PyDict_New();
    empty = PyUnicode_New(0, 0);
    sample = bad_s ? PyUnicode_Substring(arg, bad_s - base, bad_e - base) : PyUnicode_New(0, 0);
    if (!counts || !retried || !empty || !sample) goto fail;
    /* Keys of a scan share their head, span and protocol: one str object for each run of equal parts
     * (Python caches a str's hash in it, so every later tuple and dict hashes them for free). */
    Part parts[3] = {{0}};
    for (Py_ssize_t i = 0; i < b.n; i++) {
        KeySlot *k = &b.slots[i];
        PyObject *h = part_str(&parts[0], arg, base, k->hs, k->he), *sp = part_str(&parts[1], arg, base, k->ss, k->se),
                 *pr = part_str(&parts[2], arg, base, k->ps, k->pe);
        PyObject *key = (h && sp && pr) ? Py_BuildValue("(OOONO)", h, sp, pr, PyUnicode_Substring(arg, k->ds - base, k->de - base), empty)
                                         : NULL;
        if (!key) { parts_free(parts); goto fail; }
        int rc = 0;
        Py_ssize_t flows = k->n - k->retried;
        if (flows) {
            PyObject *v = PyLong_FromSsize_t(flows);
            rc = v ? PyDict_SetItem(counts, key, v) : -1;
            Py_XDECREF(v);
        }
        if (!rc && k->retried) {
            PyObject *v = PyLong_FromSsize_t(k->retried);
            rc = v ? PyDict_SetItem(retried, key, v) : -1;
            Py_XDECREF(v);
        }
        Py_DECREF(key);
        if (rc < 0) { parts_free(parts); goto fail; }
    }
    parts_free(parts);
    batch_free(&b);
    batch_free(&raw);
    arena_free(arena);
    Py_DECREF(empty);
    return Py_BuildValue("(NNnnnNO)", counts, retried, lines, ignored, malformed, sample, dns ? Py_True : Py_False);
nomem:
    PyErr_NoMemory();
fail:
    batch_free(&b);
    batch_free(&raw);
    arena_free(arena);
    Py_XDECREF(counts); Py_XDECREF(retried); Py_XDECREF(sample); Py_XDECREF(empty);
    return NULL;
}

/*
 * flow_fields(raw): the fields of a goldmane.FlowUpdate that the record stage needs per record,
 * without building protobuf objects: (key bytes, start, end, packets in/out, bytes in/out,
 * connections started/completed/live). Returns None for anything but a plain, complete message
 * (a field twice, a wire type other than the release shape's, truncation, non-ASCII labels); the
 * caller then decodes with protobuf, which accepts or refuses it. A test holds both paths equal.
 */
static int read_varint(P *p, P end, unsigned long long *out) {
    unsigned long long v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        unsigned char b = *(*p)++;
        v |= (unsigned long long)(b & 0x7f) << shift;
        if (b < 0x80) { *out = v; return 1; }
    }
    return 0;
}

static int skip_field(P *p, P end, unsigned wire) {
    unsigned long long n;
    switch (wire) {
    case 0: return read_varint(p, end, &n);
    case 1: if (end - *p < 8) return 0; *p += 8; return 1;
    case 2: if (!read_varint(p, end, &n) || n > (unsigned long long)(end - *p)) return 0; *p += n; return 1;
    case 5: if (end - *p < 4) return 0; *p += 4; return 1;
    default: return 0;
    }
}

/* The fields of a FlowUpdate (see flow_fields below): the key, and in f[1..9] start, end, packets
 * in/out, bytes in/out, connections started/completed/live. 0: leave the message to protobuf. */
static int read_flow(P p, P end, P *key_out, Py_ssize_t *key_len, long long f[10]) {
    P flow = NULL, fend = NULL, key = NULL;
    unsigned long long tag, n, klen = 0, v[13] = {0};
    while (p < end) {  /* FlowUpdate: field 1 = Flow, once */
        if (!read_varint(&p, end, &tag)) return 0;
        if (tag == 0x0a) {
            if (flow || !read_varint(&p, end, &n) || n > (unsigned long long)(end - p)) return 0;
            flow = p; fend = p + n; p += n;
        } else if ((tag >> 3) == 1 || !skip_field(&p, end, tag & 7)) {
            return 0;
        }
    }
    if (!flow) return 0;
    p = flow;
    while (p < fend) {
        if (!read_varint(&p, fend, &tag)) return 0;
        unsigned field = (unsigned)(tag >> 3), wire = tag & 7;
        if (field == 1) {
            if (key || wire != 2 || !read_varint(&p, fend, &n) || n > (unsigned long long)(fend - p)) return 0;
            key = p; klen = n; p += n;
        } else if (field == 4 || field == 5) {
            if (wire != 2 || !read_varint(&p, fend, &n) || n > (unsigned long long)(fend - p)) return 0;
            for (P q = p; q < p + n; q++) if (*q >= 0x80) return 0;  /* labels are ASCII */
            p += n;
        } else if (field >= 2 && field <= 12) {
            if (wire != 0 || !read_varint(&p, fend, &v[field])) return 0;
        } else if (field == 0 || !skip_field(&p, fend, wire)) {
            return 0;
        }
    }
    if (!key) return 0;
    static const int order[10] = {0, 2, 3, 6, 7, 8, 9, 10, 11, 12};
    for (int i = 1; i < 10; i++) f[i] = (long long)v[order[i]];
    *key_out = key; *key_len = (Py_ssize_t)klen;
    return 1;
}

static PyObject *flow_fields(PyObject *self, PyObject *arg) {
    (void)self;
    char *buf; Py_ssize_t len, klen;
    P key;
    long long f[10];
    if (PyBytes_AsStringAndSize(arg, &buf, &len) < 0) return NULL;
    if (!read_flow((P)buf, (P)buf + len, &key, &klen, f)) Py_RETURN_NONE;
    return Py_BuildValue("(y#LLLLLLLLL)", (const char *)key, klen, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9]);
}

/* The identity of a Felix flow for dedupe: its key's bytes, start and end. */
static unsigned long long ident_of(P key, Py_ssize_t klen, long long start, long long end) {
    unsigned char se[16];
    memcpy(se, &start, 8); memcpy(se + 8, &end, 8);
    unsigned long long h = hash_more(hash_more(HASH_SEED, key, key + klen), se, se + 16);
    return h ? h : 1;  /* 0 marks an empty slot */
}
static PyObject *flow_ident(PyObject *self, PyObject *args) {
    (void)self;
    const char *key; Py_ssize_t klen;
    long long start, end;
    if (!PyArg_ParseTuple(args, "y#LL", &key, &klen, &start, &end)) return NULL;
    return PyLong_FromUnsignedLongLong(ident_of((P)key, klen, start, end));
}

/*
 * FlowDedupe(): the identities of recent Felix flows in arrival order (a ring) with a set beside it,
 * so a resend is told in O(1) and the oldest go first, as an OrderedDict would (PyFlowDedupe in
 * records.py is the same for machines without a compiler; a test holds both equal).
 */
typedef struct { unsigned long long id; long long start; } Seen;
typedef struct {
    PyObject_HEAD
    Seen *ring;
    Py_ssize_t ring_cap, head, n;
    U64Set ids;
    long long newest;
    Py_ssize_t evicted;  /* dropped while Felix could still resend them (the bound bit) */
} FlowDedupe;

/* Room for one more: the set at most half full, the ring with a free slot. 0 on no memory. */
static int dd_reserve(FlowDedupe *d) {
    if (!u64_reserve(&d->ids, (size_t)d->n + 1)) return 0;
    if (d->n == d->ring_cap) {
        Py_ssize_t cap = d->ring_cap * 2;
        Seen *ring = PyMem_Malloc(sizeof(Seen) * (size_t)cap);
        if (!ring) return 0;
        for (Py_ssize_t i = 0; i < d->n; i++) ring[i] = d->ring[(d->head + i) % d->ring_cap];
        PyMem_Free(d->ring);
        d->ring = ring; d->ring_cap = cap; d->head = 0;
    }
    return 1;
}
/* 1: new (remembered), 0: seen before, -1: no memory. */
static int dd_add(FlowDedupe *d, unsigned long long id, long long start) {
    if (u64_has(&d->ids, id)) return 0;
    if (!dd_reserve(d)) return -1;
    u64_put(&d->ids, id);
    d->ring[(d->head + d->n) % d->ring_cap] = (Seen){id, start};
    d->n++;
    if (start > d->newest) d->newest = start;
    return 1;
}
static int dd_ready(FlowDedupe *d) {
    if (d->ids.slot) return 1;
    PyErr_SetString(PyExc_TypeError, "FlowDedupe was not initialised");
    return 0;
}
static int dd_init(FlowDedupe *d, PyObject *args, PyObject *kw) {
    (void)kw;
    if (!PyArg_ParseTuple(args, "")) return -1;
    if (d->ids.slot) { PyErr_SetString(PyExc_TypeError, "FlowDedupe is already initialised"); return -1; }
    d->ring = PyMem_Malloc(sizeof(Seen) * 64);
    if (!d->ring || !u64_init(&d->ids, 64)) {
        PyMem_Free(d->ring); d->ring = NULL; d->ids.slot = NULL;
        PyErr_NoMemory();
        return -1;
    }
    d->ring_cap = 64; d->head = d->n = 0; d->newest = 0; d->evicted = 0;
    return 0;
}
static void dd_dealloc(FlowDedupe *d) {
    PyMem_Free(d->ring); PyMem_Free(d->ids.slot);
    Py_TYPE(d)->tp_free((PyObject *)d);
}
static PyObject *dd_add_py(FlowDedupe *d, PyObject *args) {
    unsigned long long id;
    long long start;
    if (!dd_ready(d) || !PyArg_ParseTuple(args, "KL", &id, &start)) return NULL;
    int r = dd_add(d, id ? id : 1, start);
    if (r < 0) return PyErr_NoMemory();
    return PyBool_FromLong(r);
}
static PyObject *dd_trim(FlowDedupe *d, PyObject *args) {
    long long horizon;
    Py_ssize_t max;
    if (!dd_ready(d) || !PyArg_ParseTuple(args, "Ln", &horizon, &max)) return NULL;
    long long oldest_kept = d->newest - horizon;
    while (d->n) {
        Seen *s = &d->ring[d->head];
        if (s->start >= oldest_kept && d->n <= max) break;
        if (s->start >= oldest_kept) d->evicted++;
        u64_del(&d->ids, s->id);
        d->head = (d->head + 1) % d->ring_cap;
        d->n--;
    }
    Py_RETURN_NONE;
}
/* dump() -> bytes: (identity u64, start i64) pairs, oldest first, in this machine's byte order. */
static PyObject *dd_dump(FlowDedupe *d, PyObject *unused) {
    (void)unused;
    if (!dd_ready(d)) return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, d->n * (Py_ssize_t)sizeof(Seen));
    if (!out) return NULL;
    Seen *dst = (Seen *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < d->n; i++) dst[i] = d->ring[(d->head + i) % d->ring_cap];
    return out;
}
static Py_ssize_t dd_len(FlowDedupe *d) { return d->n; }
static PyObject *dd_get_evicted(FlowDedupe *d, void *c) { (void)c; return PyLong_FromSsize_t(d->evicted); }
static PyObject *dd_get_newest(FlowDedupe *d, void *c) { (void)c; return PyLong_FromLongLong(d->newest); }
static PyGetSetDef dd_getset[] = {
    {"evicted", (getter)dd_get_evicted, NULL, "flows dropped while Felix could still resend them", NULL},
    {"newest", (getter)dd_get_newest, NULL, "the newest start time seen", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
static PyMethodDef dd_methods[] = {
    {"add", (PyCFunction)dd_add_py, METH_VARARGS, "add(ident, start) -> True if new, False for a resend"},
    {"dump", (PyCFunction)dd_dump, METH_NOARGS, "dump() -> bytes of (ident u64, start i64) pairs, oldest first"},
    {"trim", (PyCFunction)dd_trim, METH_VARARGS,
     "trim(horizon, max): forget flows started more than horizon before the newest, and the oldest past max"},
    {NULL, NULL, 0, NULL},
};
static PySequenceMethods dd_seq = {.sq_length = (lenfunc)dd_len};
static PyTypeObject FlowDedupeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "calico_lens.parse._scan.FlowDedupe",
    .tp_basicsize = sizeof(FlowDedupe),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "FlowDedupe(): recent Felix flows, to drop their resends",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)dd_init,
    .tp_dealloc = (destructor)dd_dealloc,
    .tp_methods = dd_methods,
    .tp_getset = dd_getset,
    .tp_as_sequence = &dd_seq,
};

/* row[i] += n for a float or int row value; 0 on error. */
static int row_add(PyObject *row, Py_ssize_t i, long long n) {
    PyObject *old = PyList_GET_ITEM(row, i), *v;
    if (PyFloat_CheckExact(old)) {
        v = PyFloat_FromDouble(PyFloat_AS_DOUBLE(old) + (double)n);
    } else {
        PyObject *add = PyLong_FromLongLong(n);
        v = add ? PyNumber_Add(old, add) : NULL;
        Py_XDECREF(add);
    }
    if (!v) return 0;
    PyList_SET_ITEM(row, i, v);
    Py_DECREF(old);
    return 1;
}
static int alive(PyObject *row) {
    return PyList_CheckExact(row) && PyList_GET_SIZE(row) >= 3 && PyList_GET_ITEM(row, 2) == Py_True;
}

/*
 * felix_batch(raws, i, limit, labels, labels_type, dedupe, now, interval) -> (i, parsed, duplicate)
 * The record stage's common case in C: records from raws[i] on whose key has labels of labels_type
 * in ``labels`` (the cache), whose rows are all bound and alive, and whose start is the live
 * gauge's current ``interval``: each is deduplicated and added to its rows in place. It stops at the
 * first record that needs Python (a new key, a refusal, a row to bind, a new interval, a message
 * protobuf must read) and returns its index; nothing of that record has been counted.
 */
static PyObject *str_slots, *str_live;  /* the _Labels attributes felix_batch reads, interned at import */
static PyObject *felix_batch(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *raws, *cache, *labels_type, *dedupe, *now;
    Py_ssize_t i, limit;
    long long interval;
    if (!PyArg_ParseTuple(args, "OnnOOOOL", &raws, &i, &limit, &cache, &labels_type, &dedupe, &now, &interval))
        return NULL;
    if (!PyObject_TypeCheck(dedupe, &FlowDedupeType) || !dd_ready((FlowDedupe *)dedupe)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "felix_batch(): dedupe must be a FlowDedupe");
        return NULL;
    }
    if (!PyDict_Check(cache) || !PyType_Check(labels_type)) {
        PyErr_SetString(PyExc_TypeError, "felix_batch(): labels must be a dict and labels_type a type");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(raws, "felix_batch(): raws must be a sequence");
    if (!seq) return NULL;
    FlowDedupe *d = (FlowDedupe *)dedupe;
    Py_ssize_t total = PySequence_Fast_GET_SIZE(seq), parsed = 0, dup = 0;
    for (; i < total; i++) {
        PyObject *raw = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_Check(raw) || PyBytes_GET_SIZE(raw) > limit) break;
        P key; Py_ssize_t klen; long long f[10];
        P buf = (P)PyBytes_AS_STRING(raw);
        if (!read_flow(buf, buf + PyBytes_GET_SIZE(raw), &key, &klen, f) || f[1] != interval) break;
        PyObject *kb = PyBytes_FromStringAndSize((const char *)key, klen);
        if (!kb) goto fail;
        PyObject *lab = PyDict_GetItemWithError(cache, kb);  /* borrowed */
        Py_DECREF(kb);
        if (!lab) { if (PyErr_Occurred()) goto fail; break; }
        if (Py_TYPE(lab) != (PyTypeObject *)labels_type) break;
        unsigned long long id = ident_of(key, klen, f[1], f[2]);
        if (u64_has(&d->ids, id)) { dup++; continue; }
        PyObject *slots = PyObject_GetAttr(lab, str_slots), *live = PyObject_GetAttr(lab, str_live);
        int ready = slots && live && PyList_CheckExact(slots) && alive(live);
        for (Py_ssize_t k = 0; ready && k < PyList_GET_SIZE(slots); k++) {  /* every row it writes bound */
            PyObject *slot = PyList_GET_ITEM(slots, k);
            long idx = PyList_CheckExact(slot) && PyList_GET_SIZE(slot) == 4 ? PyLong_AsLong(PyList_GET_ITEM(slot, 0)) : -1;
            if (idx < 3 || idx > 9) { PyErr_Clear(); ready = 0; break; }
            if (f[idx] && !alive(PyList_GET_ITEM(slot, 3))) ready = 0;
        }
        if (!ready) { Py_XDECREF(slots); Py_XDECREF(live); if (PyErr_Occurred()) goto fail; break; }
        if (dd_add(d, id, f[1]) < 0) { Py_DECREF(slots); Py_DECREF(live); PyErr_NoMemory(); goto fail; }
        parsed++;
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(slots); k++) {
            PyObject *slot = PyList_GET_ITEM(slots, k);
            long long n = f[PyLong_AsLong(PyList_GET_ITEM(slot, 0))];
            if (!n) continue;
            PyObject *row = PyList_GET_ITEM(slot, 3);
            if (!row_add(row, 0, n)) { Py_DECREF(slots); Py_DECREF(live); goto fail; }
            Py_INCREF(now);
            PyObject *old = PyList_GET_ITEM(row, 1);
            PyList_SET_ITEM(row, 1, now);
            Py_DECREF(old);
        }
        /* the live gauge: a newer interval replaces the row's value, the same one adds to it */
        long long rs = PyLong_AsLongLong(PyList_GET_ITEM(live, 0));
        if (rs == -1 && PyErr_Occurred()) { Py_DECREF(slots); Py_DECREF(live); goto fail; }
        int ok = 1;
        if (f[1] > rs) {
            PyObject *a = PyLong_FromLongLong(f[1]), *b = PyLong_FromLongLong(f[9]);
            ok = a && b && PyList_SetItem(live, 0, a) == 0 && PyList_SetItem(live, 1, b) == 0;
            if (!ok) { Py_XDECREF(a); Py_XDECREF(b); }
        } else if (f[1] == rs) {
            ok = row_add(live, 1, f[9]);
        }
        Py_DECREF(slots); Py_DECREF(live);
        if (!ok) goto fail;
    }
    Py_DECREF(seq);
    return Py_BuildValue("(nnn)", i, parsed, dup);
fail:
    Py_DECREF(seq);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(text, tracker, now, classes=None) -> (counts, retried, lines, ignored, malformed, sample, dns)"},
    {"attempt_id", attempt_id, METH_VARARGS, "attempt_id(head, span, proto, dport, sport) -> the id scan() gives a SYN"},
    {"flow_fields", flow_fields, METH_O, "flow_fields(raw FlowUpdate) -> (key, start, end, 7 counters) or None"},
    {"flow_ident", flow_ident, METH_VARARGS, "flow_ident(key, start, end) -> the identity FlowDedupe keeps"},
    {"felix_batch", felix_batch, METH_VARARGS,
     "felix_batch(raws, i, limit, labels, labels_type, dedupe, now, interval) -> (i, parsed, duplicate)"},
    {NULL, NULL, 0, NULL},
};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scan", NULL, -1, methods};
PyMODINIT_FUNC PyInit__scan(void) {
    if (!(str_slots = PyUnicode_InternFromString("slots")) || !(str_live = PyUnicode_InternFromString("live")))
        return NULL;
    PyObject *m = PyModule_Create(&module);
    /* PyModule_AddType (3.10+) readies the type and takes its own reference */
    if (m && (PyModule_AddType(m, &SynTrackerType) < 0 || PyModule_AddType(m, &AddressClassesType) < 0 ||
              PyModule_AddType(m, &FlowDedupeType) < 0))
        Py_CLEAR(m);
    return m;
}
