/* loader.c - the threaded batch loader.
 *
 * An epoch is a list of sample indices cut into batches. Worker threads claim
 * chunks of consecutive positions in order and write each augmented sample
 * straight into the slot of its batch; there are `prefetch` slots, used as a
 * ring, so workers run at most `prefetch` batches ahead of the consumer.
 * Sample p of epoch e draws its randomness from stream e * n + p: the output
 * never depends on which thread did the work or when.
 *
 * Cancelling (a new epoch, destroy) bumps a generation counter and waits for
 * the workers' in-flight chunks; results of an older generation are dropped. */
#include "lade_data.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { CHUNK = 8, MESSAGE = 600 };

typedef struct {
    float *images;
    int64_t *labels;
    uint8_t *ok;          /* sample k of the batch is valid (not skipped) */
    size_t batch;         /* the batch this slot holds */
    size_t remaining;     /* its samples not finished yet */
    lade_status status;   /* first failure (lowest position) in the batch */
    size_t error_pos;
    char message[MESSAGE];
    size_t skipped;       /* samples left out (skip_bad), counted when consumed */
    char skip_message[MESSAGE];
} slot;

typedef struct {
    lade_loader *loader;
    pthread_t thread;
    int started;
} worker;

struct lade_loader {
    lade_loader_config cfg;
    size_t num_samples, sample_floats;
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* workers wait for work */
    pthread_cond_t done_cv; /* the consumer waits for batches, cancel for in-flight chunks */
    worker *workers;
    int stop;

    int active;
    uint64_t gen;
    int64_t epoch;
    int64_t *indices;
    size_t n, indices_cap, num_batches, limit;
    size_t next_pos, consumed, in_flight;
    slot *slots;

    size_t skipped;
    char skip_message[MESSAGE];
};

static size_t batch_len(const lade_loader *l, size_t b) {
    if (b >= l->num_batches) return 0;
    size_t start = b * l->cfg.batch_size, end = start + l->cfg.batch_size;
    return (end < l->limit ? end : l->limit) - start;
}

/* ---- one sample ------------------------------------------------------------ */
typedef struct {
    lade_jpeg *jpeg;
    void *scratch;
    size_t scratch_size;
    char path[4096];
} worker_state;

static lade_status load_sample(lade_loader *l, worker_state *w, size_t index, uint64_t stream, float *out) {
    const lade_loader_config *c = &l->cfg;
    lade_image img;
    lade_status st;
    if (c->images) {
        size_t plane = (size_t)c->image_height * c->image_width;
        img = (lade_image){c->images + index * 3 * plane, c->image_height, c->image_width, (ptrdiff_t)plane,
                           c->image_width, 1};
    } else {
        if (!w->jpeg && (st = lade_jpeg_create(&w->jpeg))) return st;
        if ((st = lade_filelist_full_path(c->files, index, w->path, sizeof w->path))) return st;
        const uint8_t *rgb;
        int width, height;
        if ((st = lade_jpeg_read(w->jpeg, w->path, &rgb, &width, &height))) return st;
        img = (lade_image){rgb, height, width, 1, (ptrdiff_t)width * 3, 3};
    }
    lade_rng rng;
    lade_rng_seed(&rng, c->seed, stream);
    lade_aug_params p;
    if ((st = lade_transform_params(&c->transform, img.height, img.width, &rng, &p))) return st;
    return lade_transform_apply(&c->transform, &img, &p, out, &w->scratch, &w->scratch_size);
}

/* The failure message of sample `index`, naming its list file and line. */
static void describe_failure(const lade_loader *l, size_t index, char *buf, size_t size) {
    const char *detail = lade_error_detail();
    const lade_filelist *fl = l->cfg.files;
    if (fl && lade_filelist_source(fl) && lade_filelist_line(fl, index) > 0)
        snprintf(buf, size, "%s line %lld: %s", lade_filelist_source(fl), (long long)lade_filelist_line(fl, index),
                 detail);
    else if (fl)
        snprintf(buf, size, "sample %zu: %s", index, detail);
    else
        snprintf(buf, size, "image %zu: %s", index, detail);
}

