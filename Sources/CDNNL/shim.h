#include <oneapi/dnnl/dnnl.h>
int omp_get_max_threads(void);
void omp_set_num_threads(int);
