/* bind_data.c - Python bindings for lade_data.h: CIFAR, JPEG, file lists,
 * transforms and the loader (used by lade/data.py). FileList, Transform and
 * Loader wrap their C objects as every lade._C type does (LADE_OBJECT_HEAD, core
 * NULL until __init__ succeeds); every call and type is declared in
 * bindings.def (section data), and here are the bodies it names. */
#include "bind.h"

#include <stddef.h>
#include <string.h>
#include <structmember.h>

#include "python/gen/data_args.h"

/* ---- file lists -------------------------------------------------------------- */
/* core: the lade_filelist */
#define FILELIST(obj) ((lade_filelist *)((lade_object *)(obj))->core)

/* FileList(root, text=None, source=None, num_classes=0, paths=None, labels=None) */
static int FileListType_constructor(lade_object *self, lade_call *c) {
    FileListType_constructor_args a = FileListType_constructor_fill(c);
    if (a.paths) c->func = "lade.data.ImageFolder";
    lade_filelist_destroy(self->core);
    lade_status st = lade_filelist_create((lade_filelist **)&self->core, a.root, a.source); /* NULL on failure */
    lade_filelist *list = self->core;
    if (!st && a.paths) {
        Py_ssize_t n = PyList_GET_SIZE(a.paths);
        if (!a.labels || a.n != n)
            return PyErr_Format(PyExc_ValueError, "%s: argument 'labels' must have one entry per path (%zd)", c->func,
                                n), -1;
        for (Py_ssize_t i = 0; !st && i < n; i++) {
            const char *path = PyUnicode_AsUTF8(PyList_GET_ITEM(a.paths, i));
            if (!path) return -1;
            st = lade_filelist_add(list, path, a.labels[i], 0);
        }
    } else if (!st) {
        if (!a.text.v) return PyErr_Format(PyExc_TypeError, "%s: argument 'text' (bytes) is required", c->func), -1;
        Py_BEGIN_ALLOW_THREADS
        st = lade_filelist_parse(list, (const char *)a.text.v, a.text.len, a.num_classes);
        Py_END_ALLOW_THREADS
    }
    return st ? (lade_py_raise(st, c->func), -1) : 0;
}

static Py_ssize_t filelist_len(lade_object *self) {
    return self->core ? (Py_ssize_t)lade_filelist_size(self->core) : 0;
}

/* entry(i) -> (path, label, line) */
static PyObject *filelist_entry(lade_object *self, PyObject *arg) {
    Py_ssize_t i = PyNumber_AsSsize_t(arg, PyExc_IndexError), n = filelist_len(self);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (i < 0 || i >= n) return PyErr_Format(PyExc_IndexError, "lade.data.FileList: index %zd is outside [0, %zd)", i,
                                             n);
    return Py_BuildValue("(sLL)", lade_filelist_path(self->core, (size_t)i),
                         (long long)lade_filelist_label(self->core, (size_t)i),
                         (long long)lade_filelist_line(self->core, (size_t)i));
}

static PyObject *filelist_labels(lade_object *self) {
    npy_intp n = filelist_len(self);
    PyObject *a = PyArray_EMPTY(1, &n, NPY_INT64, 0);
    for (npy_intp i = 0; a && i < n; i++)
        ((int64_t *)PyArray_DATA((PyArrayObject *)a))[i] = lade_filelist_label(self->core, (size_t)i);
    return a;
}

/* ---- JPEG -------------------------------------------------------------------- */

static lade_status jpeg_max_pixels(int given, long long n, double *ret) {
    lade_status st = given ? lade_jpeg_set_max_pixels((size_t)n) : LADE_OK;
    ret[0] = (double)lade_jpeg_max_pixels();
    return st;
}

/* ---- transforms ------------------------------------------------------------ */
typedef struct {
    LADE_OBJECT_HEAD /* core: &t once initialised */
    lade_transform t;
} TransformObject;
#define TRANSFORM(obj) (&((TransformObject *)(obj))->t)

/* scale and ratio: 2 numbers (lo, hi); mean and std: 3 (r, g, b) */
static int read_numbers(const lade_call *c, PyObject *o, const char *arg, int n, double *v) {
    if (o && !PyArg_ParseTuple(o, n == 2 ? "dd" : "ddd", &v[0], &v[1], &v[2])) {
        PyErr_Clear();
        return PyErr_Format(PyExc_ValueError, "%s: argument '%s' must be %d numbers, got %R", c->func, arg, n, o), -1;
    }
    return 0;
}

