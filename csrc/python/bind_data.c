/* bind_data.c - Python bindings for lade_data.h (used by lade/data.py). */
#include "bind.h"

/* ---- CIFAR ---------------------------------------------------------------- */

static PyObject *py_cifar_count(PyObject *self, PyObject *args) {
    Py_ssize_t len;
    int kind;
    const char *fn;
    if (!PyArg_ParseTuple(args, "nis:cifar_count", &len, &kind, &fn)) return NULL;
    size_t n;
    lade_status st = lade_cifar_count((size_t)(len < 0 ? 0 : len), kind, &n);
    if (st) return lade_py_raise(st, fn);
    return PyLong_FromSize_t(n);
}

static PyObject *py_cifar_parse(PyObject *self, PyObject *args) {
    Py_buffer buf;
    int kind, coarse;
    PyObject *images_obj, *labels_obj;
    const char *fn; /* "lade.data.load_cifar: 'file'" */
    if (!PyArg_ParseTuple(args, "y*iiOOs:cifar_parse", &buf, &kind, &coarse, &images_obj, &labels_obj, &fn))
        return NULL;
    npy_intp ishape[4] = {LADE_ANY, 3, 32, 32};
    PyArrayObject *images = lade_py_array(images_obj, fn, "images", NPY_UINT8, LADE_OUT, 4, ishape);
    PyArrayObject *labels = images ? lade_py_array(labels_obj, fn, "labels", NPY_INT64, LADE_OUT, 1, NULL) : NULL;
    if (!labels) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    if (PyArray_DIM(images, 0) != PyArray_DIM(labels, 0)) {
        PyBuffer_Release(&buf);
        return lade_py_value_error(fn, "labels", "must have as many entries as images (%ld), got %ld",
                                   (long)PyArray_DIM(images, 0), (long)PyArray_DIM(labels, 0));
    }
    lade_status st;
    LADE_NOGIL_BEGIN
    st = lade_cifar_parse(buf.buf, (size_t)buf.len, kind, coarse, PyArray_DATA(images), PyArray_DATA(labels),
                          (size_t)PyArray_DIM(images, 0));
    LADE_NOGIL_END
    PyBuffer_Release(&buf);
    if (st) return lade_py_raise(st, fn);
    Py_RETURN_NONE;
}

static PyObject *py_labels_check(PyObject *self, PyObject *args) {
    PyObject *labels_obj;
    long long num_classes;
    const char *fn;
    if (!PyArg_ParseTuple(args, "OLs:labels_check", &labels_obj, &num_classes, &fn)) return NULL;
    PyArrayObject *labels = lade_py_array(labels_obj, fn, "labels", NPY_INT64, LADE_IN, 1, NULL);
    if (!labels) return NULL;
    lade_status st = lade_labels_check(PyArray_DATA(labels), (size_t)PyArray_DIM(labels, 0), num_classes);
    if (st) return lade_py_raise(st, fn);
    Py_RETURN_NONE;
}

/* ---- file lists -------------------------------------------------------------- */
static const char *FILELIST = "lade.filelist";

static void filelist_capsule_free(PyObject *cap) {
    lade_filelist_destroy(PyCapsule_GetPointer(cap, FILELIST));
}

static lade_filelist *filelist_of(PyObject *cap) { return PyCapsule_GetPointer(cap, FILELIST); }

static PyObject *wrap_filelist(lade_filelist *fl) {
    PyObject *cap = PyCapsule_New(fl, FILELIST, filelist_capsule_free);
    if (!cap) lade_filelist_destroy(fl);
    return cap;
}

/* filelist_parse(root, source, text: bytes, num_classes, func) -> capsule */
static PyObject *py_filelist_parse(PyObject *self, PyObject *args) {
    const char *root, *source, *fn;
    Py_buffer text;
    long long num_classes;
    if (!PyArg_ParseTuple(args, "szy*Ls:filelist_parse", &root, &source, &text, &num_classes, &fn)) return NULL;
    lade_filelist *fl;
    lade_status st = lade_filelist_create(&fl, root, source);
    if (!st) {
        LADE_NOGIL_BEGIN
        st = lade_filelist_parse(fl, text.buf, (size_t)text.len, num_classes);
        LADE_NOGIL_END
        if (st) lade_filelist_destroy(fl);
    }
    PyBuffer_Release(&text);
    if (st) return lade_py_raise(st, fn);
    return wrap_filelist(fl);
}

