/* test_example_train.c - the C core used from C alone, as lade.h's overview points to: a small
 * CIFAR-style data set in memory, the batch loader with the CIFAR training augmentation, a
 * ResNet-32, the LADE loss (LADE-CE + alpha * LADER) and SGD, for a few steps. The training step is the one of
 * lade.train_step: forward with the BN statistics update deferred, loss, backward, SGD, and only
 * then the BN statistics, so a refused step changes nothing. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lade.h"

enum { CLASSES = 10, IMAGES = 20, SIDE = 16, BATCH = 20, EPOCHS = 12 };

TEST(example_train_a_resnet32_from_c) {
    lade_set_num_threads(2);
    /* the data: 20 uint8 images (n, 3, h, w) whose brightness says the class */
    static uint8_t pixels[IMAGES * 3 * SIDE * SIDE];
    int64_t labels[IMAGES];
    lade_rng rng;
    lade_rng_seed(&rng, 7, 0);
    for (int i = 0; i < IMAGES; i++) {
        labels[i] = i % CLASSES;
        for (int k = 0; k < 3 * SIDE * SIDE; k++)
            pixels[(size_t)i * 3 * SIDE * SIDE + k] =
                (uint8_t)(labels[i] * 20 + lade_rng_below(&rng, 60));
    }

    /* the loader: pad by 1 and crop, flip, normalise, one batch of all 20 per epoch (shuffled), two worker threads */
    lade_loader_config cfg = {0};
    cfg.images = pixels;
    cfg.labels = labels;
    cfg.num_images = IMAGES;
    cfg.image_height = cfg.image_width = SIDE;
    lade_transform_cifar_train(&cfg.transform);
    cfg.transform.pad = 1;
    cfg.transform.out_h = cfg.transform.out_w = SIDE;
    cfg.batch_size = BATCH;
    cfg.drop_last = 1;
    cfg.num_workers = 2;
    cfg.prefetch = 2;
    cfg.seed = 1;
    lade_loader *loader = NULL;
    CHECK_OK(lade_loader_create(&loader, &cfg));

    /* the model and the optimiser state */
    lade_resnet *net = NULL;
    CHECK_OK(lade_resnet_create(&net, LADE_RESNET32_LADE, LADE_STEM_3X3, CLASSES, NULL));
    if (!loader || !net) {
        lade_loader_destroy(loader);
        lade_resnet_destroy(net);
        return;
    }
    lade_rng_seed(&rng, 0, 0);
    lade_resnet_init(net, &rng);
    size_t num_params = lade_resnet_num_params(net);
    float *velocity = calloc(num_params, sizeof(float));
    lade_sgd_config sgd = {.momentum = 0.9f, .dampening = 0.0f, .weight_decay = 5e-4f, .nesterov = 0};
    static float images[BATCH * 3 * SIDE * SIDE];
    int64_t batch_labels[BATCH];
    float logits[BATCH * CLASSES], dlogits[BATCH * CLASSES];
    /* the training prior of the LADE loss, from the labels' counts */
    int64_t counts[CLASSES];
    float prior[CLASSES];
    CHECK_OK(lade_class_counts(counts, labels, IMAGES, CLASSES));
    CHECK_OK(lade_prior_from_counts(prior, counts, CLASSES, 0.0));

    double first_epoch = 0, last_epoch = 0;
    int steps = 0;
    for (int epoch = 0; epoch < EPOCHS; epoch++) {
        CHECK_OK(lade_loader_begin_epoch(loader, epoch, NULL, 0)); /* NULL: a seeded shuffle */
        double epoch_loss = 0;
        for (;;) {
            lade_batch_info info;
            CHECK_OK(lade_loader_next(loader, images, batch_labels, -1, &info));
            if (info.end_of_epoch) break;
            int n = (int)info.count;
            double loss;
            /* one training step */
            CHECK_OK(lade_resnet_forward(net, images, n, SIDE, SIDE, LADE_TRAIN, 1, logits));
            memset(dlogits, 0, sizeof dlogits); /* losses add into the gradient */
            CHECK_OK(lade_lade_loss(&loss, NULL, NULL, dlogits, 1.0f, logits, batch_labels, n, CLASSES, prior, 0.1,
                                    0.01f, LADE_LADER_OFFICIAL));
            lade_resnet_zero_grad(net);
            CHECK_OK(lade_resnet_backward(net, dlogits, n));
            CHECK_OK(lade_sgd_step(lade_resnet_params(net), lade_resnet_grads(net), velocity, NULL, num_params,
                                   &sgd, 0.02f, steps == 0));
            CHECK_OK(lade_resnet_commit_running_stats(net));
            epoch_loss += loss / (IMAGES / BATCH);
            steps++;
        }
        if (epoch == 0) first_epoch = epoch_loss;
        last_epoch = epoch_loss;
    }
    CHECK(steps == EPOCHS * IMAGES / BATCH);
    CHECK(first_epoch > 1.5);              /* about ln 10 = 2.3 at the start */
    CHECK(last_epoch < 0.6 * first_epoch); /* and clearly learning */
    if (!(last_epoch < 0.6 * first_epoch))
        fprintf(stderr, "  loss per epoch: first %.4f, last %.4f\n", first_epoch, last_epoch);

    free(velocity);
    lade_resnet_destroy(net);
    lade_loader_destroy(loader);
}
