/* The rotation's sign vectors, for callers that rotate by other means (llama.cpp builds its
 * KV-cache rotation as a matrix and multiplies it in the graph). */
#include "tq_internal.h"

const float *tq_rotation_signs(int which)
{
    return which == 1 ? tq_sign1 : which == 2 ? tq_sign2 : NULL;
}