/* filelist_from_paths(root, paths: list of str, labels: int64 array, func) -> capsule */
static PyObject *py_filelist_from_paths(PyObject *self, PyObject *args) {
    const char *root, *fn;
    PyObject *paths, *labels_obj;
    if (!PyArg_ParseTuple(args, "sO!Os:filelist_from_paths", &root, &PyList_Type, &paths, &labels_obj, &fn))
        return NULL;
    PyArrayObject *labels = lade_py_array(labels_obj, fn, "labels", NPY_INT64, LADE_IN, 1, NULL);
    if (!labels) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(paths);
    if (PyArray_DIM(labels, 0) != n)
        return lade_py_value_error(fn, "labels", "must have one entry per path (%ld), got %ld", (long)n,
                                   (long)PyArray_DIM(labels, 0));
    lade_filelist *fl;
    lade_status st = lade_filelist_create(&fl, root, NULL);
    if (st) return lade_py_raise(st, fn);
    const int64_t *lab = PyArray_DATA(labels);
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *path = PyUnicode_AsUTF8(PyList_GET_ITEM(paths, i));
        if (!path) {
            lade_filelist_destroy(fl);
            return NULL;
        }
        if ((st = lade_filelist_add(fl, path, lab[i], 0))) {
            lade_filelist_destroy(fl);
            return lade_py_raise(st, fn);
        }
    }
    return wrap_filelist(fl);
}

/* filelist_info(capsule, labels_out: int64 (n,) or None) -> n */
static PyObject *py_filelist_info(PyObject *self, PyObject *args) {
    PyObject *cap, *labels_obj;
    if (!PyArg_ParseTuple(args, "OO:filelist_info", &cap, &labels_obj)) return NULL;
    lade_filelist *fl = filelist_of(cap);
    if (!fl) return NULL;
    size_t n = lade_filelist_size(fl);
    if (labels_obj != Py_None) {
        npy_intp shape[1] = {(npy_intp)n};
        PyArrayObject *labels = lade_py_array(labels_obj, "lade.data.FileList", "labels", NPY_INT64, LADE_OUT, 1, shape);
        if (!labels) return NULL;
        int64_t *out = PyArray_DATA(labels);
        for (size_t i = 0; i < n; i++) out[i] = lade_filelist_label(fl, i);
    }
    return PyLong_FromSize_t(n);
}

/* filelist_entry(capsule, i) -> (path, label, line) */
static PyObject *py_filelist_entry(PyObject *self, PyObject *args) {
    PyObject *cap;
    Py_ssize_t i;
    if (!PyArg_ParseTuple(args, "On:filelist_entry", &cap, &i)) return NULL;
    lade_filelist *fl = filelist_of(cap);
    if (!fl) return NULL;
    if (i < 0 || (size_t)i >= lade_filelist_size(fl)) {
        PyErr_Format(PyExc_IndexError, "lade.data.FileList: index %zd is outside [0, %zu)", i, lade_filelist_size(fl));
        return NULL;
    }
    return Py_BuildValue("(sLL)", lade_filelist_path(fl, (size_t)i), (long long)lade_filelist_label(fl, (size_t)i),
                         (long long)lade_filelist_line(fl, (size_t)i));
}

/* ---- JPEG -------------------------------------------------------------------- */

/* jpeg_max_pixels(n: int or None) -> the limit in force (after setting n) */
static PyObject *py_jpeg_max_pixels(PyObject *self, PyObject *arg) {
    (void)self;
    if (arg != Py_None) {
        unsigned long long n = PyLong_AsUnsignedLongLong(arg);
        if (n == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            n = 0; /* negative or too large: let the core name the range */
        }
        lade_status st = lade_jpeg_set_max_pixels(n > SIZE_MAX ? 0 : (size_t)n);
        if (st) return lade_py_raise(st, "lade.data.set_jpeg_max_pixels");
    }
    return PyLong_FromSize_t(lade_jpeg_max_pixels());
}