/* Transform(preset, size=0, resize=0, pad=None, flip=None, scale=None, ratio=None, brightness=None,
 *           contrast=None, saturation=None, mean=None, std=None): a preset with the fields given changed */
static int TransformType_constructor(TransformObject *self, lade_call *c) {
    TransformType_constructor_args a = TransformType_constructor_fill(c);
    lade_transform *t = &self->t;
    self->core = NULL;
    lade_status st = lade_transform_preset(t, a.preset, a.size, a.resize);
    if (st) return lade_py_raise(st, c->func), -1;
    if (a.has_pad) t->pad = a.pad;
    if (a.has_flip) t->flip = a.flip;
    if (a.has_brightness) t->brightness = a.brightness;
    if (a.has_contrast) t->contrast = a.contrast;
    if (a.has_saturation) t->saturation = a.saturation;
    double scale[3] = {t->scale_min, t->scale_max}, ratio[3] = {t->ratio_min, t->ratio_max};
    double mean[3] = {t->mean[0], t->mean[1], t->mean[2]}, std[3] = {t->std[0], t->std[1], t->std[2]};
    if (read_numbers(c, a.scale, "scale", 2, scale) || read_numbers(c, a.ratio, "ratio", 2, ratio) ||
        read_numbers(c, a.mean, "mean", 3, mean) || read_numbers(c, a.std, "std", 3, std))
        return -1;
    t->scale_min = scale[0], t->scale_max = scale[1], t->ratio_min = ratio[0], t->ratio_max = ratio[1];
    for (int i = 0; i < 3; i++) t->mean[i] = (float)mean[i], t->std[i] = (float)std[i];
    if ((st = lade_transform_check(t))) return lade_py_raise(st, c->func), -1;
    self->core = t;
    return 0;
}

static PyObject *triple(const float v[3]) { return Py_BuildValue("(fff)", v[0], v[1], v[2]); }
/* params(height, width, seed=0, stream=0) -> dict of the random choices */
static PyObject *TransformType_params(TransformObject *self, lade_call *c) {
    TransformType_params_args a = TransformType_params_fill(c);
    lade_rng rng;
    lade_rng_seed(&rng, a.seed, a.stream);
    lade_aug_params p;
    lade_status st = lade_transform_params(&self->t, a.height, a.width, &rng, &p);
    if (st) return lade_py_raise(st, c->func);
    return Py_BuildValue("{s:(iiii),s:(ii),s:O,s:d,s:d,s:d,s:(iii)}", "box", p.top, p.left, p.height, p.width,
                         "resized", p.resized_h, p.resized_w, "flip", p.flip ? Py_True : Py_False, "brightness",
                         p.brightness, "contrast", p.contrast, "saturation", p.saturation, "jitter_order",
                         p.jitter_order[0], p.jitter_order[1], p.jitter_order[2]);
}

/* ---- the loader ---------------------------------------------------------------- */
typedef struct {
    LADE_OBJECT_HEAD     /* core: the lade_loader */
    PyObject *source[3]; /* images, labels, files: the loader reads them until it is closed */
    size_t batch_size;
    int out_h, out_w;
    size_t skipped;      /* kept at close, with the last reason */
    char skip_reason[600];
} LoaderObject;
#define LOADER(obj) ((lade_loader *)(obj)->core)

