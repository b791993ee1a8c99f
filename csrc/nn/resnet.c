/* resnet.c - the ResNet models: the CIFAR ResNet-32s (LADE's BBN variant and
 * the classic one) and a torchvision-style ResNet-18.
 *
 * Parameters, gradients and BN running statistics each live in one flat
 * buffer, in PyTorch's named_parameters order, so Python sees them as views
 * and a checkpoint is one write. Activations live in one arena sized by the
 * largest batch seen, channel-major (CNHW) so each convolution over the
 * batch is a few wide GEMMs. In the LADE variant cb_block and rb_block write
 * into the two halves of one buffer: in CNHW that IS their channel concat.
 * The classifier is fc (linear with bias) or the Causal Norm classifier,
 * whose running feature mean is a buffer beside the BN statistics. */
#include "lade_nn.h"
#include "nn_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_BLOCKS 17 /* 5 + 5 + 5 (classic) or 5 + 5 + 4 + cb + rb (LADE); 8 in ResNet-18 */
#define MAX_UNITS (1 + 3 * MAX_BLOCKS) /* conv + BN units: the stem, then conv1, conv2, downsample per block */
#define MAX_TENSORS (5 + MAX_BLOCKS * 15 + 2)
#define MAX_CHANNELS 512
#define BN_MOMENTUM 0.1f
#define BN_EPS 1e-5f

typedef struct {
    size_t weight, gamma, beta;          /* offsets into params / grads */
    size_t running_mean, running_var;    /* offsets into buffers */
    lade_conv2d_geom geom;
    int weight_tensor;                   /* index into tensors: the conv's name */
    int in_h, in_w;                      /* input size of the last forward */
    double seconds[2];                   /* forward, backward time since the last profile reset */
    float mean[MAX_CHANNELS], invstd[MAX_CHANNELS]; /* batch statistics of the last training forward */
    size_t count;                        /* values per channel they cover (all replicas' with a reducer) */
} conv_bn;

typedef struct {
    conv_bn unit1, unit2;
    conv_bn proj;            /* the 1x1 projection shortcut (ResNet-18 where the shape changes) */
    int in_c, out_c, stride, has_proj;
    float *c1, *a1, *c2, *y; /* conv1 out, relu(bn1), conv2 out, block output */
    float *pc, *pb;          /* projection conv out, its BN out */
} block;

struct lade_resnet {
    lade_resnet_variant variant;
    int num_classes, feature_dim;
    size_t num_params, num_buffers;
    float *params, *grads, *buffers;
    int num_tensors;
    lade_tensor_info tensors[MAX_TENSORS];
    char names[MAX_TENSORS][80];

    conv_bn stem;
    int stem_channels, has_pool;
    lade_pool_geom pool;    /* the max pool after the stem, when has_pool */
    block blocks[MAX_BLOCKS];
    conv_bn *units[MAX_UNITS]; /* every conv + BN in creation order: profiling, init, statistics */
    int num_units;
    int num_blocks;      /* the chain layer1..layer3 */
    int has_cb_rb;       /* blocks[num_blocks] = cb_block, [num_blocks+1] = rb_block */
    size_t fc_weight, fc_bias;
    /* the Causal Norm classifier (fc_bias unused), its running feature mean (offset into buffers) and the
     * batch mean of the last training forward's features, which the commit adds into it */
    int causal_norm;
    lade_causal_norm_config cn;
    size_t fc_mean;
    float feature_batch_mean[MAX_CHANNELS];

    /* activation arena, sized for cap_n images of cap_h x cap_w */
    int cap_n, cap_h, cap_w;
    float *arena;
    float *images, *stem_c, *stem_a, *pooled, *features, *dfeatures, *head_maps, *dhead_maps;
    float *grad_in, *grad_out, *scratch_a, *scratch_b, *workspace, *head_workspace;
    int32_t *pool_argmax;

    /* synchronised batch norm: the reducer (NULL: per replica) and its buffer, shared by the layers in turn */
    lade_bn_sync bn_sync;
    double bn_sync_buf[2 * MAX_CHANNELS + 1];

    /* state of the last forward */
    int last_n, last_h, last_w, last_train, stats_pending;
    double prof[LADE_PROF_COUNT];
    lade_precision precision; /* of the training convolutions (eval forwards run in float32) */
};

/* ---- construction ------------------------------------------------------------------- */
static void add_tensor(lade_resnet *net, const char *prefix, const char *name, int is_buffer, int ndim,
                       int d0, int d1, int d2, int d3, size_t *offset) {
    lade_tensor_info *t = &net->tensors[net->num_tensors];
    snprintf(net->names[net->num_tensors], sizeof net->names[0], "%s%s", prefix, name);
    t->name = net->names[net->num_tensors];
    t->is_buffer = is_buffer;
    t->ndim = ndim;
    int dims[4] = {d0, d1, d2, d3};
    size_t size = 1;
    for (int i = 0; i < 4; i++) {
        t->dims[i] = i < ndim ? dims[i] : 1;
        size *= (size_t)t->dims[i];
    }
    size_t *counter = is_buffer ? &net->num_buffers : &net->num_params;
    t->offset = *counter;
    *offset = *counter;
    *counter += size;
    net->num_tensors++;
}