static PyObject *rgb_array(const uint8_t *rgb, int width, int height) {
    npy_intp dims[3] = {height, width, 3};
    PyObject *arr = PyArray_SimpleNew(3, dims, NPY_UINT8);
    if (arr) memcpy(PyArray_DATA((PyArrayObject *)arr), rgb, (size_t)width * height * 3);
    return arr;
}

/* decode_jpeg(data: bytes-like) -> uint8 (H, W, 3) */
static PyObject *py_decode_jpeg(PyObject *self, PyObject *args) {
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*:decode_jpeg", &data)) return NULL;
    lade_jpeg *j;
    lade_status st = lade_jpeg_create(&j);
    const uint8_t *rgb = NULL;
    int w = 0, h = 0;
    if (!st) {
        LADE_NOGIL_BEGIN
        st = lade_jpeg_decode(j, data.buf, (size_t)data.len, &rgb, &w, &h);
        LADE_NOGIL_END
    }
    PyBuffer_Release(&data);
    PyObject *out = st ? lade_py_raise(st, "lade.data.decode_jpeg") : rgb_array(rgb, w, h);
    lade_jpeg_destroy(j);
    return out;
}

/* read_jpeg(path: str) -> uint8 (H, W, 3) */
static PyObject *py_read_jpeg(PyObject *self, PyObject *args) {
    PyObject *path_obj;
    if (!PyArg_ParseTuple(args, "O&:read_jpeg", PyUnicode_FSConverter, &path_obj)) return NULL;
    lade_jpeg *j;
    lade_status st = lade_jpeg_create(&j);
    const uint8_t *rgb = NULL;
    int w = 0, h = 0;
    const char *path = PyBytes_AS_STRING(path_obj);
    if (!st) {
        LADE_NOGIL_BEGIN
        st = lade_jpeg_read(j, path, &rgb, &w, &h);
        LADE_NOGIL_END
    }
    Py_DECREF(path_obj);
    PyObject *out = st ? lade_py_raise(st, "lade.data.read_jpeg") : rgb_array(rgb, w, h);
    lade_jpeg_destroy(j);
    return out;
}

/* ---- transforms ------------------------------------------------------------ */

/* A transform travels from Python as the tuple
 * (kind, out_h, out_w, pad, resize, scale_min, scale_max, ratio_min, ratio_max,
 *  brightness, contrast, saturation, flip, (mean x3), (std x3)). */
static int parse_transform(PyObject *spec, lade_transform *t, const char *fn) {
    int kind;
    memset(t, 0, sizeof *t);
    if (!PyArg_ParseTuple(spec, "iiiiiddddddd" "i(fff)(fff):transform", &kind, &t->out_h, &t->out_w, &t->pad,
                          &t->resize, &t->scale_min, &t->scale_max, &t->ratio_min, &t->ratio_max, &t->brightness,
                          &t->contrast, &t->saturation, &t->flip, &t->mean[0], &t->mean[1], &t->mean[2], &t->std[0],
                          &t->std[1], &t->std[2]))
        return -1;
    t->kind = (lade_transform_kind)kind;
    lade_status st = lade_transform_check(t);
    if (st) {
        lade_py_raise(st, fn);
        return -1;
    }
    return 0;
}

static PyObject *spec_tuple(const lade_transform *t) {
    return Py_BuildValue("(iiiiiddddddd" "i(fff)(fff))", (int)t->kind, t->out_h, t->out_w, t->pad, t->resize,
                         t->scale_min, t->scale_max, t->ratio_min, t->ratio_max, t->brightness, t->contrast,
                         t->saturation, t->flip, t->mean[0], t->mean[1], t->mean[2], t->std[0], t->std[1], t->std[2]);
}

/* transform_preset(name, a, b) -> spec tuple of the C presets (a, b: sizes) */
static PyObject *py_transform_preset(PyObject *self, PyObject *args) {
    const char *name;
    int a = 0, b = 0;
    if (!PyArg_ParseTuple(args, "s|ii:transform_preset", &name, &a, &b)) return NULL;
    lade_transform t;
    if (!strcmp(name, "cifar_train")) lade_transform_cifar_train(&t);
    else if (!strcmp(name, "cifar_test")) lade_transform_cifar_test(&t);
    else if (!strcmp(name, "imagenet_train")) lade_transform_imagenet_train(&t, a);
    else if (!strcmp(name, "imagenet_eval")) lade_transform_imagenet_eval(&t, a, b);
    else return lade_py_value_error("lade.data", "name", "must name a preset, got '%s'", name);
    return spec_tuple(&t);
}

