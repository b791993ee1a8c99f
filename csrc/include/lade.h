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
 * Training a ResNet-32 from C alone (the loader, the model, a loss and SGD, step by step, in
 * the order lade.train_step uses) is csrc/tests/test_example_train.c, a test that compiles and
 * runs with `make -C csrc test`.
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