/* conv (k x k, pad k/2, no bias) + BN, registered under prefix+conv_name / prefix+bn_name */
static void add_conv_bn(lade_resnet *net, conv_bn *u, const char *prefix, const char *conv_name,
                        const char *bn_name, int cin, int cout, int k, int stride) {
    char name[48];
    u->geom = (lade_conv2d_geom){cin, cout, k, k, stride, stride, k / 2, k / 2};
    net->units[net->num_units++] = u;
    snprintf(name, sizeof name, "%s.weight", conv_name);
    u->weight_tensor = net->num_tensors;
    add_tensor(net, prefix, name, 0, 4, cout, cin, k, k, &u->weight);
    snprintf(name, sizeof name, "%s.weight", bn_name);
    add_tensor(net, prefix, name, 0, 1, cout, 0, 0, 0, &u->gamma);
    snprintf(name, sizeof name, "%s.bias", bn_name);
    add_tensor(net, prefix, name, 0, 1, cout, 0, 0, 0, &u->beta);
}

static void add_bn_buffers(lade_resnet *net, conv_bn *u, const char *prefix, const char *bn_name, int c) {
    char name[48];
    snprintf(name, sizeof name, "%s.running_mean", bn_name);
    add_tensor(net, prefix, name, 1, 1, c, 0, 0, 0, &u->running_mean);
    snprintf(name, sizeof name, "%s.running_var", bn_name);
    add_tensor(net, prefix, name, 1, 1, c, 0, 0, 0, &u->running_var);
}

/* with_proj: a 1x1 conv + BN shortcut (option B) where the shape changes;
 * otherwise option A there */
static void add_block(lade_resnet *net, block *b, const char *prefix, int cin, int cout, int stride, int with_proj) {
    b->in_c = cin;
    b->out_c = cout;
    b->stride = stride;
    /* PyTorch order: conv1, bn1 (weight, bias), conv2, bn2, downsample; buffers separately */
    add_conv_bn(net, &b->unit1, prefix, "conv1", "bn1", cin, cout, 3, stride);
    add_bn_buffers(net, &b->unit1, prefix, "bn1", cout);
    add_conv_bn(net, &b->unit2, prefix, "conv2", "bn2", cout, cout, 3, 1);
    add_bn_buffers(net, &b->unit2, prefix, "bn2", cout);
    b->has_proj = with_proj && (stride != 1 || cin != cout);
    if (b->has_proj) {
        add_conv_bn(net, &b->proj, prefix, "downsample.0", "downsample.1", cin, cout, 1, stride);
        add_bn_buffers(net, &b->proj, prefix, "downsample.1", cout);
    }
}

lade_status lade_resnet_create(lade_resnet **out, lade_resnet_variant variant, lade_stem stem, int num_classes,
                               const lade_causal_norm_config *causal_norm) {
    *out = NULL;
    if (variant != LADE_RESNET32_LADE && variant != LADE_RESNET32_CLASSIC && variant != LADE_RESNET18)
        return lade_fail(LADE_EINVAL, "unknown ResNet variant %d", (int)variant);
    if (stem != LADE_STEM_3X3 && stem != LADE_STEM_3X3_STRIDE2 && stem != LADE_STEM_7X7_STRIDE2_MAXPOOL)
        return lade_fail(LADE_EINVAL, "unknown stem %d", (int)stem);
    if (num_classes < 1 || num_classes > 1000000)
        return lade_fail(LADE_EINVAL, "num_classes must be in [1, 1000000], got %d", num_classes);
    lade_resnet *net = calloc(1, sizeof *net);
    if (!net) return lade_fail(LADE_ENOMEM, "could not allocate the model");
    net->variant = variant;
    net->num_classes = num_classes;

    const int resnet18 = variant == LADE_RESNET18;
    net->stem_channels = resnet18 ? 64 : 16;
    int stem_k = stem == LADE_STEM_7X7_STRIDE2_MAXPOOL ? 7 : 3, stem_stride = stem == LADE_STEM_3X3 ? 1 : 2;
    net->has_pool = stem == LADE_STEM_7X7_STRIDE2_MAXPOOL;
    net->pool = (lade_pool_geom){3, 2, 1};
    add_conv_bn(net, &net->stem, "", "conv1", "bn1", 3, net->stem_channels, stem_k, stem_stride);
    add_bn_buffers(net, &net->stem, "", "bn1", net->stem_channels);
    const int stage_blocks_lade[4] = {5, 5, 4, 0}, stage_blocks_classic[4] = {5, 5, 5, 0}, stage_blocks_18[4] = {2, 2, 2, 2};
    const int *stage_blocks = resnet18 ? stage_blocks_18
                              : variant == LADE_RESNET32_LADE ? stage_blocks_lade : stage_blocks_classic;
    int cin = net->stem_channels;
    for (int s = 0; s < 4; s++) {
        int cout = net->stem_channels << s;
        for (int i = 0; i < stage_blocks[s]; i++) {
            char prefix[24];
            snprintf(prefix, sizeof prefix, "layer%d.%d.", s + 1, i);
            add_block(net, &net->blocks[net->num_blocks++], prefix, cin, cout, (s > 0 && i == 0) ? 2 : 1, resnet18);
            cin = cout;
        }
    }
    if (variant == LADE_RESNET32_LADE) {
        net->has_cb_rb = 1;
        add_block(net, &net->blocks[net->num_blocks], "cb_block.", 64, 64, 1, 0);
        add_block(net, &net->blocks[net->num_blocks + 1], "rb_block.", 64, 64, 1, 0);
        net->feature_dim = 128;
    } else {
        net->feature_dim = cin;
    }
    add_tensor(net, "", "fc.weight", 0, 2, num_classes, net->feature_dim, 0, 0, &net->fc_weight);
    if (causal_norm) {
        lade_status st = lade_causal_norm_check(causal_norm, net->feature_dim);
        if (st) {
            lade_resnet_destroy(net);
            return st;
        }
        net->causal_norm = 1;
        net->cn = *causal_norm;
        add_tensor(net, "", "fc.feature_mean", 1, 1, net->feature_dim, 0, 0, 0, &net->fc_mean);
    } else {
        add_tensor(net, "", "fc.bias", 0, 1, num_classes, 0, 0, 0, &net->fc_bias);
    }

    net->params = lade_alloc(net->num_params * sizeof(float));
    net->grads = lade_alloc(net->num_params * sizeof(float));
    net->buffers = lade_alloc(net->num_buffers * sizeof(float));
    if (!net->params || !net->grads || !net->buffers) {
        size_t wanted = net->num_params;
        lade_resnet_destroy(net);
        return lade_fail(LADE_ENOMEM, "could not allocate %zu parameters", wanted);
    }
    memset(net->params, 0, net->num_params * sizeof(float));
    memset(net->grads, 0, net->num_params * sizeof(float));
    memset(net->buffers, 0, net->num_buffers * sizeof(float));
    *out = net;
    return LADE_OK;
}