/* transform_params(spec, height, width, seed, stream) -> dict */
static PyObject *py_transform_params(PyObject *self, PyObject *args) {
    PyObject *spec;
    int h, w;
    unsigned long long seed, stream;
    if (!PyArg_ParseTuple(args, "OiiKK:transform_params", &spec, &h, &w, &seed, &stream)) return NULL;
    lade_transform t;
    if (parse_transform(spec, &t, "lade.data.Transform.params")) return NULL;
    lade_rng rng;
    lade_rng_seed(&rng, seed, stream);
    lade_aug_params p;
    lade_status st = lade_transform_params(&t, h, w, &rng, &p);
    if (st) return lade_py_raise(st, "lade.data.Transform.params");
    return Py_BuildValue("{s:(iiii),s:(ii),s:O,s:d,s:d,s:d,s:(iii)}", "box", p.top, p.left, p.height, p.width,
                         "resized", p.resized_h, p.resized_w, "flip", p.flip ? Py_True : Py_False, "brightness",
                         p.brightness, "contrast", p.contrast, "saturation", p.saturation, "jitter_order",
                         p.jitter_order[0], p.jitter_order[1], p.jitter_order[2]);
}

/* augment(spec, images uint8 (N, 3, H, W), out float32 (N, 3, oh, ow), seed, stream) */
static PyObject *py_augment(PyObject *self, PyObject *args) {
    PyObject *spec, *images_obj, *out_obj;
    unsigned long long seed, stream;
    const char *fn = "lade.data.augment";
    if (!PyArg_ParseTuple(args, "OOOKK:augment", &spec, &images_obj, &out_obj, &seed, &stream)) return NULL;
    lade_transform t;
    if (parse_transform(spec, &t, fn)) return NULL;
    npy_intp ishape[4] = {LADE_ANY, 3, LADE_ANY, LADE_ANY};
    PyArrayObject *images = lade_py_array(images_obj, fn, "images", NPY_UINT8, LADE_IN, 4, ishape);
    if (!images) return NULL;
    npy_intp oshape[4] = {PyArray_DIM(images, 0), 3, t.out_h, t.out_w};
    PyArrayObject *out = lade_py_array(out_obj, fn, "out", NPY_FLOAT32, LADE_OUT, 4, oshape);
    if (!out || lade_py_disjoint(fn, 1, {"out", out}, {"images", images})) return NULL;
    if (PyArray_DIM(images, 2) > INT32_MAX || PyArray_DIM(images, 3) > INT32_MAX)
        return lade_py_value_error(fn, "images", "is too large");
    lade_status st;
    LADE_NOGIL_BEGIN
    st = lade_transform_batch(&t, PyArray_DATA(images), (size_t)PyArray_DIM(images, 0), (int)PyArray_DIM(images, 2),
                              (int)PyArray_DIM(images, 3), seed, stream, PyArray_DATA(out));
    LADE_NOGIL_END
    if (st) return lade_py_raise(st, fn);
    Py_RETURN_NONE;
}

/* augment_hwc(spec, image uint8 (H, W, 3), out float32 (3, oh, ow), seed, stream):
 * one decoded image, as read_jpeg returns it */