static int LoaderType_constructor(LoaderObject *self, lade_call *c) {
    LoaderType_constructor_args a = LoaderType_constructor_fill(c);
    if (!a.files && !(a.images && a.labels))
        return PyErr_Format(PyExc_TypeError, "%s: give images and labels, or files", c->func), -1;
    lade_loader_config cfg = {.transform = *TRANSFORM(a.transform), .batch_size = (size_t)a.batch_size,
                              .drop_last = a.drop_last, .skip_bad = a.skip_bad, .num_workers = a.num_workers,
                              .prefetch = a.prefetch, .seed = a.seed};
    lade_status st = self->core ? lade_fail(LADE_ESTATE, "already initialised") : LADE_OK;
    if (a.files) {
        cfg.files = FILELIST(a.files);
    } else if (!st) {
        cfg.images = a.images, cfg.labels = a.labels;
        cfg.num_images = (size_t)a.N, cfg.image_height = (int)a.H, cfg.image_width = (int)a.W;
        st = lade_labels_check(cfg.labels, cfg.num_images, INT64_MAX); /* no negative label */
    }
    lade_loader *loader = NULL;
    if (!st) {
        Py_BEGIN_ALLOW_THREADS
        st = lade_loader_create(&loader, &cfg);
        Py_END_ALLOW_THREADS
    }
    if (st) return lade_py_raise(st, c->func), -1;
    self->core = loader;
    self->source[0] = Py_XNewRef((PyObject *)c->array[LoaderType_constructor_arg_images]);
    self->source[1] = Py_XNewRef((PyObject *)c->array[LoaderType_constructor_arg_labels]);
    self->source[2] = Py_XNewRef(a.files);
    self->batch_size = cfg.batch_size, self->out_h = cfg.transform.out_h, self->out_w = cfg.transform.out_w;
    return 0;
}

/* Stops and joins the workers (they never take the GIL), then lets go of the sources. */
static void loader_release(LoaderObject *self) {
    lade_loader *l = LOADER(self);
    if (l) self->skipped = lade_loader_skipped(l, self->skip_reason, sizeof self->skip_reason);
    self->core = NULL;
    Py_BEGIN_ALLOW_THREADS
    lade_loader_destroy(l);
    Py_END_ALLOW_THREADS
    for (int i = 0; i < 3; i++) Py_CLEAR(self->source[i]);
}

/* begin(epoch, indices=None) -> number of batches */
static lade_status loader_begin(lade_loader *loader, uint64_t epoch, const int64_t *indices, npy_intp n, double *ret) {
    lade_status st = lade_loader_begin_epoch(loader, (int64_t)epoch, indices, indices ? (size_t)n : 0);
    ret[0] = (double)lade_loader_num_batches(loader);
    return st;
}

/* next(images=None, labels=None) -> (images, labels) cut to the batch's size, or None at the end of
 * the epoch. The outputs must hold a whole batch. Waits in short slices so that Ctrl-C
 * (KeyboardInterrupt) gets through. */
static PyObject *LoaderType_next(LoaderObject *self, lade_call *c) {
    LADE_BIND(c, 'b', (npy_intp)self->batch_size);
    LADE_BIND(c, 'h', self->out_h);
    LADE_BIND(c, 'w', self->out_w);
    if (lade_outputs(c) || lade_object_ready((lade_object *)self, c->func)) return NULL;
    LoaderType_next_args a = LoaderType_next_fill(c);
    lade_batch_info info;
    lade_status st;
    self->busy = 1;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        st = lade_loader_next(LOADER(self), a.images, a.labels, 100, &info);
        Py_END_ALLOW_THREADS
        if (st || info.ready || PyErr_CheckSignals()) break;
    }
    self->busy = 0;
    if (PyErr_Occurred()) return NULL;
    if (st) return lade_py_raise(st, c->func);
    if (info.end_of_epoch) return Py_NewRef(Py_None);
    PyObject *count = PyLong_FromSize_t(info.count), *slice = count ? PySlice_New(NULL, count, NULL) : NULL;
    PyObject *images = (PyObject *)c->array[LoaderType_next_arg_images];
    PyObject *labels = (PyObject *)c->array[LoaderType_next_arg_labels];
    PyObject *result = slice ? Py_BuildValue("NN", PyObject_GetItem(images, slice), PyObject_GetItem(labels, slice))
                             : NULL;
    Py_XDECREF(count);
    Py_XDECREF(slice);
    return result;
}

static PyObject *loader_skipped(LoaderObject *self) {
    if (self->core) self->skipped = lade_loader_skipped(LOADER(self), self->skip_reason, sizeof self->skip_reason);
    return Py_BuildValue("(ns)", (Py_ssize_t)self->skipped, self->skip_reason);
}

static PyObject *loader_close(LoaderObject *self, PyObject *unused) {
    if (self->busy) return lade_object_ready((lade_object *)self, "lade.data.Loader.close"), NULL;
    loader_release(self);
    Py_RETURN_NONE;
}

#include "python/gen/data_table.h"