void lade_resnet_destroy(lade_resnet *net) {
    if (!net) return;
    lade_free(net->params);
    lade_free(net->grads);
    lade_free(net->buffers);
    lade_free(net->arena);
    free(net);
}

int lade_resnet_num_classes(const lade_resnet *net) { return net->num_classes; }
int lade_resnet_feature_dim(const lade_resnet *net) { return net->feature_dim; }
size_t lade_resnet_num_params(const lade_resnet *net) { return net->num_params; }
size_t lade_resnet_num_buffers(const lade_resnet *net) { return net->num_buffers; }
float *lade_resnet_params(lade_resnet *net) { return net->params; }
float *lade_resnet_grads(lade_resnet *net) { return net->grads; }
float *lade_resnet_buffers(lade_resnet *net) { return net->buffers; }
int lade_resnet_num_tensors(const lade_resnet *net) { return net->num_tensors; }
const lade_tensor_info *lade_resnet_tensor(const lade_resnet *net, int index) {
    return index >= 0 && index < net->num_tensors ? &net->tensors[index] : NULL;
}
const float *lade_resnet_features(const lade_resnet *net) { return net->features; }

/* ---- initialisation ------------------------------------------------------------------ */
static void init_conv_bn(lade_resnet *net, const conv_bn *u, lade_rng *rng) {
    const lade_conv2d_geom *g = &u->geom;
    size_t fan_in = (size_t)g->cin * g->kh * g->kw, count = fan_in * g->cout;
    double std = sqrt(2.0 / (double)fan_in); /* Kaiming normal, fan_in, gain sqrt(2) */
    for (size_t i = 0; i < count; i++) net->params[u->weight + i] = (float)(std * lade_rng_normal(rng));
    for (int c = 0; c < g->cout; c++) {
        net->params[u->gamma + c] = 1.0f;
        net->params[u->beta + c] = 0.0f;
        net->buffers[u->running_mean + c] = 0.0f;
        net->buffers[u->running_var + c] = 1.0f;
    }
}

void lade_resnet_init(lade_resnet *net, lade_rng *rng) {
    for (int i = 0; i < net->num_units; i++) init_conv_bn(net, net->units[i], rng);
    /* PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias */
    double bound = 1.0 / sqrt((double)net->feature_dim);
    size_t nw = (size_t)net->num_classes * net->feature_dim;
    for (size_t i = 0; i < nw; i++) net->params[net->fc_weight + i] = (float)(bound * (2.0 * lade_rng_uniform(rng) - 1.0));
    if (net->causal_norm) {
        memset(net->buffers + net->fc_mean, 0, sizeof(float) * net->feature_dim);
    } else {
        for (int i = 0; i < net->num_classes; i++)
            net->params[net->fc_bias + i] = (float)(bound * (2.0 * lade_rng_uniform(rng) - 1.0));
    }
    net->stats_pending = 0;
}

void lade_resnet_zero_grad(lade_resnet *net) { memset(net->grads, 0, net->num_params * sizeof(float)); }

/* ---- activation arena ------------------------------------------------------------------- */
static int stage_size(int size, int stride) { return (size + stride - 1) / stride; }

/* Output height/width of the stem's convolution for h x w images. */
static void stem_out_size(const lade_resnet *net, int h, int w, int *oh, int *ow) {
    *oh = stage_size(h, net->stem.geom.stride_h);
    *ow = stage_size(w, net->stem.geom.stride_w);
}

/* Output height/width of block i for h x w images (i = -1: the input of the first block). */
static void block_out_size(const lade_resnet *net, int i, int h, int w, int *oh, int *ow) {
    stem_out_size(net, h, w, &h, &w);
    if (net->has_pool) lade_pool_out_size(&net->pool, h, w, &h, &w);
    for (int k = 0; k <= i && k < net->num_blocks; k++) {
        h = stage_size(h, net->blocks[k].stride);
        w = stage_size(w, net->blocks[k].stride);
    }
    *oh = h;
    *ow = w;
}