static PyObject *py_augment_hwc(PyObject *self, PyObject *args) {
    PyObject *spec, *image_obj, *out_obj;
    unsigned long long seed, stream;
    const char *fn = "lade.data.augment_image";
    if (!PyArg_ParseTuple(args, "OOOKK:augment_hwc", &spec, &image_obj, &out_obj, &seed, &stream)) return NULL;
    lade_transform t;
    if (parse_transform(spec, &t, fn)) return NULL;
    npy_intp ishape[3] = {LADE_ANY, LADE_ANY, 3};
    PyArrayObject *image = lade_py_array(image_obj, fn, "image", NPY_UINT8, LADE_IN, 3, ishape);
    if (!image) return NULL;
    npy_intp oshape[3] = {3, t.out_h, t.out_w};
    PyArrayObject *out = lade_py_array(out_obj, fn, "out", NPY_FLOAT32, LADE_OUT, 3, oshape);
    if (!out || lade_py_disjoint(fn, 1, {"out", out}, {"image", image})) return NULL;
    if (PyArray_DIM(image, 0) > INT32_MAX || PyArray_DIM(image, 1) > INT32_MAX)
        return lade_py_value_error(fn, "image", "is too large");
    int h = (int)PyArray_DIM(image, 0), w = (int)PyArray_DIM(image, 1);
    lade_image img = {PyArray_DATA(image), h, w, 1, (ptrdiff_t)w * 3, 3};
    lade_rng rng;
    lade_rng_seed(&rng, seed, stream);
    lade_aug_params p;
    void *scratch = NULL;
    size_t scratch_size = 0;
    lade_status st;
    LADE_NOGIL_BEGIN
    st = lade_transform_params(&t, h, w, &rng, &p);
    if (!st) st = lade_transform_apply(&t, &img, &p, PyArray_DATA(out), &scratch, &scratch_size);
    LADE_NOGIL_END
    lade_free(scratch);
    if (st) return lade_py_raise(st, fn);
    Py_RETURN_NONE;
}

/* ---- the loader ---------------------------------------------------------------- */
static const char *LOADER = "lade.loader";

typedef struct {
    lade_loader *loader;
    int busy; /* a call is waiting without the GIL */
} loader_holder;

static void loader_capsule_free(PyObject *cap) {
    loader_holder *h = PyCapsule_GetPointer(cap, LOADER);
    if (!h) return;
    /* the workers never take the GIL, so joining them with it held is safe */
    lade_loader_destroy(h->loader);
    free(h);
}

static lade_loader *loader_of(PyObject *cap, const char *fn) {
    loader_holder *h = PyCapsule_GetPointer(cap, LOADER);
    if (!h) return NULL;
    if (!h->loader) {
        PyErr_Format(PyExc_RuntimeError, "%s: the loader is closed", fn);
        return NULL;
    }
    if (h->busy) {
        PyErr_Format(PyExc_RuntimeError, "%s: the loader is in use by another thread", fn);
        return NULL;
    }
    return h->loader;
}

/* loader_create(spec, images|None, labels|None, filelist|None, batch_size, drop_last,
 *               skip_bad, num_workers, prefetch, seed) -> capsule */
static PyObject *py_loader_create(PyObject *self, PyObject *args) {
    const char *fn = "lade.data.Loader";
    PyObject *spec, *images_obj, *labels_obj, *files_obj;
    Py_ssize_t batch_size;
    int drop_last, skip_bad, num_workers, prefetch;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "OOOOnppiiK:loader_create", &spec, &images_obj, &labels_obj, &files_obj, &batch_size,
                          &drop_last, &skip_bad, &num_workers, &prefetch, &seed))
        return NULL;
    lade_loader_config c;
    memset(&c, 0, sizeof c);
    if (parse_transform(spec, &c.transform, fn)) return NULL;
    if (batch_size < 1) return lade_py_value_error(fn, "batch_size", "must be >= 1, got %zd", batch_size);
    if (files_obj != Py_None) {
        if (!(c.files = filelist_of(files_obj))) return NULL;
    } else {
        npy_intp ishape[4] = {LADE_ANY, 3, LADE_ANY, LADE_ANY};
        PyArrayObject *images = lade_py_array(images_obj, fn, "images", NPY_UINT8, LADE_IN, 4, ishape);
        if (!images) return NULL;
        npy_intp lshape[1] = {PyArray_DIM(images, 0)};
        PyArrayObject *labels = lade_py_array(labels_obj, fn, "labels", NPY_INT64, LADE_IN, 1, lshape);
        if (!labels) return NULL;
        if (PyArray_DIM(images, 2) > INT32_MAX || PyArray_DIM(images, 3) > INT32_MAX)
            return lade_py_value_error(fn, "images", "is too large");
        c.images = PyArray_DATA(images);
        c.labels = PyArray_DATA(labels);
        c.num_images = (size_t)PyArray_DIM(images, 0);
        c.image_height = (int)PyArray_DIM(images, 2);
        c.image_width = (int)PyArray_DIM(images, 3);
    }
    c.batch_size = (size_t)batch_size;
    c.drop_last = drop_last, c.skip_bad = skip_bad;
    c.num_workers = num_workers, c.prefetch = prefetch, c.seed = seed;
    loader_holder *h = calloc(1, sizeof *h);
    if (!h) return PyErr_NoMemory();
    lade_status st;
    LADE_NOGIL_BEGIN
    st = lade_loader_create(&h->loader, &c);
    LADE_NOGIL_END
    if (st) {
        free(h);
        return lade_py_raise(st, fn);
    }
    PyObject *cap = PyCapsule_New(h, LOADER, loader_capsule_free);
    if (!cap) {
        lade_loader_destroy(h->loader);
        free(h);
    }
    return cap;
}

