/* Compiles the header on its own (checked as C99, C11 and C++17 with -Wall -Wextra
 * -Werror -pedantic by CMake). */
#include "cellshm.h"

int header_only_check(void);
int header_only_check(void) { return (int)(cellshm_method_id("x") & 0u); }