static lade_status reserve(lade_resnet *net, int n, int h, int w) {
    if (net->arena && n <= net->cap_n && h == net->cap_h && w == net->cap_w) return LADE_OK;
    int total_blocks = net->num_blocks + (net->has_cb_rb ? 2 : 0);
    int sh, sw, th, tw; /* the stem's output, the first block's input */
    stem_out_size(net, h, w, &sh, &sw);
    block_out_size(net, -1, h, w, &th, &tw);
    size_t stem = (size_t)net->stem_channels * n * sh * sw, trunk = (size_t)net->stem_channels * n * th * tw;
    size_t big = stem; /* the largest activation (or its gradient), found below */
    size_t sizes[10 + 6 * MAX_BLOCKS], count = 0, ws = 0;
    sizes[count++] = (size_t)3 * n * h * w;                       /* images (kept for the stem's backward) */
    sizes[count++] = stem;                                          /* stem_c */
    sizes[count++] = stem;                                          /* stem_a */
    sizes[count++] = net->has_pool ? trunk : 0;                     /* pooled */
    sizes[count++] = net->has_pool ? trunk : 0;                     /* pool_argmax (int32, as many as floats) */
    sizes[count++] = (size_t)n * net->feature_dim;                  /* features */
    sizes[count++] = (size_t)n * net->feature_dim;                  /* dfeatures */
    int h3, w3;
    block_out_size(net, net->num_blocks - 1, h, w, &h3, &w3);
    size_t head = (size_t)net->feature_dim * n * h3 * w3;
    sizes[count++] = net->has_cb_rb ? head : 0;                     /* head_maps: cb | rb */
    sizes[count++] = net->has_cb_rb ? head : 0;                     /* dhead_maps */
    sizes[count++] = net->causal_norm ? lade_causal_norm_workspace_size(n, net->feature_dim, net->num_classes) : 0;
    ws = lade_conv2d_workspace_size(&net->stem.geom, n, h, w);
    for (int i = 0; i < total_blocks; i++) {
        const block *b = &net->blocks[i];
        int ih, iw, oh, ow;
        if (i < net->num_blocks) {
            block_out_size(net, i - 1, h, w, &ih, &iw); /* i = 0: the stem's size */
        } else {
            ih = h3, iw = w3;
        }
        oh = stage_size(ih, b->stride);
        ow = stage_size(iw, b->stride);
        size_t act = (size_t)b->out_c * n * oh * ow;
        if (act > big) big = act;
        for (int k = 0; k < 4; k++) sizes[count++] = (k == 3 && i >= net->num_blocks) ? 0 : act;
        for (int k = 0; k < 2; k++) sizes[count++] = b->has_proj ? act : 0; /* pc, pb */
        size_t w1 = lade_conv2d_workspace_size(&b->unit1.geom, n, ih, iw);
        size_t w2 = lade_conv2d_workspace_size(&b->unit2.geom, n, oh, ow);
        size_t wp = b->has_proj ? lade_conv2d_workspace_size(&b->proj.geom, n, ih, iw) : 0;
        if (w1 > ws) ws = w1;
        if (w2 > ws) ws = w2;
        if (wp > ws) ws = wp;
    }
    size_t total = ws + 4 * big;
    for (size_t i = 0; i < count; i++) total += (sizes[i] + 15) & ~(size_t)15;
    float *arena = lade_alloc(total * sizeof(float));
    if (!arena) return lade_fail(LADE_ENOMEM, "could not allocate %zu MB of activations for batch %d",
                                 total * sizeof(float) >> 20, n);
    lade_free(net->arena);
    net->arena = arena;
    net->cap_n = n;
    net->cap_h = h;
    net->cap_w = w;
    float *p = arena;
    size_t k = 0;
#define TAKE(ptr) do { ptr = p; p += (sizes[k++] + 15) & ~(size_t)15; } while (0)
    TAKE(net->images);
    TAKE(net->stem_c);
    TAKE(net->stem_a);
    TAKE(net->pooled);
    float *argmax_floats;
    TAKE(argmax_floats);
    net->pool_argmax = (int32_t *)argmax_floats;
    TAKE(net->features);
    TAKE(net->dfeatures);
    TAKE(net->head_maps);
    TAKE(net->dhead_maps);
    TAKE(net->head_workspace);
    for (int i = 0; i < total_blocks; i++) {
        block *b = &net->blocks[i];
        TAKE(b->c1);
        TAKE(b->a1);
        TAKE(b->c2);
        TAKE(b->y); /* cb / rb outputs are placed in head_maps at forward time */
        TAKE(b->pc);
        TAKE(b->pb);
    }
#undef TAKE
    net->grad_in = p, p += big;
    net->grad_out = p, p += big;
    net->scratch_a = p, p += big;
    net->scratch_b = p, p += big;
    net->workspace = p;
    return LADE_OK;
}

/* ---- profiling -------------------------------------------------------------------------- */
static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

#define TIMED(net, kind, expr)                                  \
    do {                                                        \
        double t0_ = now_seconds();                             \
        lade_status st_ = (expr);                               \
        (net)->prof[kind] += now_seconds() - t0_;               \
        if (st_) return st_;                                    \
    } while (0)

/* A convolution of unit u: timed as its layer kind and as that one layer. */
#define TIMED_CONV(net, kind, u, expr)                          \
    do {                                                        \
        double t0_ = now_seconds();                             \
        lade_status st_ = (expr);                               \
        double dt_ = now_seconds() - t0_;                       \
        (net)->prof[kind] += dt_;                               \
        (u)->seconds[(kind) == LADE_PROF_CONV_BWD] += dt_;      \
        if (st_) return st_;                                    \
    } while (0)

const char *lade_prof_name(lade_prof_kind k) {
    static const char *names[LADE_PROF_COUNT] = {
        "conv forward", "conv backward", "batchnorm forward", "batchnorm backward",
        "relu/add/shortcut forward", "relu/add/shortcut backward", "pool+fc forward", "pool+fc backward",
    };
    return k < LADE_PROF_COUNT ? names[k] : "?";
}

void lade_resnet_profile(const lade_resnet *net, double seconds[LADE_PROF_COUNT]) {
    memcpy(seconds, net->prof, sizeof net->prof);
}

int lade_resnet_num_convs(const lade_resnet *net) { return net->num_units; }

