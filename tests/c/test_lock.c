#include "harness.h"
int main(void){static const pgs_test_t t[]={{NULL,NULL}};return pgs_test_run(t);}