static void *worker_main(void *arg) {
    lade_loader *l = ((worker *)arg)->loader;
    worker_state w = {0};
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        size_t p0 = l->next_pos;
        if (!l->active || p0 >= l->limit || p0 / l->cfg.batch_size >= l->consumed + (size_t)l->cfg.prefetch) {
            pthread_cond_wait(&l->work_cv, &l->mu);
            continue;
        }
        size_t b = p0 / l->cfg.batch_size, batch_end = (b + 1) * l->cfg.batch_size;
        size_t p1 = p0 + CHUNK;
        if (p1 > batch_end) p1 = batch_end;
        if (p1 > l->limit) p1 = l->limit;
        l->next_pos = p1;
        l->in_flight++;
        uint64_t gen = l->gen;
        uint64_t stream0 = (uint64_t)l->epoch * l->n;
        slot *s = &l->slots[b % (size_t)l->cfg.prefetch];
        pthread_mutex_unlock(&l->mu);

        lade_status first = LADE_OK;
        size_t first_pos = 0, skipped = 0, done = 0;
        char message[MESSAGE];
        for (size_t p = p0; p < p1; p++, done++) {
            if (__atomic_load_n(&l->gen, __ATOMIC_RELAXED) != gen) break;
            size_t k = p - b * l->cfg.batch_size, index = (size_t)l->indices[p];
            lade_status st = load_sample(l, &w, index, stream0 + p, s->images + k * l->sample_floats);
            s->labels[k] = l->cfg.labels ? l->cfg.labels[index] : lade_filelist_label(l->cfg.files, index);
            s->ok[k] = st == LADE_OK;
            if (st) {
                if (l->cfg.skip_bad) skipped++;
                if (!first || l->cfg.skip_bad) {
                    first = st, first_pos = p;
                    describe_failure(l, index, message, sizeof message);
                }
            }
        }

        pthread_mutex_lock(&l->mu);
        l->in_flight--;
        if (l->gen == gen && done == p1 - p0) {
            if (first && l->cfg.skip_bad) {
                s->skipped += skipped;
                memcpy(s->skip_message, message, sizeof message);
            } else if (first && (!s->status || first_pos < s->error_pos)) {
                s->status = first, s->error_pos = first_pos;
                memcpy(s->message, message, sizeof message);
            }
            s->remaining -= p1 - p0;
            if (!s->remaining) pthread_cond_broadcast(&l->done_cv);
        }
        if (!l->in_flight) pthread_cond_broadcast(&l->done_cv);
    }
    pthread_mutex_unlock(&l->mu);
    lade_jpeg_destroy(w.jpeg);
    lade_free(w.scratch);
    return NULL;
}

/* ---- life cycle ------------------------------------------------------------- */