lade_status lade_resnet_conv_profile(const lade_resnet *net, int index, lade_conv_profile *out) {
    if (index < 0 || index >= lade_resnet_num_convs(net))
        return lade_fail(LADE_ERANGE, "conv index %d outside [0, %d)", index, lade_resnet_num_convs(net));
    const conv_bn *u = net->units[index];
    const lade_conv2d_geom *g = &u->geom;
    int oh = 0, ow = 0;
    if (u->in_h > 0) lade_conv2d_out_size(g, u->in_h, u->in_w, &oh, &ow);
    out->name = net->tensors[u->weight_tensor].name;
    out->geom = *g;
    out->in_h = u->in_h;
    out->in_w = u->in_w;
    out->forward_seconds = u->seconds[0];
    out->backward_seconds = u->seconds[1];
    out->forward_flops = 2.0 * g->cout * g->cin * g->kh * g->kw * oh * ow;
    /* weight gradient, and the input gradient except for the stem (images need none) */
    out->backward_flops = out->forward_flops * (index == 0 ? 1 : 2);
    return LADE_OK;
}

void lade_resnet_profile_reset(lade_resnet *net) {
    memset(net->prof, 0, sizeof net->prof);
    for (int i = 0; i < net->num_units; i++) net->units[i]->seconds[0] = net->units[i]->seconds[1] = 0.0;
}

/* ---- forward ------------------------------------------------------------------------------ */
static lade_status relu_inplace(lade_maps m) {
    lade_relu_forward(m.data, m.data, (size_t)m.n * m.c * m.h * m.w);
    return LADE_OK;
}

/* out = bn(in) (+ residual if residual.data), then ReLU if relu: one pass */
static lade_status bn_forward(lade_resnet *net, conv_bn *u, lade_maps out, lade_maps in, int train, lade_maps residual,
                              int relu) {
    float *g = net->params + u->gamma, *b = net->params + u->beta;
    if (train)
        return lade_bn_forward_train_ex(out, u->mean, u->invstd, in, g, b, BN_EPS, residual, relu,
                                        net->bn_sync.reduce ? &net->bn_sync : NULL, &u->count);
    return lade_bn_forward_eval_ex(out, in, g, b, net->buffers + u->running_mean, net->buffers + u->running_var, BN_EPS,
                                   residual, relu);
}

/* Eval mode, where the direct convolution applies: the batch norm folded
 * into the convolution (weights scaled, shift as bias) and the residual and
 * ReLU applied in its store, so out = relu(bn(conv(in)) + residual) is written
 * once and no convolution output is stored. */
static lade_status conv_bn_eval_fused(lade_resnet *net, conv_bn *u, lade_maps out, lade_maps in, lade_maps residual,
                                      int relu) {
    float scale[MAX_CHANNELS], shift[MAX_CHANNELS];
    lade_status st = lade_bn_eval_fold(scale, shift, net->params + u->gamma, net->params + u->beta,
                                       net->buffers + u->running_mean, net->buffers + u->running_var, BN_EPS,
                                       u->geom.cout);
    if (st) return st;
    lade_conv_direct_fused(out, in, net->params + u->weight, scale, shift, &u->geom, net->workspace, 0, residual.data,
                           relu);
    return LADE_OK;
}

/* out = relu?(bn(conv(in)) (+ residual)); conv_out holds conv(in) when training needs it */
static lade_status conv_bn_forward(lade_resnet *net, conv_bn *u, lade_maps conv_out, lade_maps out, lade_maps in,
                                   int train, lade_maps residual, int relu) {
    if (!train && lade_conv_direct_applies(&u->geom, out)) {
        TIMED_CONV(net, LADE_PROF_CONV_FWD, u, conv_bn_eval_fused(net, u, out, in, residual, relu));
        return LADE_OK;
    }
    TIMED_CONV(net, LADE_PROF_CONV_FWD, u,
               lade_conv2d_forward_precision(conv_out, in, net->params + u->weight, NULL, &u->geom, net->workspace,
                                             train ? net->precision : LADE_FLOAT32));
    TIMED(net, LADE_PROF_BN_FWD, bn_forward(net, u, out, conv_out, train, residual, relu));
    return LADE_OK;
}

static lade_status block_forward(lade_resnet *net, block *b, lade_maps x, float *y_data, int train) {
    int n = x.n, oh = stage_size(x.h, b->stride), ow = stage_size(x.w, b->stride);
    lade_maps c1 = lade_maps_cnhw(b->c1, n, b->out_c, oh, ow), a1 = lade_maps_cnhw(b->a1, n, b->out_c, oh, ow);
    lade_maps c2 = lade_maps_cnhw(b->c2, n, b->out_c, oh, ow), y = lade_maps_cnhw(y_data, n, b->out_c, oh, ow);
    b->unit1.in_h = x.h, b->unit1.in_w = x.w, b->unit2.in_h = oh, b->unit2.in_w = ow;
    lade_maps none = {0};
    lade_status st = conv_bn_forward(net, &b->unit1, c1, a1, x, train, none, 1);
    if (st) return st;
    if (b->has_proj) { /* option B: y = relu(bn2(c2) + bn(conv1x1(x))) */
        lade_maps pc = lade_maps_cnhw(b->pc, n, b->out_c, oh, ow), pb = lade_maps_cnhw(b->pb, n, b->out_c, oh, ow);
        b->proj.in_h = x.h, b->proj.in_w = x.w;
        st = conv_bn_forward(net, &b->proj, pc, pb, x, train, none, 0);
        if (!st) st = conv_bn_forward(net, &b->unit2, c2, y, a1, train, pb, 1);
        if (st) return st;
    } else if (b->stride == 1 && x.c == y.c) { /* identity shortcut: y = relu(bn(c2) + x) in one pass */
        st = conv_bn_forward(net, &b->unit2, c2, y, a1, train, x, 1);
        if (st) return st;
    } else { /* option A: the shortcut covers only the middle channels, at every other pixel */
        st = conv_bn_forward(net, &b->unit2, c2, y, a1, train, none, 0);
        if (st) return st;
        TIMED(net, LADE_PROF_ELTWISE_FWD, lade_shortcut_a_accumulate(y, x, b->stride));
        TIMED(net, LADE_PROF_ELTWISE_FWD, relu_inplace(y));
    }
    return LADE_OK;
}