/* loader_begin(capsule, epoch, indices int64 (n,) | None) -> number of batches */
static PyObject *py_loader_begin(PyObject *self, PyObject *args) {
    const char *fn = "lade.data.Loader";
    PyObject *cap, *indices_obj;
    long long epoch;
    if (!PyArg_ParseTuple(args, "OLO:loader_begin", &cap, &epoch, &indices_obj)) return NULL;
    lade_loader *l = loader_of(cap, fn);
    if (!l) return NULL;
    PyArrayObject *indices;
    if (lade_py_optional_array(indices_obj, fn, "indices", NPY_INT64, LADE_IN, 1, NULL, &indices)) return NULL;
    loader_holder *h = PyCapsule_GetPointer(cap, LOADER);
    lade_status st;
    h->busy = 1;
    LADE_NOGIL_BEGIN
    st = lade_loader_begin_epoch(l, epoch, indices ? PyArray_DATA(indices) : NULL,
                                 indices ? (size_t)PyArray_DIM(indices, 0) : 0);
    LADE_NOGIL_END
    h->busy = 0;
    if (st) return lade_py_raise(st, fn);
    return PyLong_FromSize_t(lade_loader_num_batches(l));
}

/* loader_next(capsule, images_out, labels_out) -> (end_of_epoch, count).
 * Waits in short slices so that Ctrl-C (KeyboardInterrupt) gets through. */
static PyObject *py_loader_next(PyObject *self, PyObject *args) {
    const char *fn = "lade.data.Loader";
    PyObject *cap, *images_obj, *labels_obj;
    if (!PyArg_ParseTuple(args, "OOO:loader_next", &cap, &images_obj, &labels_obj)) return NULL;
    lade_loader *l = loader_of(cap, fn);
    if (!l) return NULL;
    PyArrayObject *images = lade_py_array(images_obj, fn, "images", NPY_FLOAT32, LADE_OUT, 4, NULL);
    PyArrayObject *labels = images ? lade_py_array(labels_obj, fn, "labels", NPY_INT64, LADE_OUT, 1, NULL) : NULL;
    if (!labels) return NULL;
    /* the caller allocates these from the loader's own shapes */
    loader_holder *h = PyCapsule_GetPointer(cap, LOADER);
    lade_batch_info info;
    lade_status st;
    h->busy = 1;
    for (;;) {
        LADE_NOGIL_BEGIN
        st = lade_loader_next(l, PyArray_DATA(images), PyArray_DATA(labels), 100, &info);
        LADE_NOGIL_END
        if (st || info.ready) break;
        if (PyErr_CheckSignals()) {
            h->busy = 0;
            return NULL;
        }
    }
    h->busy = 0;
    if (st) return lade_py_raise(st, fn);
    return Py_BuildValue("(On)", info.end_of_epoch ? Py_True : Py_False, (Py_ssize_t)info.count);
}

static PyObject *py_loader_cancel(PyObject *self, PyObject *args) {
    PyObject *cap;
    if (!PyArg_ParseTuple(args, "O:loader_cancel", &cap)) return NULL;
    lade_loader *l = loader_of(cap, "lade.data.Loader");
    if (!l) return NULL;
    LADE_NOGIL_BEGIN
    lade_loader_cancel(l);
    LADE_NOGIL_END
    Py_RETURN_NONE;
}

