/* blas.h - the one place that names the BLAS. Internal to the core. */
#ifndef LADE_BLAS_H
#define LADE_BLAS_H
#include <cblas.h>
/* OpenBLAS extension: sets the number of threads of its own pool. */
void openblas_set_num_threads(int num_threads);
#endif