/* The batch mean of the features of a training forward, over all replicas when there is a reducer. */
static lade_status take_feature_batch_mean(lade_resnet *net, int n) {
    const int d = net->feature_dim;
    double *sums = net->bn_sync_buf;
    for (int j = 0; j < d; j++) sums[j] = 0.0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) sums[j] += net->features[(size_t)i * d + j];
    sums[d] = n;
    if (net->bn_sync.reduce) {
        lade_status st = net->bn_sync.reduce(sums, (size_t)d + 1, net->bn_sync.ctx);
        if (st) {
            char detail[400];
            snprintf(detail, sizeof detail, "%s", lade_error_detail()[0] ? lade_error_detail() : lade_status_str(st));
            return lade_fail(st, "causal norm feature mean: the statistics reducer failed: %s", detail);
        }
        if (!(sums[d] >= 1)) return lade_fail(LADE_ESTATE, "the reducer summed the image counts to %g", sums[d]);
    }
    for (int j = 0; j < d; j++) net->feature_batch_mean[j] = (float)(sums[j] / sums[d]);
    return LADE_OK;
}

lade_status lade_resnet_commit_running_stats(lade_resnet *net) {
    if (!net->stats_pending) return lade_fail(LADE_ESTATE, "no training forward with deferred statistics to commit");
    for (int i = 0; i < net->num_units; i++) {
        const conv_bn *u = net->units[i];
        lade_batchnorm2d_update_running(net->buffers + u->running_mean, net->buffers + u->running_var, u->mean,
                                        u->invstd, u->geom.cout, u->count, BN_MOMENTUM, BN_EPS);
    }
    if (net->causal_norm) {
        float *m = net->buffers + net->fc_mean;
        for (int j = 0; j < net->feature_dim; j++) m[j] = net->cn.mean_momentum * m[j] + net->feature_batch_mean[j];
    }
    net->stats_pending = 0;
    return LADE_OK;
}

lade_status lade_resnet_set_precision(lade_resnet *net, lade_precision precision) {
    if (precision != LADE_FLOAT32 && precision != LADE_BF16)
        return lade_fail(LADE_EINVAL, "resnet precision: expected LADE_FLOAT32 (0) or LADE_BF16 (1), got %d",
                         (int)precision);
    if (precision == LADE_BF16) {
        lade_status st = lade_bf16_check("resnet precision");
        if (st) return st;
    }
    net->precision = precision;
    return LADE_OK;
}

lade_precision lade_resnet_get_precision(const lade_resnet *net) { return net->precision; }

void lade_resnet_set_bn_reducer(lade_resnet *net, lade_reduce_fn reduce, void *ctx) {
    net->bn_sync = (lade_bn_sync){reduce, reduce ? ctx : NULL, net->bn_sync_buf};
    net->last_train = 0; /* a backward must follow a forward made with the same reducer */
}

lade_status lade_resnet_forward(lade_resnet *net, const float *images, int n, int h, int w, lade_mode mode,
                                int defer_running_stats, float *logits) {
    if (n < 1 || h < 1 || w < 1)
        return lade_fail(LADE_EINVAL, "images must be (n >= 1, 3, h >= 1, w >= 1), got (%d, 3, %d, %d)", n, h, w);
    int h_last, w_last;
    block_out_size(net, net->num_blocks - 1, h, w, &h_last, &w_last);
    if (mode == LADE_TRAIN && (int64_t)n * h_last * w_last < 2)
        return lade_fail(LADE_EINVAL, "training needs more than one value per channel in the last batch norm; "
                         "got a batch of %d images of %dx%d", n, h, w);
    lade_status st = reserve(net, n, h, w);
    if (st) return st;
    const int train = mode == LADE_TRAIN;
    net->stats_pending = 0;
    net->last_train = 0;
    memcpy(net->images, images, sizeof(float) * 3 * n * h * w);
    lade_maps img = lade_maps_nchw(net->images, n, 3, h, w);
    int sh, sw, th, tw;
    stem_out_size(net, h, w, &sh, &sw);
    block_out_size(net, -1, h, w, &th, &tw);
    const int c0 = net->stem_channels;
    lade_maps sc = lade_maps_cnhw(net->stem_c, n, c0, sh, sw), sa = lade_maps_cnhw(net->stem_a, n, c0, sh, sw);
    net->stem.in_h = h, net->stem.in_w = w;
    lade_maps none = {0};
    st = conv_bn_forward(net, &net->stem, sc, sa, img, train, none, 1);
    if (st) return st;
    lade_maps x = sa;
    if (net->has_pool) {
        x = lade_maps_cnhw(net->pooled, n, c0, th, tw);
        TIMED(net, LADE_PROF_ELTWISE_FWD, lade_maxpool_forward(x, net->pool_argmax, sa, &net->pool));
    }
    for (int i = 0; i < net->num_blocks; i++) {
        block *b = &net->blocks[i];
        st = block_forward(net, b, x, b->y, train);
        if (st) return st;
        x = lade_maps_cnhw(b->y, n, b->out_c, stage_size(x.h, b->stride), stage_size(x.w, b->stride));
    }
    lade_maps head = x;
    if (net->has_cb_rb) {
        size_t half = (size_t)64 * n * x.h * x.w;
        st = block_forward(net, &net->blocks[net->num_blocks], x, net->head_maps, train);
        if (!st) st = block_forward(net, &net->blocks[net->num_blocks + 1], x, net->head_maps + half, train);
        if (st) return st;
        head = lade_maps_cnhw(net->head_maps, n, 128, x.h, x.w);
    }
    TIMED(net, LADE_PROF_HEAD_FWD, lade_avgpool_forward(net->features, head));
    if (net->causal_norm) {
        TIMED(net, LADE_PROF_HEAD_FWD, lade_causal_norm_forward(logits, net->features, net->params + net->fc_weight,
                                                                train ? NULL : net->buffers + net->fc_mean, &net->cn,
                                                                n, net->feature_dim, net->num_classes,
                                                                net->head_workspace));
        if (train) TIMED(net, LADE_PROF_HEAD_FWD, take_feature_batch_mean(net, n));
    } else {
        TIMED(net, LADE_PROF_HEAD_FWD, lade_linear_forward(logits, net->features, net->params + net->fc_weight,
                                                           net->params + net->fc_bias, n, net->feature_dim,
                                                           net->num_classes));
    }
    net->last_n = n;
    net->last_h = h;
    net->last_w = w;
    net->last_train = train;
    if (train) {
        net->stats_pending = 1;
        if (!defer_running_stats) return lade_resnet_commit_running_stats(net);
    }
    return LADE_OK;
}

