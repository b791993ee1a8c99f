/* lade_data.h - CIFAR and list-file readers, JPEG decoding, augmentation and
 * the threaded batch loader. */
#ifndef LADE_DATA_H
#define LADE_DATA_H
#include "lade_base.h"
#endif
