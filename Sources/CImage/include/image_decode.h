#ifndef DISTILL_IMAGE_DECODE_H
#define DISTILL_IMAGE_DECODE_H
#include <stddef.h>

/// Decodes a PNG or JPEG file (chosen by its magic bytes) to 8-bit RGB, row-major, 3 bytes per
/// pixel. Returns NULL and writes a message to `error` when the file cannot be decoded or is larger
/// than `max_pixels`. Free the result with distill_free_image.
unsigned char *distill_decode_image(const char *path, size_t max_pixels, int *width, int *height,
                                    char *error, size_t error_size);
void distill_free_image(unsigned char *pixels);

#endif