/* ---- backward ---------------------------------------------------------------------------- */
/* din = the gradient through a batch norm, and through the ReLU after it when
 * relu_out.data is set (masked in the same pass); pass_on.data, when set, gets
 * that masked gradient too (added when pass_accumulate) */
static lade_status bn_backward_pass_on(lade_resnet *net, const conv_bn *u, lade_maps din, lade_maps dout,
                                       lade_maps relu_out, lade_maps pass_on, int pass_accumulate, lade_maps in) {
    return lade_bn_backward_ex(din, net->grads + u->gamma, net->grads + u->beta, dout, relu_out, pass_on,
                               pass_accumulate, in, net->params + u->gamma, u->mean, u->invstd, 0,
                               net->bn_sync.reduce ? &net->bn_sync : NULL, u->count);
}

static lade_status bn_backward_set(lade_resnet *net, const conv_bn *u, lade_maps din, lade_maps dout, lade_maps relu_out,
                                   lade_maps in) {
    lade_maps none = {0};
    return bn_backward_pass_on(net, u, din, dout, relu_out, none, 0, in);
}

static lade_status relu_backward_inplace_set(lade_maps dst, lade_maps dout, const float *out) {
    lade_relu_backward_set(dst.data, dout.data, out, (size_t)dst.n * dst.c * dst.h * dst.w);
    return LADE_OK;
}

static lade_status zero_maps(lade_maps m) {
    memset(m.data, 0, sizeof(float) * m.n * m.c * m.h * m.w);
    return LADE_OK;
}

/* dy: gradient w.r.t. the block output; dx: the gradient w.r.t. its input x,
 * ACCUMULATED into dx, or written over whatever dx holds when dx_fresh. */
static lade_status block_backward(lade_resnet *net, block *b, lade_maps dx, lade_maps dy, lade_maps x, const float *y,
                                  int dx_fresh) {
    int n = x.n, oh = dy.h, ow = dy.w;
    lade_maps c1 = lade_maps_cnhw(b->c1, n, b->out_c, oh, ow), a1 = lade_maps_cnhw(b->a1, n, b->out_c, oh, ow);
    lade_maps c2 = lade_maps_cnhw(b->c2, n, b->out_c, oh, ow);
    lade_maps ta = lade_maps_cnhw(net->scratch_a, n, b->out_c, oh, ow), tb = lade_maps_cnhw(net->scratch_b, n, b->out_c, oh, ow);
    float *g = net->grads;
    const float *p = net->params;
    lade_maps out = lade_maps_cnhw((float *)y, n, b->out_c, oh, ow), none = {0};
    if (b->has_proj) { /* option B: the projection's BN masks dy itself, its conv starts or adds to dx */
        lade_maps pc = lade_maps_cnhw(b->pc, n, b->out_c, oh, ow);
        TIMED(net, LADE_PROF_BN_BWD, bn_backward_set(net, &b->proj, ta, dy, out, pc));
        TIMED_CONV(net, LADE_PROF_CONV_BWD, &b->proj, lade_conv2d_backward_ex(dx, g + b->proj.weight, NULL, ta, x,
                                                           p + b->proj.weight, &b->proj.geom, net->workspace, !dx_fresh,
                                                           net->precision));
        TIMED(net, LADE_PROF_BN_BWD, bn_backward_set(net, &b->unit2, tb, dy, out, c2));
    } else if (b->stride == 1 && x.c == dy.c) { /* identity shortcut: the BN's pass over relu'(dy) also gives dx (+)= it */
        TIMED(net, LADE_PROF_BN_BWD, bn_backward_pass_on(net, &b->unit2, tb, dy, out, dx, !dx_fresh, c2));
    } else { /* option A: the masked gradient feeds both the shortcut and the BN */
        if (dx_fresh) TIMED(net, LADE_PROF_ELTWISE_BWD, zero_maps(dx));
        TIMED(net, LADE_PROF_ELTWISE_BWD, relu_backward_inplace_set(ta, dy, y));
        TIMED(net, LADE_PROF_ELTWISE_BWD, lade_shortcut_a_backward(dx, ta, b->stride));
        TIMED(net, LADE_PROF_BN_BWD, bn_backward_set(net, &b->unit2, tb, ta, none, c2));
    }
    TIMED_CONV(net, LADE_PROF_CONV_BWD, &b->unit2, lade_conv2d_backward_ex(ta, g + b->unit2.weight, NULL, tb, a1,
                                                        p + b->unit2.weight, &b->unit2.geom, net->workspace, 0,
                                                        net->precision));
    TIMED(net, LADE_PROF_BN_BWD, bn_backward_set(net, &b->unit1, tb, ta, a1, c1));
    TIMED_CONV(net, LADE_PROF_CONV_BWD, &b->unit1,
               lade_conv2d_backward_precision(dx, g + b->unit1.weight, NULL, tb, x, p + b->unit1.weight,
                                              &b->unit1.geom, net->workspace, net->precision));
    return LADE_OK;
}