lade_status lade_loader_create(lade_loader **out, const lade_loader_config *cfg) {
    *out = NULL;
    lade_status st = lade_transform_check(&cfg->transform);
    if (st) return st;
    if (!cfg->images == !cfg->files) return lade_fail(LADE_EINVAL, "give exactly one source: images or a file list");
    if (cfg->images && (!cfg->labels || cfg->image_height < 1 || cfg->image_width < 1))
        return lade_fail(LADE_EINVAL, "in-memory images need labels and a size >= 1, got %d x %d", cfg->image_height,
                         cfg->image_width);
    if (cfg->batch_size < 1)
        return lade_fail(LADE_EINVAL, "argument 'batch_size' must be >= 1, got %zu", cfg->batch_size);
    if (cfg->num_workers < 1 || cfg->num_workers > LADE_MAX_LOADER_WORKERS)
        return lade_fail(LADE_EINVAL, "argument 'num_workers' must be in [1, %d], got %d", LADE_MAX_LOADER_WORKERS,
                         cfg->num_workers);
    if (cfg->prefetch < 1 || cfg->prefetch > 1024)
        return lade_fail(LADE_EINVAL, "argument 'prefetch' must be in [1, 1024], got %d", cfg->prefetch);
    size_t floats, batch_floats;
    if (!lade_mul_size(&floats, (size_t)3 * cfg->transform.out_h, (size_t)cfg->transform.out_w) ||
        !lade_mul_size(&batch_floats, floats, cfg->batch_size) || batch_floats > ((size_t)1 << 40))
        return lade_fail(LADE_EINVAL, "a batch of %zu samples of 3 x %d x %d is too large", cfg->batch_size,
                         cfg->transform.out_h, cfg->transform.out_w);

    lade_loader *l = calloc(1, sizeof *l);
    if (!l) return lade_fail(LADE_ENOMEM, "loader");
    l->cfg = *cfg;
    l->num_samples = cfg->images ? cfg->num_images : lade_filelist_size(cfg->files);
    l->sample_floats = floats;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->work_cv, NULL);
    pthread_cond_init(&l->done_cv, NULL);
    l->slots = calloc((size_t)cfg->prefetch, sizeof *l->slots);
    l->workers = calloc((size_t)cfg->num_workers, sizeof *l->workers);
    if (!l->slots || !l->workers) goto nomem;
    for (int i = 0; i < cfg->prefetch; i++) {
        slot *s = &l->slots[i];
        s->images = lade_alloc(batch_floats * sizeof(float));
        s->labels = lade_alloc(cfg->batch_size * sizeof(int64_t));
        s->ok = lade_alloc(cfg->batch_size);
        if (!s->images || !s->labels || !s->ok) goto nomem;
    }
    for (int i = 0; i < cfg->num_workers; i++) {
        l->workers[i].loader = l;
        if (pthread_create(&l->workers[i].thread, NULL, worker_main, &l->workers[i])) {
            lade_loader_destroy(l);
            return lade_fail(LADE_ENOMEM, "could not start loader thread %d of %d", i + 1, cfg->num_workers);
        }
        l->workers[i].started = 1;
    }
    *out = l;
    return LADE_OK;
nomem:
    lade_loader_destroy(l);
    return lade_fail(LADE_ENOMEM, "loader buffers for %d batches of %zu samples", cfg->prefetch, cfg->batch_size);
}

/* Stops the epoch and waits for in-flight chunks; call with the lock held. */
static void cancel_locked(lade_loader *l) {
    __atomic_store_n(&l->gen, l->gen + 1, __ATOMIC_RELAXED);
    l->active = 0;
    while (l->in_flight) pthread_cond_wait(&l->done_cv, &l->mu);
}

void lade_loader_destroy(lade_loader *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    cancel_locked(l);
    l->stop = 1;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; l->workers && i < l->cfg.num_workers; i++)
        if (l->workers[i].started) pthread_join(l->workers[i].thread, NULL);
    for (int i = 0; l->slots && i < l->cfg.prefetch; i++) {
        lade_free(l->slots[i].images);
        lade_free(l->slots[i].labels);
        lade_free(l->slots[i].ok);
    }
    free(l->slots);
    free(l->workers);
    free(l->indices);
    pthread_cond_destroy(&l->work_cv);
    pthread_cond_destroy(&l->done_cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

size_t lade_loader_sample_count(const lade_loader *l) { return l->num_samples; }

void lade_loader_cancel(lade_loader *l) {
    pthread_mutex_lock(&l->mu);
    cancel_locked(l);
    pthread_mutex_unlock(&l->mu);
}

lade_status lade_loader_begin_epoch(lade_loader *l, int64_t epoch, const int64_t *indices, size_t n) {
    if (epoch < 0) return lade_fail(LADE_EINVAL, "epoch must be >= 0, got %lld", (long long)epoch);
    if (!indices) n = l->num_samples;
    for (size_t i = 0; indices && i < n; i++)
        if (indices[i] < 0 || (uint64_t)indices[i] >= l->num_samples)
            return lade_fail(LADE_ERANGE, "indices[%zu] = %lld is outside [0, %zu) for epoch %lld", i,
                             (long long)indices[i], l->num_samples, (long long)epoch);
    pthread_mutex_lock(&l->mu);
    cancel_locked(l);
    if (n > l->indices_cap) {
        int64_t *p = realloc(l->indices, (n ? n : 1) * sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&l->mu);
            return lade_fail(LADE_ENOMEM, "epoch of %zu indices", n);
        }
        l->indices = p, l->indices_cap = n;
    }
    if (indices) memcpy(l->indices, indices, n * sizeof *indices);
    else lade_epoch_permutation(l->indices, n, l->cfg.seed, (uint64_t)epoch); /* = lade_sample_instance's order */
    l->epoch = epoch;
    l->n = n;
    l->num_batches = l->cfg.drop_last ? n / l->cfg.batch_size : (n + l->cfg.batch_size - 1) / l->cfg.batch_size;
    l->limit = l->cfg.drop_last ? l->num_batches * l->cfg.batch_size : n;
    l->next_pos = 0;
    l->consumed = 0;
    for (size_t i = 0; i < (size_t)l->cfg.prefetch; i++) {
        slot *s = &l->slots[i];
        s->batch = i;
        s->remaining = batch_len(l, i);
        s->status = LADE_OK;
        s->skipped = 0;
    }
    l->active = 1;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
    return LADE_OK;
}

