/* lade.h - the C core of lade: long-tailed recognition and label shift.
 *
 * Plain C11 over flat float arrays; nothing here knows about Python.
 *
 *   lade_base.h    status codes, error details, RNG, threads
 *   lade_nn.h      layers (forward + backward), ResNet-32 models, SGD, schedules
 *   lade_ltmath.h  long-tail losses, post-hoc adjustment, priors, samplers,
 *                  metrics, target-prior estimation
 *   lade_data.h    CIFAR and list-file readers, JPEG decoding, augmentation,
 *                  the threaded batch loader
 *
 * A training step, in C:
 *
 *     lade_rng rng; lade_rng_seed(&rng, 0, 0);
 *     lade_resnet *net;
 *     lade_resnet_create(&net, LADE_RESNET32_LADE, 100);
 *     lade_resnet_init(net, &rng);
 *     lade_resnet_zero_grad(net);
 *     lade_resnet_forward(net, images, batch, 32, 32, LADE_TRAIN, logits);
 *     memset(dlogits, 0, ...);
 *     lade_softmax_ce(&loss, dlogits, 1.0f, logits, labels, batch, 100);
 *     lade_resnet_backward(net, dlogits, batch);
 *     lade_sgd_step(lade_resnet_params(net), lade_resnet_grads(net), velocity,
 *                   lade_resnet_num_params(net), &sgd, lr);
 *
 * Every function returns LADE_OK or a status with lade_error_detail() set.
 */
#ifndef LADE_H
#define LADE_H
#include "lade_base.h"
#include "lade_nn.h"
#include "lade_ltmath.h"
#include "lade_data.h"
#endif