int lade_resnet_last_batch(const lade_resnet *net) { return net->last_n; }

lade_status lade_resnet_backward(lade_resnet *net, const float *dlogits, int batch) {
    if (!net->last_train) return lade_fail(LADE_ESTATE, "backward needs a training-mode forward first");
    if (batch != net->last_n)
        return lade_fail(LADE_EINVAL, "dlogits has %d rows but the last forward had a batch of %d", batch, net->last_n);
    const int n = net->last_n, h = net->last_h, w = net->last_w;
    int h3, w3;
    block_out_size(net, net->num_blocks - 1, h, w, &h3, &w3);
    lade_status st;
    memset(net->dfeatures, 0, sizeof(float) * n * net->feature_dim);
    if (net->causal_norm)
        TIMED(net, LADE_PROF_HEAD_BWD, lade_causal_norm_backward(net->dfeatures, net->grads + net->fc_weight, dlogits,
                                                                 net->features, net->params + net->fc_weight, &net->cn,
                                                                 n, net->feature_dim, net->num_classes,
                                                                 net->head_workspace));
    else
        TIMED(net, LADE_PROF_HEAD_BWD, lade_linear_backward(net->dfeatures, net->grads + net->fc_weight,
                                                            net->grads + net->fc_bias, dlogits, net->features,
                                                            net->params + net->fc_weight, n, net->feature_dim,
                                                            net->num_classes));
    /* dcur: gradient w.r.t. the output of the current block (starting with layer3's last) */
    float *dcur = net->grad_in, *dnext = net->grad_out;
    const block *last = &net->blocks[net->num_blocks - 1];
    lade_maps x3 = lade_maps_cnhw(last->y, n, last->out_c, h3, w3);
    lade_maps d3 = lade_maps_cnhw(dcur, n, last->out_c, h3, w3);
    zero_maps(d3);
    if (net->has_cb_rb) {
        lade_maps dhead = lade_maps_cnhw(net->dhead_maps, n, 128, h3, w3);
        zero_maps(dhead);
        TIMED(net, LADE_PROF_HEAD_BWD, lade_avgpool_backward(dhead, net->dfeatures));
        size_t half = (size_t)64 * n * h3 * w3;
        for (int k = 0; k < 2; k++) {
            block *b = &net->blocks[net->num_blocks + k];
            lade_maps dy = lade_maps_cnhw(net->dhead_maps + k * half, n, 64, h3, w3);
            st = block_backward(net, b, d3, dy, x3, net->head_maps + k * half, 0);
            if (st) return st;
        }
    } else {
        TIMED(net, LADE_PROF_HEAD_BWD, lade_avgpool_backward(d3, net->dfeatures));
    }
    for (int i = net->num_blocks - 1; i >= 0; i--) {
        block *b = &net->blocks[i];
        int oh, ow, ih, iw;
        block_out_size(net, i, h, w, &oh, &ow);
        block_out_size(net, i - 1, h, w, &ih, &iw);
        lade_maps x = lade_maps_cnhw(i > 0 ? net->blocks[i - 1].y : net->has_pool ? net->pooled : net->stem_a, n,
                                     b->in_c, ih, iw);
        lade_maps dy = lade_maps_cnhw(dcur, n, b->out_c, oh, ow), dx = lade_maps_cnhw(dnext, n, b->in_c, ih, iw);
        st = block_backward(net, b, dx, dy, x, b->y, 1);
        if (st) return st;
        float *t = dcur;
        dcur = dnext;
        dnext = t;
    }
    /* stem: max pool, relu, bn, conv (no gradient for the images) */
    const int c0 = net->stem_channels;
    int sh, sw;
    stem_out_size(net, h, w, &sh, &sw);
    lade_maps ds = lade_maps_cnhw(dcur, n, c0, sh, sw);
    if (net->has_pool) {
        int th, tw;
        block_out_size(net, -1, h, w, &th, &tw);
        ds = lade_maps_cnhw(dnext, n, c0, sh, sw);
        zero_maps(ds);
        TIMED(net, LADE_PROF_ELTWISE_BWD, lade_maxpool_backward(ds, lade_maps_cnhw(dcur, n, c0, th, tw), net->pool_argmax));
    }
    lade_maps sc = lade_maps_cnhw(net->stem_c, n, c0, sh, sw), ta = lade_maps_cnhw(net->scratch_a, n, c0, sh, sw);
    lade_maps none = {0};
    lade_maps sa = lade_maps_cnhw(net->stem_a, n, c0, sh, sw);
    TIMED(net, LADE_PROF_BN_BWD, bn_backward_set(net, &net->stem, ta, ds, sa, sc));
    TIMED_CONV(net, LADE_PROF_CONV_BWD, &net->stem,
               lade_conv2d_backward_precision(none, net->grads + net->stem.weight, NULL, ta,
                                              lade_maps_nchw(net->images, n, 3, h, w), net->params + net->stem.weight,
                                              &net->stem.geom, net->workspace, net->precision));
    return LADE_OK;
}