/* loader_skipped(capsule) -> (count, last message) */
static PyObject *py_loader_skipped(PyObject *self, PyObject *args) {
    PyObject *cap;
    if (!PyArg_ParseTuple(args, "O:loader_skipped", &cap)) return NULL;
    loader_holder *h = PyCapsule_GetPointer(cap, LOADER);
    if (!h) return NULL;
    if (!h->loader) return Py_BuildValue("(ns)", (Py_ssize_t)0, "");
    char message[600];
    size_t n = lade_loader_skipped(h->loader, message, sizeof message);
    return Py_BuildValue("(ns)", (Py_ssize_t)n, message);
}

/* loader_close(capsule): stops and joins the workers; idempotent */
static PyObject *py_loader_close(PyObject *self, PyObject *args) {
    PyObject *cap;
    if (!PyArg_ParseTuple(args, "O:loader_close", &cap)) return NULL;
    loader_holder *h = PyCapsule_GetPointer(cap, LOADER);
    if (!h) return NULL;
    if (h->busy) {
        PyErr_SetString(PyExc_RuntimeError, "lade.data.Loader.close: the loader is in use by another thread");
        return NULL;
    }
    lade_loader *l = h->loader;
    h->loader = NULL;
    LADE_NOGIL_BEGIN
    lade_loader_destroy(l);
    LADE_NOGIL_END
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"_cifar_count", py_cifar_count, METH_VARARGS, "_cifar_count(nbytes, kind, func) -> records"},
    {"_cifar_parse", py_cifar_parse, METH_VARARGS, "_cifar_parse(buffer, kind, coarse, images, labels, func)"},
    {"_labels_check", py_labels_check, METH_VARARGS, "_labels_check(labels, num_classes, func)"},
    {"_filelist_parse", py_filelist_parse, METH_VARARGS, "_filelist_parse(root, source, text, num_classes, func)"},
    {"_filelist_from_paths", py_filelist_from_paths, METH_VARARGS, "_filelist_from_paths(root, paths, labels, func)"},
    {"_filelist_info", py_filelist_info, METH_VARARGS, "_filelist_info(filelist, labels_out) -> n"},
    {"_filelist_entry", py_filelist_entry, METH_VARARGS, "_filelist_entry(filelist, i) -> (path, label, line)"},
    {"_jpeg_max_pixels", py_jpeg_max_pixels, METH_O, "_jpeg_max_pixels(n or None) -> the pixel limit in force"},
    {"_decode_jpeg", py_decode_jpeg, METH_VARARGS, "_decode_jpeg(data) -> uint8 (H, W, 3)"},
    {"_read_jpeg", py_read_jpeg, METH_VARARGS, "_read_jpeg(path) -> uint8 (H, W, 3)"},
    {"_transform_preset", py_transform_preset, METH_VARARGS, "_transform_preset(name, a, b) -> spec"},
    {"_transform_params", py_transform_params, METH_VARARGS, "_transform_params(spec, h, w, seed, stream) -> dict"},
    {"_augment", py_augment, METH_VARARGS, "_augment(spec, images, out, seed, stream)"},
    {"_augment_hwc", py_augment_hwc, METH_VARARGS, "_augment_hwc(spec, image, out, seed, stream)"},
    {"_loader_create", py_loader_create, METH_VARARGS, "_loader_create(...) -> capsule"},
    {"_loader_begin", py_loader_begin, METH_VARARGS, "_loader_begin(loader, epoch, indices) -> batches"},
    {"_loader_next", py_loader_next, METH_VARARGS, "_loader_next(loader, images, labels) -> (end, count)"},
    {"_loader_cancel", py_loader_cancel, METH_VARARGS, "_loader_cancel(loader)"},
    {"_loader_skipped", py_loader_skipped, METH_VARARGS, "_loader_skipped(loader) -> (count, message)"},
    {"_loader_close", py_loader_close, METH_VARARGS, "_loader_close(loader)"},
    {NULL, NULL, 0, NULL},
};

int lade_register_data(PyObject *module) { return PyModule_AddFunctions(module, methods); }