size_t lade_loader_num_batches(const lade_loader *l) { return l->num_batches; }

lade_status lade_loader_next(lade_loader *l, float *images, int64_t *labels, int timeout_ms, lade_batch_info *info) {
    memset(info, 0, sizeof *info);
    pthread_mutex_lock(&l->mu);
    if (!l->active) {
        pthread_mutex_unlock(&l->mu);
        return lade_fail(LADE_ESTATE, "no epoch in progress (begin one first)");
    }
    if (l->consumed >= l->num_batches) {
        pthread_mutex_unlock(&l->mu);
        info->ready = info->end_of_epoch = 1;
        return LADE_OK;
    }
    size_t b = l->consumed;
    slot *s = &l->slots[b % (size_t)l->cfg.prefetch];
    struct timespec deadline;
    if (timeout_ms >= 0) {
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) deadline.tv_sec++, deadline.tv_nsec -= 1000000000L;
    }
    while (s->remaining && l->active) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&l->done_cv, &l->mu);
        } else if (pthread_cond_timedwait(&l->done_cv, &l->mu, &deadline) == ETIMEDOUT && s->remaining) {
            pthread_mutex_unlock(&l->mu);
            return LADE_OK; /* not ready */
        }
    }
    if (!l->active || l->consumed != b) {
        pthread_mutex_unlock(&l->mu);
        return lade_fail(LADE_ECANCELLED, "the epoch was cancelled while waiting for batch %zu", b);
    }
    pthread_mutex_unlock(&l->mu);

    /* The slot is ours until it is released below: workers write a batch
     * only while it lies within prefetch batches of the consumer. */
    size_t len = batch_len(l, b), count = 0;
    for (size_t k = 0; k < len; k++) {
        if (!s->ok[k]) continue;
        memcpy(images + count * l->sample_floats, s->images + k * l->sample_floats, l->sample_floats * sizeof(float));
        labels[count++] = s->labels[k];
    }
    lade_status status = s->status;
    char message[MESSAGE];
    if (status) memcpy(message, s->message, sizeof message);

    pthread_mutex_lock(&l->mu);
    if (l->active && l->consumed == b) {
        if (s->skipped) {
            l->skipped += s->skipped;
            memcpy(l->skip_message, s->skip_message, sizeof s->skip_message);
        }
        s->batch = b + (size_t)l->cfg.prefetch;
        s->remaining = batch_len(l, s->batch);
        s->status = LADE_OK;
        s->skipped = 0;
        l->consumed++;
        pthread_cond_broadcast(&l->work_cv);
    }
    pthread_mutex_unlock(&l->mu);
    info->ready = 1, info->count = count, info->batch = b;
    if (status) return lade_fail(status, "%s", message);
    return LADE_OK;
}

size_t lade_loader_skipped(const lade_loader *l, char *last_message, size_t size) {
    lade_loader *m = (lade_loader *)l;
    pthread_mutex_lock(&m->mu);
    size_t n = m->skipped;
    if (last_message && size) snprintf(last_message, size, "%s", m->skip_message);
    pthread_mutex_unlock(&m->mu);
    return n;
}
